"""Missing values (NaN, empty CSV cells): the exact HMM sums them out, against independent oracles.

Oracles: brute force over all K^T state paths with each step's density of its observed cells from
scipy (per channel for diagonal families and Poisson, the sub-vector's normal for full covariance);
the synthetic source's true HMM by hand; a real CLI run on a CSV with empty cells.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from pyro_dssm.data.features import moving_average
from pyro_dssm.data.readers import read_csv
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.data.arrays import check_sequences
from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM, ModelConfig
from tests.helpers import run_cli
from tests.test_decode import FAST, csv_overrides, read_rows, write_csv

K, D, T = 2, 3, 4


def model_of(emission, missing_input=False):
    torch.manual_seed(0)
    return DSSM(ModelConfig(n_states=K, obs_dim=D, emission=emission, missing_input=missing_input))


def holed(x, cells):
    """x with NaN at the (b, t, d) ``cells``."""
    x = x.clone()
    for cell in cells:
        x[cell] = float("nan")
    return x


HOLES = [(0, 0, 1), (0, 1, 0), (0, 1, 2), (0, 2, 0), (0, 2, 1), (0, 2, 2), (1, 3, 1)]  # (0, 2): a fully missing step


def observed_density(emitter, emission, x_t, k):
    """log p(x_t^obs | c_t = k) by scipy, from the family's per-state parameters (x_t (D,) with NaN)."""
    one_hot = torch.eye(K)[k]
    obs = ~np.isnan(x_t)
    if not obs.any():
        return 0.0
    if emission == "poisson":
        return float(stats.poisson.logpmf(x_t[obs], emitter(one_hot).detach().numpy()[obs]).sum())
    if emission == "gaussian":
        mean, scale = emitter(one_hot).detach().numpy(), np.full(D, emitter.noise_std)
    elif emission == "gaussian_scale":
        mean, scale = (v.detach().numpy() for v in emitter(one_hot))
    else:  # gaussian_full: the marginal of the observed sub-vector
        mean, tril = (v.detach().double().numpy() for v in emitter(one_hot))
        cov = tril @ tril.T
        return float(stats.multivariate_normal(mean[obs], cov[np.ix_(obs, obs)]).logpdf(x_t[obs]))
    return float(stats.norm.logpdf(x_t[obs], mean[obs], scale[obs]).sum())


def brute_force_log_px(log_init, log_trans, emitter, emission, x):
    """log p(x^obs) of one sequence x (T, D) by summing p(c_{1:T}, x^obs) over all K^T paths."""
    pi, A = log_init.exp().double().numpy(), log_trans.exp().double().numpy()
    dens = np.array([[observed_density(emitter, emission, x[t], k) for k in range(K)] for t in range(len(x))])
    total = 0.0
    for path in itertools.product(range(K), repeat=len(x)):
        p = pi[path[0]] * math.exp(dens[0, path[0]])
        for t in range(1, len(x)):
            p *= A[path[t - 1], path[t]] * math.exp(dens[t, path[t]])
        total += p
    return math.log(total)


@pytest.mark.parametrize("emission", ["gaussian", "gaussian_scale", "gaussian_full", "poisson"])
def test_marginalised_log_px_equals_brute_force_over_paths(emission):
    model = model_of(emission)
    gen = torch.Generator().manual_seed(1)
    x = torch.poisson(torch.full((2, T, D), 3.0), generator=gen) if emission == "poisson" else \
        torch.randn(2, T, D, generator=gen)
    x = holed(x, HOLES)
    with torch.no_grad():
        log_init, log_trans, table = model.exact_hmm(x)
        ours = hmm.log_likelihood(log_init, log_trans, table)
    assert torch.isfinite(table).all()
    assert torch.equal(table[0, 2], torch.zeros(K))  # a step with no observed cell contributes nothing
    for b in range(2):
        expected = brute_force_log_px(log_init, log_trans, model.emitter, emission, x[b].double().numpy())
        assert float(ours[b]) == pytest.approx(expected, abs=2e-4)


@pytest.mark.parametrize("emission", ["gaussian", "gaussian_full", "autoregressive", "autoregressive_full"])
def test_log_prob_at_one_hot_states_is_the_table_column_with_missing_cells(emission):
    model = model_of(emission)
    x = holed(torch.randn(2, T, D, generator=torch.Generator().manual_seed(2)), HOLES)
    with torch.no_grad():
        table = model.emitter.table(x)
        for k in range(K):
            one_hot = torch.nn.functional.one_hot(torch.full(x.shape[:2], k), K).float()
            assert torch.allclose(model.emitter.log_prob(x, one_hot), table[..., k], atol=1e-5)


def test_a_missing_past_reads_as_zero_in_the_autoregressive_context():
    model = model_of("autoregressive")
    x = torch.randn(1, T, D, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with_hole = model.emitter.table(holed(x, [(0, 1, 0)]))
        zeroed = x.clone()
        zeroed[0, 1, 0] = 0.0
        reference = model.emitter.table(zeroed)
    assert torch.allclose(with_hole[0, 2:], reference[0, 2:])  # step 2 reads x_1 with the hole as 0
    assert not torch.allclose(with_hole[0, 1], reference[0, 1])  # step 1 itself: its observed cells only


def test_the_svi_loss_and_its_gradients_are_finite_with_missing_cells():
    import pyro
    from pyro.infer import Trace_ELBO

    pyro.clear_param_store()
    model = model_of("gaussian", missing_input=True)
    x = holed(torch.randn(2, T, D, generator=torch.Generator().manual_seed(4)), HOLES)
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # the guide reads which cells are observed: [x with holes as 0, mask]
    inputs = model.guide_observations(x)
    assert inputs.shape == (2, T, 2 * D) and inputs[0, 2, D:].sum() == 0 and inputs[0, 0, D:].tolist() == [1, 0, 1]


def test_the_synthetic_oracle_sees_the_same_cells():
    data = make_synthetic(n_states=3, obs_dim=4, seq_len=20, n_train=4, n_val=3, seed=0, missing_fraction=0.3)
    complete = make_synthetic(n_states=3, obs_dim=4, seq_len=20, n_train=4, n_val=3, seed=0)
    x = data.val.x
    holes = torch.isnan(x)
    assert 0.2 < float(holes.float().mean()) < 0.4
    assert torch.equal(x[~holes], complete.val.x[~holes]) and torch.equal(data.val.states, complete.val.states)
    table = data.params.log_likelihoods(x)
    means, sigma = data.params.means.numpy(), data.params.noise_std
    for b, t, k in [(0, 0, 0), (1, 5, 2), (2, 19, 1)]:
        obs = ~holes[b, t].numpy()
        hand = stats.norm.logpdf(x[b, t].numpy()[obs], means[k][obs], sigma).sum()
        assert float(table[b, t, k]) == pytest.approx(hand, abs=1e-4)


def test_window_statistics_are_over_the_observed_cells():
    x = np.array([[1.0], [np.nan], [3.0], [np.nan], [np.nan], [np.nan], [7.0]])
    out = moving_average(x, 3)[:, 0]
    assert out[1] == pytest.approx(2.0) and out[2] == pytest.approx(3.0) and np.isnan(out[4])
    assert out[0] == pytest.approx(1.0)  # edge padded with the end value: (1 + 1 + nan) / 2


def test_all_missing_inputs_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"x\[1\] has no observed value"):
        check_sequences([np.ones((3, 2)), np.full((3, 2), np.nan)])
    with pytest.raises(ValueError, match="infinite|finite numbers"):
        check_sequences(np.array([[1.0, np.inf]]))
    check_sequences(np.array([[1.0, np.nan]]))  # one missing cell: fine


def rewrite_csv(path, rows):
    """Write ``rows`` (dicts, as :func:`read_rows` gives them) back to ``path`` with their header."""
    header = list(rows[0].keys())
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        f.writelines(",".join(row[c] for c in header) + "\n" for row in rows)


def train_then_decode(tmp_path, path, overrides):
    """Train on the CSV ``path`` (the decode tests' columns) by the CLI, then decode it; returns the run's
    stdout + stderr and the decoded rows."""
    run = tmp_path / "run"
    proc = run_cli("pyro_dssm.train", [*csv_overrides(path), *FAST, "trainer.init=em", *overrides,
                                       f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "states.csv"
    decoded = run_cli("pyro_dssm.decode", [f"checkpoint={run}", f"input={path}", f"output={out}"])
    assert decoded.returncode == 0, decoded.stderr
    return proc.stdout + proc.stderr, read_rows(out)


def holed_csv(tmp_path, fraction=0.1, seed=0):
    """The decode tests' CSV with ``fraction`` of its feature cells emptied at random."""
    path = tmp_path / "d.csv"
    write_csv(path)
    rows = read_rows(path)
    rng = np.random.default_rng(seed)
    for row in rows:
        for column in ("acc_x", "acc_y"):
            if rng.random() < fraction:
                row[column] = ""
    rewrite_csv(path, rows)
    return path, len(rows)


def test_a_csv_with_empty_cells_trains_and_decode_writes_every_row(tmp_path):
    path, n_rows = holed_csv(tmp_path)
    assert np.isnan(np.concatenate(read_csv(path, "unit", "seconds").x)).any()
    log, decoded = train_then_decode(tmp_path, path, [])
    assert "cells missing" in log
    assert len(decoded) == n_rows
    probs = np.array([[float(r[f"p_{k}"]) for k in range(3)] for r in decoded])
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1.0, atol=1e-4)
    refused = run_cli("pyro_dssm.train", [*csv_overrides(path), *FAST, "data.missing=error",
                                          f"hydra.run.dir={tmp_path / 'refused'}"])
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "data.missing=marginalise" in refused.stderr


def test_kmeans_with_half_the_cells_missing_finds_the_centres():
    """With D=10 and half of the cells missing almost no point is complete: k-means over each point's observed
    cells still finds the true centres (within 0.35 at unit noise), where k-means on the complete points cannot."""
    from pyro_dssm.inference.em import kmeans

    gen = torch.Generator().manual_seed(0)
    means = 3 * torch.randn(5, 10, generator=gen)
    x = means[torch.randint(5, (2000,), generator=gen)] + torch.randn(2000, 10, generator=gen)
    x[torch.rand(x.shape, generator=gen) < 0.5] = float("nan")
    assert int((~torch.isnan(x)).all(-1).sum()) < 5  # fewer complete points than clusters
    centres = kmeans(x, 5, torch.Generator().manual_seed(1))
    assert torch.isfinite(centres).all()
    assert float(torch.cdist(means, centres).min(-1).values.max()) < 0.35
