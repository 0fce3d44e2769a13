"""The Python API (pyro_dssm.fit / load / FittedDSSM) against brute force, the exact HMM code and the CLI."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

import pyro_dssm
from pyro_dssm.config import ModelConfig
from pyro_dssm.fitted import FittedDSSM
from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM

from .helpers import run_cli

K, D = 3, 2
MEANS = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
LENGTHS = [30, 1, 45, 22, 38, 27, 40]  # ragged, one of a single step
FAST = ["trainer.n_epochs=2", "trainer.batch_size=4", "trainer.init_restarts=1", "trainer.init_em_iters=5",
        "trainer.guide_warmup_steps=5", "trainer.figure_every=0", "trainer.device=cpu", "data.val_fraction=0.3"]


def make_sequences(seed=0, lengths=LENGTHS, offset=(10.0, -5.0), scale=(2.0, 0.5)):
    """Ragged 2-d sequences of three sticky, well-separated states, in units far from standardised."""
    rng = np.random.default_rng(seed)
    xs, zs = [], []
    for T in lengths:
        z = np.empty(T, dtype=np.int64)
        z[0] = rng.integers(K)
        for t in range(1, T):
            z[t] = z[t - 1] if rng.random() < 0.9 else rng.integers(K)
        xs.append((MEANS[z] + 0.4 * rng.standard_normal((T, D))) * scale + offset)
        zs.append(z)
    return xs, zs


@pytest.fixture(scope="module")
def fitted():
    xs, zs = make_sequences()
    return pyro_dssm.fit(xs, n_states=K, labels=zs, overrides=FAST), xs, zs


def model_inputs(model, x):
    """The standardisation by hand: (x - mean) / std with the stored training statistics."""
    return ((x - model.preprocessing.mean) / model.preprocessing.std).astype(np.float32)


def log_jacobian(model, T):
    """The standardisation's log |det dz/dx| over T steps: log p(x) = log p(z) + this, for raw features."""
    return -T * float(np.log(model.preprocessing.std).sum())


def brute_force(model, x):
    """log p(path, X) of all K^T paths, by enumeration in float64 from the model's HMM parameters."""
    log_init, log_trans, means = (t.detach().double().numpy() for t in model.model.hmm_parameters())
    sigma, u = model.model.config.noise_std, model_inputs(model, x).astype(np.float64)
    # log N(x_t; mu_k, sigma^2 I), written out
    ll = (-0.5 * ((u[:, None, :] - means[None]) ** 2).sum(-1) / sigma**2
          - u.shape[1] * (math.log(sigma) + 0.5 * math.log(2 * math.pi)))
    paths = np.array(list(itertools.product(range(model.n_states), repeat=len(x))))
    joint = log_init[paths[:, 0]] + ll[0, paths[:, 0]]
    for t in range(1, len(x)):
        joint = joint + log_trans[paths[:, t - 1], paths[:, t]] + ll[t, paths[:, t]]
    return paths, joint


def test_fit_returns_a_model_with_training_metrics(fitted):
    model, xs, zs = fitted
    assert model.n_states == K and model.feature_names == ["x0", "x1"]
    assert model.metrics["epochs"] == 2 and "val_loglik_per_step" in model.metrics
    # labels go through to the scores; these states are far apart, so a working fit finds them
    assert model.metrics["viterbi_accuracy"] > 0.95
    # the standardisation is fitted on the data (their units are offset and scaled)
    assert np.all(np.abs(model.preprocessing.mean - np.array([10.0, -5.0])) < 3)


@pytest.mark.parametrize("T", [1, 2, 5])
def test_exact_inference_matches_brute_force_over_all_paths(fitted, T):
    model, xs, _ = fitted
    x = xs[2][:T]
    paths, joint = brute_force(model, x)
    log_px = np.logaddexp.reduce(joint)  # of the standardised features z
    log_px_user = log_px + log_jacobian(model, T)  # of x in the user's units
    assert model.score(x) == pytest.approx(log_px_user, rel=1e-5, abs=1e-4)
    assert model.score(x, per_step=True) == pytest.approx(log_px_user / T, rel=1e-5, abs=1e-4)
    np.testing.assert_array_equal(model.predict(x), paths[joint.argmax()])
    post = np.exp(joint - log_px)
    marginals = np.stack([np.bincount(paths[:, t], weights=post, minlength=K) for t in range(T)])
    np.testing.assert_allclose(model.predict_proba(x), marginals, atol=1e-5)


def hand_set_model(log_trans, means, sigma):
    """A FittedDSSM whose networks give exactly this HMM: identity first layers, the rows as output weights."""
    K, D = means.shape
    net = DSSM(ModelConfig(n_states=K, obs_dim=D, transition_hidden=K, emitter_hidden=K, rnn_hidden=4,
                           noise_std=sigma))
    with torch.no_grad():
        for mlp, rows in ((net.transition.net, log_trans), (net.emitter.net, means)):
            mlp[0].weight.copy_(torch.eye(K))
            mlp[0].bias.zero_()
            mlp[2].weight.copy_(torch.as_tensor(rows, dtype=torch.float32).T)
            mlp[2].bias.zero_()
    return FittedDSSM(net, {})  # no preprocessing stored: the identity, as for synthetic data


@pytest.mark.parametrize("seed", range(4))
def test_exact_inference_on_overlapping_states_matches_brute_force(seed):
    """States close together, where the Viterbi path and the per-step argmax of the marginals differ."""
    rng = np.random.default_rng(seed)
    log_trans = np.log(rng.dirichlet(np.ones(K), size=K))
    model = hand_set_model(log_trans, rng.normal(size=(K, D)), sigma=1.0)
    np.testing.assert_allclose(model.model.hmm_parameters()[1].detach().numpy(), log_trans, atol=1e-5)
    x = rng.normal(size=(6, D))
    paths, joint = brute_force(model, x)
    log_px = np.logaddexp.reduce(joint)
    post = np.exp(joint - log_px)
    marginals = np.stack([np.bincount(paths[:, t], weights=post, minlength=K) for t in range(len(x))])
    np.testing.assert_array_equal(model.predict(x), paths[joint.argmax()])
    np.testing.assert_allclose(model.predict_proba(x), marginals, atol=1e-5)
    assert model.score(x) == pytest.approx(log_px, rel=1e-5)


def test_ragged_lists_match_the_hmm_module_sequence_by_sequence(fitted):
    model, xs, _ = fitted
    states, probs = model.predict(xs), model.predict_proba(xs)
    assert isinstance(states, list) and [len(s) for s in states] == LENGTHS
    log_init, log_trans, means = (t.detach() for t in model.model.hmm_parameters())
    total = 0.0
    for x, s, p in zip(xs, states, probs):
        ll = hmm.gaussian_log_likelihood(torch.from_numpy(model_inputs(model, x))[None], means,
                                         model.model.config.noise_std)
        np.testing.assert_array_equal(s, hmm.viterbi(log_init, log_trans, ll)[0][0].numpy())
        np.testing.assert_allclose(p, hmm.posterior_marginals(log_init, log_trans, ll)[0].numpy(), atol=1e-6)
        np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
        total += float(hmm.forward(log_init, log_trans, ll)[1]) + log_jacobian(model, len(x))
    assert model.score(xs) == pytest.approx(total, rel=1e-5)
    assert isinstance(model.predict(xs[0]), np.ndarray) and model.predict_proba(xs[0]).shape == (LENGTHS[0], K)


def test_bic_and_aic_by_hand(fitted):
    model, xs, _ = fitted
    p = K * (K - 1) + K * D  # 6 transition + 6 mean parameters
    assert model.n_parameters() == 12
    n = sum(LENGTHS)
    log_px = model.score(xs)
    assert model.bic(xs) == pytest.approx(-2 * log_px + 12 * math.log(n))
    assert model.aic(xs) == pytest.approx(-2 * log_px + 2 * 12)
    assert p == 12


def test_sample_draws_from_the_learned_hmm_in_the_users_units(fitted):
    model, _, _ = fitted
    states, x = model.sample(400, 50, seed=1)
    assert states.shape == (400, 50) and x.shape == (400, 50, D)
    log_init, log_trans, means = (t.detach().double().numpy() for t in model.model.hmm_parameters())
    # per state: mean in user units = mean_k * std + mean, spread sigma * std
    for k in range(K):
        got = x[states == k]
        np.testing.assert_allclose(got.mean(0), means[k] * model.preprocessing.std + model.preprocessing.mean,
                                   atol=0.05 * model.preprocessing.std.max() + 0.02)
        np.testing.assert_allclose(got.std(0), model.model.config.noise_std * model.preprocessing.std, rtol=0.1)
    counts = np.zeros((K, K))
    np.add.at(counts, (states[:, :-1].ravel(), states[:, 1:].ravel()), 1)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), np.exp(log_trans), atol=0.03)
    np.testing.assert_array_equal(model.sample(3, 4, seed=7)[0], model.sample(3, 4, seed=7)[0])


def test_save_load_round_trip_is_a_weights_only_checkpoint(fitted, tmp_path):
    model, xs, _ = fitted
    path = model.save(tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    assert payload["metrics"]["val_loglik_per_step"] == model.metrics["val_loglik_per_step"]
    again = pyro_dssm.load(path)
    assert again.n_states == K and again.metrics["epochs"] == 2
    for a, b in zip(again.predict(xs), model.predict(xs)):
        np.testing.assert_array_equal(a, b)
    assert again.score(xs) == model.score(xs)


def test_a_saved_model_decodes_with_the_cli(fitted, tmp_path):
    model, xs, _ = fitted
    model.save(tmp_path / "model.pt")
    np.savez(tmp_path / "new.npz", **{f"x_{i}": x for i, x in enumerate(xs[:3])})
    proc = run_cli("pyro_dssm.decode", [f"checkpoint={tmp_path / 'model.pt'}", f"input={tmp_path / 'new.npz'}",
                                        f"output={tmp_path / 'out.npz'}"])
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["viterbi_state"], np.concatenate(model.predict(xs[:3])))
    np.testing.assert_allclose(out["probs"], np.concatenate(model.predict_proba(xs[:3])), atol=1e-6)


def test_fit_is_the_cli_on_a_file_and_a_cli_run_loads_in_python(tmp_path):
    """One code path: fit on arrays == train data=npz on a file holding them (same metrics, same model)."""
    xs, zs = make_sequences(seed=3, lengths=[25, 30, 18, 33, 12])
    overrides = [*FAST, "data.features=[raw,diff]", "seed=4"]
    np.savez(tmp_path / "data.npz", **{f"x_{i}": x for i, x in enumerate(xs)}, **{f"z_{i}": z for i, z in enumerate(zs)})
    proc = run_cli("pyro_dssm.train", ["data=npz", f"data.path={tmp_path / 'data.npz'}", f"data.n_states={K}",
                                       f"hydra.run.dir={tmp_path / 'cli'}", *overrides])
    assert proc.returncode == 0, proc.stderr[-3000:]
    fitted = pyro_dssm.fit(xs, n_states=K, labels=zs, overrides=overrides, run_dir=tmp_path / "api")
    cli_metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    for key in ("val_loglik_per_step", "val_elbo_per_step", "viterbi_accuracy", "val_accuracy", "final_loss"):
        assert fitted.metrics[key] == cli_metrics[key], key
    assert (tmp_path / "api" / "checkpoints" / "best.pt").is_file() and fitted.run_dir == tmp_path / "api"
    loaded = pyro_dssm.load(tmp_path / "cli")  # a CLI run directory
    assert loaded.model.config.obs_dim == 2 * D  # raw and diff features
    assert loaded.metrics["val_loglik_per_step"] == cli_metrics["val_loglik_per_step"]
    proc = run_cli("pyro_dssm.decode", [f"checkpoint={tmp_path / 'cli'}", f"input={tmp_path / 'data.npz'}",
                                        f"output={tmp_path / 'out.npz'}"])
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["viterbi_state"], np.concatenate(loaded.predict(xs)))
    np.testing.assert_array_equal(out["viterbi_state"], np.concatenate(fitted.predict(xs)))
    np.testing.assert_allclose(out["probs"], np.concatenate(loaded.predict_proba(xs)), atol=1e-6)


@pytest.mark.parametrize("x, match", [
    ([], "x is an empty list"),
    (np.zeros(5), r"x must be a \(T, D\) array .* got shape \(5,\)"),
    (np.zeros((2, 5, 2)), r"got shape \(2, 5, 2\) \(give a list"),
    ([np.zeros((4, 2)), np.zeros((4, 3))], r"x\[1\] has D=3 columns; the model expects D=2 \(\['x0', 'x1'\]\)"),
    ([np.zeros((4, 2)), np.array([[0.0, 1.0], [np.inf, 0.0]])], r"x\[1\] holds inf at time step 1 \(column 0\)"),
    ([np.zeros((4, 2)), np.full((2, 2), np.nan)], r"x\[1\] has no observed value"),
    (np.zeros((0, 2)), r"T >= 1 .* got shape \(0, 2\)"),
    (np.array([["a", "b"]]), "must hold real numbers, got dtype <U1"),
])
def test_bad_inputs_are_value_errors_naming_them(fitted, x, match):
    model, _, _ = fitted
    for method in (model.predict, model.predict_proba, model.score, model.bic):
        with pytest.raises(ValueError, match=match):
            method(x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sequences=[]), "sequences is an empty list"),
    (dict(sequences=[np.ones((3, 2)), np.full((3, 2), np.inf)]), r"sequences\[1\] holds inf at time step 0"),
    (dict(n_states=1), "n_states must be an integer >= 2, got 1"),
    (dict(labels=[np.zeros(3, dtype=int)]), "labels must be a list of 2"),
    (dict(labels=[np.zeros(4, dtype=int), np.zeros(3, dtype=int)]), r"labels\[0\] must be \(3,\) integers"),
    (dict(overrides=["data.path=x.npz"]), r"fit sets .*data.path"),
    (dict(overrides=["trainer.nonsense=3"]), "trainer.nonsense"),
    (dict(overrides="trainer.n_epochs=1"), "overrides must be a list of strings"),
])
def test_fit_rejects_bad_arguments(tmp_path, kwargs, match):
    args = dict(sequences=[np.ones((3, 2)), np.zeros((3, 2))], n_states=2, run_dir=tmp_path / "run")
    with pytest.raises(ValueError, match=match):
        pyro_dssm.fit(**{**args, **kwargs})
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_load_rejects_a_directory_without_checkpoints(tmp_path):
    with pytest.raises(ValueError, match="is a directory without checkpoints/best.pt or checkpoints/last.pt"):
        pyro_dssm.load(tmp_path)
