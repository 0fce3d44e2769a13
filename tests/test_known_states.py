"""Known states (semi-supervised): the posterior clamped where a state is given, against brute force over paths;
the guide's draws held there; a CSV column of known states through training and decoding (the states carry
the classes' names)."""

import itertools
import math

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.model.known import with_known
from tests.helpers import run_cli
from tests.test_decode import FAST, csv_overrides, read_rows, write_csv
from tests.test_missing import rewrite_csv, train_then_decode

K, D, T = 3, 2, 4
CODES = torch.tensor([[-1, 2, -1, -1], [0, -1, -1, 1]])  # known: sequence 0 at step 1 is state 2, ...


def model_of(emission="gaussian", known=True):
    torch.manual_seed(0)
    return DSSM(ModelConfig(n_states=K, obs_dim=D, emission=emission, known_states=known))


def brute_force(log_init, log_trans, table, codes):
    """log p(X, known) and the marginals p(c_t | X, known) of one sequence, over all K^T paths consistent with
    ``codes`` (T,) (-1 = not known); table (T, K) the family's log p(x_t | c_t = k)."""
    pi, A, lik = log_init.exp().double(), log_trans.exp().double(), table.exp().double()
    total, marg = 0.0, torch.zeros(len(codes), K, dtype=torch.float64)
    for path in itertools.product(range(K), repeat=len(codes)):
        if any(c >= 0 and c != s for c, s in zip(codes.tolist(), path)):
            continue
        p = pi[path[0]] * lik[0, path[0]]
        for t in range(1, len(codes)):
            p = p * A[path[t - 1], path[t]] * lik[t, path[t]]
        total += float(p)
        for t, s in enumerate(path):
            marg[t, s] += p
    return math.log(total), marg / total


def test_the_clamped_posterior_and_log_px_equal_brute_force_over_consistent_paths():
    model = model_of()
    x = torch.randn(2, T, D, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        log_init, log_trans, table = model.exact_hmm(with_known(x, CODES))
        free = model.emitter.table(x)
        log_px = hmm.log_likelihood(log_init, log_trans, table)
        marginals = hmm.posterior_marginals(log_init, log_trans, table)
        path = hmm.viterbi(log_init, log_trans, table)[0]
    for b in range(2):
        expected_log_px, expected_marg = brute_force(log_init, log_trans, free[b], CODES[b])
        assert float(log_px[b]) == pytest.approx(expected_log_px, abs=1e-4)
        assert torch.allclose(marginals[b].double(), expected_marg, atol=1e-5)
        known = CODES[b] >= 0
        assert torch.equal(path[b][known], CODES[b][known])
    # without known states the same observations give the unclamped posterior
    unclamped = hmm.posterior_marginals(log_init, log_trans, free)
    assert not torch.allclose(unclamped, marginals, atol=1e-3)


@pytest.mark.parametrize("emission", ["gaussian", "autoregressive"])  # with and without the model's evidence
def test_the_guide_draws_and_greedy_decode_stay_on_the_known_states(emission):
    pyro.clear_param_store()
    model = model_of(emission)
    obs = with_known(torch.randn(2, T, D, generator=torch.Generator().manual_seed(2)), CODES)
    with torch.no_grad():
        trace = pyro.poutine.trace(model.guide).get_trace(obs, None, 0.3)
        drawn = trace.nodes["c"]["value"].argmax(-1)
        greedy = model.guide_logits(obs).argmax(-1)
    known = CODES >= 0
    assert torch.equal(drawn[known], CODES[known]) and torch.equal(greedy[known], CODES[known])
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, obs, None, 0.3)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def known_csv(tmp_path, share=0.3, seed=0, extra_class=False):
    """The decode tests' CSV with a ``known`` column: the true class on ``share`` of the rows, empty elsewhere."""
    path = tmp_path / "d.csv"
    write_csv(path)
    rows = read_rows(path)
    rng = np.random.default_rng(seed)
    for row in rows:
        row["known"] = row["activity"] if rng.random() < share else ""
    if extra_class:
        rows[0]["known"] = "dancing"
    rewrite_csv(path, rows)
    return path, rows


def test_a_csv_with_known_states_trains_and_decodes_with_the_class_names(tmp_path):
    path, rows = known_csv(tmp_path)
    log, decoded = train_then_decode(tmp_path, path, ["trainer.n_epochs=3", "data.known_states_column=known"])
    assert "with a known state" in log
    assert len(decoded) == len(rows)
    names = {r["viterbi_state"] for r in decoded}
    assert names <= {r["activity"] for r in rows}  # the classes' names, no state numbers
    by_key = {(r["unit"], r["seconds"]): r for r in rows}
    given = [r for r in decoded if by_key[(r["unit"], r["seconds"])]["known"]]
    assert given and all(r["viterbi_state"] == by_key[(r["unit"], r["seconds"])]["known"] for r in given)
    others = [r for r in decoded if not by_key[(r["unit"], r["seconds"])]["known"]]
    right = sum(r["viterbi_state"] == by_key[(r["unit"], r["seconds"])]["activity"] for r in others)
    assert right / len(others) > 0.9  # three well-separated states, named without Hungarian matching
    ordered, streamed = tmp_path / "ordered.csv", tmp_path / "streamed.csv"  # a stream comes in time order
    rewrite_csv(ordered, sorted(rows, key=lambda r: (r["unit"], float(r["seconds"]))))
    proc = run_cli("pyro_dssm.decode", [f"checkpoint={tmp_path / 'run'}", f"input={ordered}", f"output={streamed}",
                                        "follow=true", "idle=0.5"])  # streaming decode names the states too
    assert proc.returncode == 0, proc.stderr
    streamed_rows = read_rows(streamed)
    assert {r["filter_state"] for r in streamed_rows} <= {r["activity"] for r in rows}
    clamped = [r for r in streamed_rows if by_key[(r["unit"], r["seconds"])]["known"]]
    assert len(clamped) == len(given)  # the stream reads the known column: the filter is clamped there, exactly
    for r in clamped:
        p = [float(v) for key, v in r.items() if key.startswith("p_")]
        assert sorted(p) == [0.0, 0.0, 1.0] and r["filter_state"] == by_key[(r["unit"], r["seconds"])]["known"]

    (tmp_path / "bad").mkdir()
    bad_input, _ = known_csv(tmp_path / "bad", extra_class=True)
    proc = run_cli("pyro_dssm.decode", [f"checkpoint={tmp_path / 'run'}", f"input={bad_input}",
                                        f"output={tmp_path / 'o.csv'}"])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "'dancing'" in proc.stderr and "not a class of the training run" in proc.stderr
    proc = run_cli("pyro_dssm.decode", [f"checkpoint={tmp_path / 'run'}", f"input={bad_input}", "output=-",
                                        "follow=true", "idle=0.5"])  # streamed: the same one line, exit 2
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "line 2: the known state 'dancing' is not a class of the training run" in proc.stderr


def test_more_known_classes_than_states_is_a_one_line_error(tmp_path):
    path, _ = known_csv(tmp_path)
    proc = run_cli("pyro_dssm.train", [*csv_overrides(path), *FAST, "data.known_states_column=known",
                                       "data.n_states=2", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "has 3 classes" in proc.stderr and "data.n_states=2" in proc.stderr


def test_the_estimator_takes_known_states_and_names_its_states_by_them():
    from pyro_dssm import DSSM as Estimator

    rng = np.random.default_rng(0)
    means = {"rest": [0.0, 0.0], "walk": [4.0, 0.0], "run": [0.0, 4.0]}
    X, truth = [], []
    for _ in range(4):
        labels = np.repeat(rng.choice(list(means), 6), 10)
        X.append(np.array([means[z] for z in labels]) + 0.3 * rng.standard_normal((60, 2)))
        truth.append(labels)
    known = [np.where(rng.random(60) < 0.1, z, None) for z in truth]
    model = Estimator(n_states=3, n_epochs=2, guide_warmup_steps=5, random_state=0).fit(X, known_states=known)
    assert sorted(model.classes_) == ["rest", "run", "walk"]
    predicted = model.predict(X)
    assert np.mean(np.concatenate(predicted) == np.concatenate(truth)) > 0.95  # named, no matching
    clamped = model.predict(X[0], known_states=np.array(["run"] * 60, dtype=object))
    assert set(clamped) == {"run"}
    with pytest.raises(ValueError, match="'jump', not a class of the training run"):
        model.predict(X[0], known_states=np.array(["jump"] + [None] * 59, dtype=object))
    with pytest.raises(ValueError, match=r"known_states\[1\] has 5 values, sequence 1 has 60 steps"):
        Estimator(n_states=3).fit(X[:2], known_states=[known[0], known[1][:5]])
    # online: a chunk's known states clamp the filter there; the rest as the exact posterior of each prefix
    probs, carry = model.filter(X[0][:30], known_states=np.array([None] * 29 + ["run"], dtype=object))
    assert probs[-1, list(model.classes_).index("run")] == pytest.approx(1.0)
    more, _ = model.filter(X[0][30:], carry)
    codes = np.full(60, -1)
    codes[29] = list(model.classes_).index("run")
    whole = model.fitted_.predict_proba(X[0][:45], known=[codes[:45]])
    assert np.allclose(more[14], whole[44], atol=1e-5)


def test_filtering_clamped_at_known_states_equals_the_exact_posterior_of_each_prefix():
    from pyro_dssm.data.features import Preprocessing
    from pyro_dssm.fitted import FittedDSSM
    fitted = FittedDSSM(model_of(), {"preprocessing": Preprocessing(["raw"], np.zeros(D), np.ones(D),
                                                                    ["a", "b"]).state_dict()})
    x = np.random.default_rng(1).normal(size=(12, D)) * 2
    codes = np.array([-1, 2, -1, -1, -1, 0, -1, -1, 1, -1, -1, -1])
    carry, rows = None, []
    for a, b in [(0, 3), (3, 7), (7, 12)]:
        probs, carry = fitted.filter(x[a:b], carry, known=codes[a:b])
        rows.append(probs)
    rows = np.concatenate(rows)
    for t in range(1, 13):
        assert np.allclose(rows[t - 1], fitted.predict_proba(x[:t], known=[codes[:t]])[-1], atol=1e-5)
    with pytest.raises(ValueError, match="known has 2 codes for a chunk of 3 rows"):
        fitted.filter(x[:3], known=codes[:2])
    unknowing = FittedDSSM(model_of(known=False), fitted.payload)
    with pytest.raises(ValueError, match="trained without known states"):
        unknowing.filter(x[:3], known=codes[:3])
