"""Data with known truth beyond the Gaussian HMM: ``data=switching_ar`` and ``data=counts``.

Oracles: torch.distributions densities written here from the module docstrings'
equations, enumeration of all K^T state paths, the stationary covariance of an
AR(1) process summed as a series, least squares on the samples, and the CLI
in a child process.
"""

import itertools
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.distributions import MultivariateNormal, Poisson

from pyro_dssm.config import CountsDataConfig, SwitchingARDataConfig, data_settings
from pyro_dssm.data.counts import PoissonHMMParams, make_counts, make_poisson_params
from pyro_dssm.data.switching_ar import SwitchingARParams, make_switching_ar, make_switching_ar_params
from pyro_dssm.evaluation.evaluate import oracle_metrics
from pyro_dssm.evaluation.metrics import hungarian_accuracy
from pyro_dssm.model import hmm
from pyro_dssm.train import load_data

from .helpers import compose_config


def ar_params(K=3, D=3, seed=0) -> SwitchingARParams:
    """Float64 switching AR parameters (odd D: one coordinate is not rotated)."""
    gen = torch.Generator().manual_seed(seed)
    p = make_switching_ar_params(K, D, transition_bias=0.8, noise_std=0.5, damping=0.9, max_angle=1.0,
                                 noise_spread=2.0, generator=gen)
    return SwitchingARParams(*(t.double() for t in (p.initial, p.transition, p.mean, p.dynamics, p.noise_std,
                                                    p.initial_std)))


def poisson_params(K=3, D=2, seed=0) -> PoissonHMMParams:
    gen = torch.Generator().manual_seed(seed)
    p = make_poisson_params(K, D, transition_bias=0.8, mean_rate=2.0, rate_spread=1.0, generator=gen)
    return PoissonHMMParams(p.initial.double(), p.transition.double(), p.rates.double())


def ar_step_density(p: SwitchingARParams, k: int, x_t, x_prev):
    """log p(x_t | c_t = k, x_{t-1}) from the module docstring; x_prev None: the first step."""
    D = x_t.shape[-1]
    if x_prev is None:
        return MultivariateNormal(p.mean, p.initial_std[k] ** 2 * torch.eye(D, dtype=x_t.dtype)).log_prob(x_t)
    loc = p.mean + p.dynamics[k] @ (x_prev - p.mean)
    return MultivariateNormal(loc, p.noise_std[k] ** 2 * torch.eye(D, dtype=x_t.dtype)).log_prob(x_t)


def poisson_step_density(p: PoissonHMMParams, k: int, x_t, x_prev):
    return Poisson(p.rates[k]).log_prob(x_t).sum()


def test_switching_ar_log_likelihoods_equal_gaussian_densities():
    p = ar_params()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    table = p.log_likelihoods(x)
    assert table.shape == (2, 5, 3)
    for b, t, k in itertools.product(range(2), range(5), range(3)):
        expected = ar_step_density(p, k, x[b, t], x[b, t - 1] if t else None)
        assert torch.allclose(table[b, t, k], expected, atol=1e-10), (b, t, k)


def test_switching_ar_first_step_is_the_stationary_law_of_its_state():
    """Sigma_inf = sum_j A^j (sigma^2 I) A^j^T solves Sigma = A Sigma A^T + sigma^2 I; x_1 ~ N(m, Sigma_inf)."""
    p = ar_params()
    for k in range(p.n_states):
        A, power, cov = p.dynamics[k], torch.eye(3, dtype=torch.float64), torch.zeros(3, 3, dtype=torch.float64)
        for _ in range(2000):
            cov += p.noise_std[k] ** 2 * power @ power.T
            power = A @ power
        assert torch.allclose(cov, p.initial_std[k] ** 2 * torch.eye(3, dtype=torch.float64), atol=1e-5)  # float32 A
        eig = torch.linalg.eigvals(A).abs()
        assert torch.allclose(eig, torch.full_like(eig, 0.9))  # stable: |eig| = damping < 1


def test_switching_ar_states_differ_in_dynamics():
    p = ar_params()
    gaps = [float((p.dynamics[i] - p.dynamics[j]).norm()) for i, j in itertools.combinations(range(3), 2)]
    assert min(gaps) > 0.5


def test_poisson_log_likelihoods_equal_poisson_densities():
    p = poisson_params()
    x = torch.poisson(torch.full((2, 5, 2), 3.0, dtype=torch.float64))
    table = p.log_likelihoods(x)
    expected = torch.stack([Poisson(p.rates[k]).log_prob(x).sum(-1) for k in range(p.n_states)], -1)
    assert torch.allclose(table, expected, atol=1e-10)


def brute_force_log_px(p, x, step_density) -> torch.Tensor:
    """log sum over all K^T paths of p(c_{1:T}) prod_t p(x_t | c_t, x_{t-1}), for one sequence x (T, D)."""
    T, K = x.shape[0], p.n_states
    terms = []
    for path in itertools.product(range(K), repeat=T):
        lp = p.initial[path[0]].log()
        lp = lp + sum(p.transition[path[t - 1], path[t]].log() for t in range(1, T))
        lp = lp + sum(step_density(p, path[t], x[t], x[t - 1] if t else None) for t in range(T))
        terms.append(lp)
    return torch.stack(terms).logsumexp(0)


@pytest.mark.parametrize("family", ["switching_ar", "counts"])
def test_forward_over_log_likelihoods_equals_enumeration_of_all_paths(family):
    if family == "switching_ar":
        p, density = ar_params(), ar_step_density
    else:
        p, density = poisson_params(), poisson_step_density
    data = p.sample(2, 4, torch.Generator().manual_seed(1))
    x = data.x.double()
    log_px = hmm.log_likelihood(p.initial.log(), p.transition.log(), p.log_likelihoods(x))
    for b in range(2):
        assert torch.allclose(log_px[b], brute_force_log_px(p, x[b], density), atol=1e-8)


def empirical_transition(states: torch.Tensor, K: int) -> torch.Tensor:
    counts = torch.zeros(K, K)
    counts.index_put_((states[:, :-1].reshape(-1), states[:, 1:].reshape(-1)), torch.ones(states[:, 1:].numel()),
                      accumulate=True)
    return counts / counts.sum(-1, keepdim=True)


def test_switching_ar_samples_follow_the_parameters():
    data = make_switching_ar(n_states=3, obs_dim=3, seq_len=200, n_train=400, n_val=1, seed=3)
    p, x, c = data.params, data.train.x, data.train.states
    assert x.dtype == torch.float32 and x.shape == (400, 200, 3)
    assert torch.allclose(empirical_transition(c, 3), p.transition, atol=0.01)
    x0, x1, c1 = x[:, :-1].reshape(-1, 3), x[:, 1:].reshape(-1, 3), c[:, 1:].reshape(-1)
    for k in range(3):
        in_k = c == k
        # every state's mean is m (states are told apart by dynamics only, not by position)
        assert torch.allclose(x[in_k].mean(0), p.mean, atol=0.05)
        # least squares of x_t - m on x_{t-1} - m within state k recovers A_k; the residual sd sigma_k
        prev, cur = x0[c1 == k] - p.mean, x1[c1 == k] - p.mean
        A_hat = torch.linalg.lstsq(prev, cur).solution.T
        assert torch.allclose(A_hat, p.dynamics[k], atol=0.02)
        assert math.isclose(float((cur - prev @ p.dynamics[k].T).std()), float(p.noise_std[k]), rel_tol=0.02)
        first = x[:, 0][c[:, 0] == k] - p.mean  # x_1 ~ N(m, s_k^2 I)
        assert math.isclose(float(first.pow(2).mean().sqrt()), float(p.initial_std[k]), rel_tol=0.15)


def test_counts_samples_follow_the_parameters():
    data = make_counts(n_states=4, obs_dim=5, seq_len=200, n_train=300, n_val=1, seed=2)
    p, x, c = data.params, data.train.x, data.train.states
    assert x.dtype == torch.float32 and x.shape == (300, 200, 5)
    assert bool((x >= 0).all()) and torch.equal(x, x.round())
    assert torch.allclose(empirical_transition(c, 4), p.transition, atol=0.01)
    for k in range(4):
        in_k = x[c == k]  # Poisson: mean = variance = rate, per channel
        assert torch.allclose(in_k.mean(0), p.rates[k], rtol=0.05, atol=0.02)
        assert torch.allclose(in_k.var(0), p.rates[k], rtol=0.1, atol=0.03)


@pytest.mark.parametrize("make", [make_switching_ar, make_counts])
def test_generators_are_seeded(make):
    a, b, other = make(n_train=3, n_val=2, seed=5), make(n_train=3, n_val=2, seed=5), make(n_train=3, n_val=2, seed=6)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.states, b.val.states)
    assert not torch.equal(a.train.x, other.train.x)
    assert not torch.equal(a.train.x[:2], a.val.x)  # train and validation are different draws


@pytest.mark.parametrize("make, low", [(make_switching_ar, 0.9), (make_counts, 0.9)])
def test_the_default_data_has_a_high_oracle(make, low):
    data = make(n_train=1, seed=0)
    assert oracle_metrics(data.params, data.val)["oracle_accuracy"] > low


def test_a_mean_only_gaussian_hmm_is_near_chance_on_switching_ar():
    """Even with the true state means (from the labels) and the pooled sigma."""
    data = make_switching_ar(n_train=200, seed=0)
    tr, val, K = data.train, data.val, 3
    means = torch.stack([tr.x[tr.states == k].mean(0) for k in range(K)])
    sd = float((tr.x - means[tr.states]).std())
    ll = hmm.gaussian_log_likelihood(val.x, means, sd)
    marg = hmm.posterior_marginals(data.params.initial.log(), data.params.transition.log(), ll)
    assert hungarian_accuracy(val.states, marg.argmax(-1), K) < 0.45


@pytest.mark.parametrize("source, cls, truth, emission", [
    ("switching_ar", SwitchingARDataConfig, SwitchingARParams, "autoregressive"),
    ("counts", CountsDataConfig, PoissonHMMParams, "poisson")])
def test_composition_with_overrides(source, cls, truth, emission):
    cfg = compose_config([f"data={source}", "data.n_states=5", "data.obs_dim=4", "data.seq_len=7", "data.n_train=6",
                          "data.n_val=3"])
    assert OmegaConf.get_type(cfg.data) is cls
    model = OmegaConf.to_container(cfg.model, resolve=True)  # the model follows the data's K, D and family
    assert (model["n_states"], model["obs_dim"], model["emission"]) == (5, 4, emission)
    data = load_data(cfg.data, seed=0)
    assert data.train.x.shape == (6, 7, 4) and data.val.x.shape == (3, 7, 4)
    assert isinstance(data.params, truth) and data.params.n_states == 5
    assert isinstance(data_settings(OmegaConf.to_container(cfg.data, resolve=True)), cls)
    chosen = compose_config([f"data={source}", "model.emission=gaussian"])
    assert OmegaConf.to_container(chosen.model, resolve=True)["emission"] == "gaussian"
    assert compose_config().model.emission == "gaussian"  # data=synthetic has no family of its own


@pytest.mark.parametrize("make, kwargs, message", [
    (make_switching_ar, {"damping": 1.0}, "data.damping must be in (0, 1), got 1.0"),
    (make_switching_ar, {"obs_dim": 1}, "data.obs_dim must be an integer >= 2 for data=switching_ar"),
    (make_switching_ar, {"noise_spread": 0.5}, "data.noise_spread must be a number >= 1, got 0.5"),
    (make_counts, {"mean_rate": 0.0}, "data.mean_rate must be a number > 0, got 0.0"),
    (make_counts, {"transition_bias": 1.0}, "data.transition_bias must be in (0, 1), got 1.0"),
])
def test_bad_arguments_name_the_value(make, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(**kwargs)


CLI_CASES = [
    (["data=switching_ar", "data.max_angle=4"], "error: data.max_angle must be in (0, pi], got 4.0\n"),
    (["data=switching_ar", "data.emission=linear"], "error: data.emission must be one of ('gaussian', "),
    (["data=counts", "data.rate_spread=-1"], "error: data.rate_spread must be a number >= 0, got -1.0\n"),
    (["data=counts", "data.n_states=1"], "error: data.n_states must be an integer >= 2, got 1\n"),
    (["data=periodic", "data.max_period=3"],
     "error: data.max_period must be a number >= data.min_period=6.0, got 3.0\n"),
    (["data=periodic", "data.damping=0"], "error: data.damping must be in (0, 1), got 0.0\n"),
]


@pytest.mark.parametrize("args, line", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_refuses_bad_values_in_one_line(cli, tmp_path, args, line):
    proc = cli.run("pyro_dssm.train", [*args, f"hydra.run.dir={tmp_path}/run"])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(line) and proc.stderr.count("\n") == 1, proc.stderr
