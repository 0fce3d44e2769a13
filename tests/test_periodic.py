"""``data=periodic``: long regimes of noisy AR(2) oscillators, an exact HMM with a known oracle.

Oracles: torch.distributions Normals written here from the module docstring's equations, step by
step; enumeration of all K^T state paths; the stationary autocovariances of an AR(2) summed as its
MA(infinity) series; empirical moments of long sampled sequences; the CLI in a child process.
"""

import dataclasses
import itertools
import json
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import Normal

from pyro_dssm.config import PeriodicDataConfig
from pyro_dssm.data.periodic import PeriodicParams, make_periodic, make_periodic_params
from pyro_dssm.model import hmm
from pyro_dssm.train import load_data

from .helpers import CONFIGS, compose_config


def periodic_params(K=3, D=2, seed=0, **kwargs) -> PeriodicParams:
    """Float64 parameters of ``data=periodic`` (defaults of the config unless given)."""
    settings = dict(mean_duration=5.0, damping=0.9, min_period=4.0, max_period=20.0, amplitude_spread=3.0)
    p = make_periodic_params(K, D, **{**settings, **kwargs}, generator=torch.Generator().manual_seed(seed))
    return PeriodicParams(*(t.double() for t in (p.initial, p.transition, p.mean, p.ar, p.noise_std)))


def series_autocovariance(phi1: float, phi2: float, s: float, n_terms: int = 3000) -> tuple[float, float]:
    """(gamma_0, gamma_1) of y_t = phi1 y_{t-1} + phi2 y_{t-2} + s eps_t from its MA(inf) weights
    psi_0 = 1, psi_1 = phi1, psi_j = phi1 psi_{j-1} + phi2 psi_{j-2}: gamma_h = s^2 sum_j psi_j psi_{j+h}."""
    psi = [1.0, phi1]
    for _ in range(n_terms):
        psi.append(phi1 * psi[-1] + phi2 * psi[-2])
    return s**2 * sum(a * a for a in psi), s**2 * sum(a * b for a, b in zip(psi, psi[1:]))


def step_density(p: PeriodicParams, k: int, x: torch.Tensor, t: int) -> torch.Tensor:
    """log p(x_t | c_t = k, x_{<t}) of one sequence x (T, D), from the module docstring's three cases."""
    m, (phi1, phi2), s = p.mean, p.ar[k].unbind(-1), p.noise_std[k]
    g0, g1 = zip(*(series_autocovariance(float(a), float(b), float(c)) for a, b, c in zip(phi1, phi2, s)))
    g0, rho1 = torch.tensor(g0, dtype=x.dtype), torch.tensor(g1, dtype=x.dtype) / torch.tensor(g0, dtype=x.dtype)
    y = x - m
    if t == 0:
        dist = Normal(m, g0.sqrt())
    elif t == 1:
        dist = Normal(m + rho1 * y[0], (g0 * (1 - rho1**2)).sqrt())
    else:
        dist = Normal(m + phi1 * y[t - 1] + phi2 * y[t - 2], s)
    return dist.log_prob(x[t]).sum()


def test_log_likelihoods_equal_the_normal_densities_step_by_step():
    p = periodic_params()
    x = p.mean + torch.randn(2, 6, 2, dtype=torch.float64)
    table = p.log_likelihoods(x)
    assert table.shape == (2, 6, 3)
    for b, t, k in itertools.product(range(2), range(6), range(3)):
        assert torch.allclose(table[b, t, k], step_density(p, k, x[b], t), atol=1e-8), (b, t, k)
    for T in (1, 2):  # sequences shorter than the AR order: only the stationary start
        assert torch.allclose(p.log_likelihoods(x[:, :T]), table[:, :T])


def brute_force_log_px(p: PeriodicParams, x: torch.Tensor) -> torch.Tensor:
    """log sum over all K^T paths of p(c_{1:T}) prod_t p(x_t | c_t, x_{<t}), for one sequence x (T, D)."""
    T, K = x.shape[0], p.n_states
    terms = []
    for path in itertools.product(range(K), repeat=T):
        lp = p.initial[path[0]].log() + sum(p.transition[path[t - 1], path[t]].log() for t in range(1, T))
        terms.append(lp + sum(step_density(p, path[t], x, t) for t in range(T)))
    return torch.stack(terms).logsumexp(0)


def test_forward_over_log_likelihoods_equals_enumeration_of_all_paths():
    p = periodic_params(K=2, D=2, mean_duration=2.0)  # K^T = 16 paths
    x = p.sample(3, 4, torch.Generator().manual_seed(1)).x.double()
    log_px = hmm.log_likelihood(p.initial.log(), p.transition.log(), p.log_likelihoods(x))
    for b in range(3):
        assert torch.allclose(log_px[b], brute_force_log_px(p, x[b]), atol=1e-8)


def one_state(p: PeriodicParams, k: int) -> PeriodicParams:
    """The same oscillators, the chain held in state k."""
    K = p.n_states
    return dataclasses.replace(p, initial=torch.eye(K, dtype=p.initial.dtype)[k],
                               transition=torch.eye(K, dtype=p.transition.dtype))


@pytest.mark.parametrize("k", [0, 1])
def test_samples_have_the_stationary_sd_and_lag1_correlation_of_their_state(k):
    p = periodic_params(K=2, D=3, seed=2, damping=0.97, min_period=6.0, max_period=24.0)
    gamma0, rho1 = p.stationary()
    for d in range(3):  # the closed forms equal the series; the amplitudes and periods are in their ranges
        g0, g1 = series_autocovariance(*(float(v) for v in (*p.ar[k, d], p.noise_std[k, d])))
        assert math.isclose(float(gamma0[k, d]), g0, rel_tol=1e-9) and math.isclose(float(rho1[k, d]), g1 / g0)
        assert 3**-0.5 <= float(gamma0[k, d].sqrt()) <= 3**0.5
        assert 6 <= 2 * math.pi / math.acos(float(p.ar[k, d, 0]) / (2 * 0.97)) <= 24
    # one long run per sequence: moments over time (~1e5 correlated steps)
    y = one_state(p, k).sample(20, 5000, torch.Generator().manual_seed(3)).x.double() - p.mean
    assert torch.allclose(y.pow(2).mean((0, 1)).sqrt(), gamma0[k].sqrt(), rtol=0.05)
    lag1 = (y[:, 1:] * y[:, :-1]).mean((0, 1)) / y.pow(2).mean((0, 1))
    assert torch.allclose(lag1, rho1[k], atol=0.02)
    # the start is already stationary: many sequences, the first two steps
    y = one_state(p, k).sample(20000, 2, torch.Generator().manual_seed(4)).x.double() - p.mean
    assert torch.allclose(y.pow(2).mean(0).sqrt(), gamma0[k].sqrt().expand(2, 3), rtol=0.03)
    assert torch.allclose((y[:, 0] * y[:, 1]).mean(0) / gamma0[k], rho1[k], atol=0.03)


def test_regimes_share_a_mean_and_last_mean_duration_steps():
    data = make_periodic(n_states=4, obs_dim=3, seq_len=400, n_train=100, n_val=1, mean_duration=40.0, seed=1)
    p, x, c = data.params, data.train.x, data.train.states
    assert x.dtype == torch.float32 and x.shape == (100, 400, 3)
    switches = (c[:, 1:] != c[:, :-1]).float().mean()
    assert math.isclose(float(switches), 1 / 40, rel_tol=0.1)
    for k in range(4):  # every state's mean is m: the level does not tell them apart
        assert torch.allclose(x[c == k].mean(0), p.mean, atol=0.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"min_period": 2}, "data.min_period must be a number > 2 (steps per cycle), got 2"),
    ({"max_period": 5.0}, "data.max_period must be a number >= data.min_period=6.0, got 5.0"),
    ({"damping": 1.0}, "data.damping must be in (0, 1), got 1.0"),
    ({"mean_duration": 1.0}, "data.mean_duration must be a number > 1 (steps per regime), got 1.0"),
    ({"amplitude_spread": 0.5}, "data.amplitude_spread must be a number >= 1, got 0.5"),
    ({"obs_dim": 0}, "data.obs_dim must be an integer >= 1, got 0"),
    ({"n_states": 1}, "data.n_states must be an integer >= 2, got 1"),
    ({"seq_len": 1}, "data.seq_len must be an integer >= 2, got 1"),
])
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_periodic(**kwargs)


def test_composition_gives_the_yaml_values_and_the_autoregressive_family():
    cfg = compose_config(["data=periodic", "data.n_train=3", "data.n_val=2", "data.seq_len=9"])
    assert OmegaConf.get_type(cfg.data) is PeriodicDataConfig
    model = OmegaConf.to_container(cfg.model, resolve=True)
    assert (model["n_states"], model["obs_dim"], model["emission"], model["ar_order"]) == (4, 3, "autoregressive", 1)
    defaults = OmegaConf.load(CONFIGS / "data" / "periodic.yaml")
    assert {k: cfg.data[k] for k in defaults if k not in ("defaults", "n_train", "n_val", "seq_len")} == \
        {k: v for k, v in defaults.items() if k not in ("defaults", "n_train", "n_val", "seq_len")}
    data = load_data(cfg.data, seed=0)
    assert data.train.x.shape == (3, 9, 3) and data.val.x.shape == (2, 9, 3)
    assert isinstance(data.params, PeriodicParams) and data.params.n_states == 4


def test_a_small_cli_run_reports_the_oracle(cli, tmp_path):
    args = ["data=periodic", "data.n_train=8", "data.n_val=4", "data.seq_len=60", "model.ar_order=2",
            "trainer.n_epochs=2", "trainer.batch_size=8", f"hydra.run.dir={tmp_path}/run"]
    proc = cli.run("pyro_dssm.train", args)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.5 < metrics["oracle_accuracy"] <= 1.0 and 0.0 < metrics["val_accuracy"] <= 1.0
    assert metrics["accuracy_over_oracle"] == pytest.approx(metrics["val_accuracy"] / metrics["oracle_accuracy"])


def test_the_generator_is_seeded():
    a, b, other = (make_periodic(n_train=3, n_val=2, seq_len=50, seed=s) for s in (5, 5, 6))
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.states, b.val.states)
    assert torch.equal(a.params.ar, b.params.ar) and torch.equal(a.params.noise_std, b.params.noise_std)
    assert not torch.equal(a.train.x, other.train.x) and not torch.equal(a.params.ar, other.params.ar)
    assert not torch.equal(a.train.x[:2], a.val.x)  # train and validation are different draws
