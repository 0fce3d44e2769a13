"""Families as plug-ins: the registry, the contract's derived methods against the families' own,
the parameter counts against hand counts, select_k against bic, and the README's own family."""

import re
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import pyro_dssm
from pyro_dssm.config import ModelConfig
from pyro_dssm.config.families import EMISSIONS, TRANSITIONS, family_class
from pyro_dssm.fitted import FittedDSSM
from pyro_dssm.model.dssm import DSSM
from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.relaxed import RelaxedChainPosterior

from .helpers import REPO, cli_env

K, D = 3, 2


def model_of(emission: str, **settings) -> DSSM:
    torch.manual_seed(0)
    return DSSM(ModelConfig(n_states=K, obs_dim=D, emission=emission, **settings))


def positive_x(B=2, T=6):
    return torch.poisson(torch.full((B, T, D), 3.0, dtype=torch.float32))


@pytest.mark.parametrize("emission, hand", [
    ("gaussian", K * D),  # the means; sigma is fixed
    ("gaussian_scale", 2 * K * D),  # means and scales
    ("gaussian_full", K * (D + D * (D + 1) // 2)),  # means and the Cholesky factors' lower triangles
    ("autoregressive", K * (D * D + 4 * D)),  # A_k (D x D), b_k, r_k, and the first step's mean and scale
    # A_k, b_k, the Cholesky factors' lower triangles, the first step's mean and scale
    ("autoregressive_full", K * (D * D + D + D * (D + 1) // 2 + 2 * D)),
    ("poisson", K * D),  # the rates
])
def test_parameter_counts_by_hand(emission, hand):
    model = model_of(emission)
    assert model.emitter.n_parameters() == hand
    assert model.transition.n_parameters() == K * (K - 1)  # K rows of a stochastic matrix
    assert FittedDSSM(model, {"model_config": {}}).n_parameters() == K * (K - 1) + hand


def test_autoregressive_count_grows_with_the_order_by_hand():
    assert model_of("autoregressive", ar_order=3).emitter.n_parameters() == K * (D * 3 * D + 4 * D)


@pytest.mark.parametrize("emission", sorted(EMISSIONS))
def test_table_is_the_contract_table_and_log_prob_at_one_hot_states(emission):
    """A family's table (its own or the derived one) equals the derivation from its distribution, and every
    column is log_prob at that one-hot state."""
    emitter = model_of(emission).emitter
    x = positive_x()
    table = emitter.table(x)
    assert torch.allclose(table, Emission.complete_table(emitter, x), atol=1e-5)
    for k in range(K):
        one_hot = torch.nn.functional.one_hot(torch.full(x.shape[:2], k), K).float()
        assert torch.allclose(table[..., k], emitter.log_prob(x, one_hot), atol=1e-5)


def test_the_autoregressive_context_reads_only_the_past():
    emitter = model_of("autoregressive", ar_order=2).emitter
    x = torch.randn(2, 5, D)
    changed = x.clone()
    changed[:, 3] += 10.0
    same = emitter.context(x)[:, :4] == emitter.context(changed)[:, :4]
    assert bool(same.all())  # steps up to 3 read x_{<t} only
    assert emitter.context(x)[0, :, -1].tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]  # the first p steps are marked


@pytest.mark.parametrize("emission", sorted(EMISSIONS))
def test_sampling_follows_the_generator(emission):
    emitter = model_of(emission).emitter
    states = torch.tensor([[0, 1, 2, 2, 1]])
    first = emitter.sample(states, torch.Generator().manual_seed(4))
    again = emitter.sample(states, torch.Generator().manual_seed(4))
    other = emitter.sample(states, torch.Generator().manual_seed(5))
    assert first.shape == (1, 5, D) and torch.equal(first, again) and not torch.equal(first, other)


def test_the_posterior_memo_answers_for_its_own_sample_only():
    """The key of the memo is the sample object it drew: that tensor is answered without a second recursion,
    a copy is computed afresh, with the same numbers."""
    model = model_of("gaussian")
    x = torch.randn(2, 5, D)
    features, evidence, table = model.guide_reading(x)
    q = RelaxedChainPosterior(model.posterior, features, 0.5, torch.ones(2, 5, dtype=torch.bool), evidence, table)
    calls = []
    unroll = model.posterior.unroll
    model.posterior.unroll = lambda *a, **k: calls.append(1) or unroll(*a, **k)
    sample = q.rsample()
    hit = q.chain_logits(sample)
    assert len(calls) == 1  # the draw only
    miss = q.chain_logits(sample.clone())
    assert len(calls) == 2 and torch.allclose(hit, miss, atol=1e-6)


def test_unknown_family_names_the_known_ones():
    with pytest.raises(ValueError, match=r"model.emission must be one of \('gaussian'.*got 'student'"):
        ModelConfig(n_states=K, obs_dim=D, emission="student")
    with pytest.raises(ValueError, match="model.transition must be one of"):
        ModelConfig(n_states=K, obs_dim=D, transition="sticky")
    with pytest.raises(ValueError, match="cannot import 'no_such_module:Thing'"):
        family_class("emission", "no_such_module:Thing")
    assert family_class("transition", "stationary").__name__ == "StationaryTransition" and "stationary" in TRANSITIONS


class ShiftedGaussian(Emission):
    """A user's family for the registry tests: N(m(c_t) + shift, I), ``shift`` an option of its own."""

    em_random_starts = 0

    def __init__(self, n_states, obs_dim, hidden_dim, shift=0.0):
        super().__init__(n_states, obs_dim, hidden_dim)
        self.shift = shift
        self.mean = torch.nn.Linear(n_states, obs_dim)

    def distribution(self, states, context):
        return torch.distributions.Independent(torch.distributions.Normal(self.mean(states) + self.shift, 1.0), 1)

    def n_parameters(self):
        return self.n_states * self.obs_dim


def test_a_family_by_path_with_its_own_options_builds_and_decodes():
    config = ModelConfig(n_states=K, obs_dim=D, emission="tests.test_families:ShiftedGaussian",
                         emission_options={"shift": 2.0})
    model = DSSM(config)
    assert isinstance(model.emitter, ShiftedGaussian) and model.emitter.shift == 2.0
    x = torch.randn(2, 5, D)
    assert model.exact_hmm(x)[2].shape == (2, 5, K)
    with pytest.raises(ValueError, match=r"with options \{'shift': 2.0, 'nope': 1\}"):
        DSSM(replace(config, emission_options={"shift": 2.0, "nope": 1}))


def test_register_emission_takes_a_name_and_a_class(monkeypatch):
    monkeypatch.setitem(EMISSIONS, "shifted", ShiftedGaussian)  # undone after the test
    pyro_dssm.register_emission("shifted", ShiftedGaussian)
    assert isinstance(model_of("shifted").emitter, ShiftedGaussian)
    with pytest.raises(ValueError, match="takes a class"):
        pyro_dssm.register_emission("bad", ShiftedGaussian(K, D, 4))
    with pytest.raises(ValueError, match="without ':'"):
        pyro_dssm.register_emission("a:b", ShiftedGaussian)


def test_a_family_without_a_classical_init_says_which_init_to_use():
    from .helpers import data_driven_init

    model = DSSM(ModelConfig(n_states=K, obs_dim=D, emission="tests.test_families:ShiftedGaussian"))
    with pytest.raises(NotImplementedError, match="trainer.init=random or none"):
        data_driven_init(model, torch.randn(4, 10, D), torch.ones(4, 10, dtype=torch.bool), torch.Generator())


def readme_family_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("## Your own emission family", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_family_example_runs_as_written_from_an_empty_folder(tmp_path):
    script = tmp_path / "laplace.py"
    script.write_text(readme_family_example())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=cli_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    accuracy = float(re.search(r"accuracy ([\d.]+)", proc.stdout).group(1))
    assert accuracy > 0.95, proc.stdout  # three well-separated regimes, decoded by exact Viterbi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["laplace.py"]  # nothing written beside it


def test_full_covariance_m_step_is_the_weighted_sample_covariance():
    """Oracle: numpy's covariance of the points of each state (hard weights), up to the M-step's 1e-2
    pseudo-points at the pooled covariance and its 1e-4 ridge."""
    import numpy as np

    emitter = model_of("gaussian_full").emitter
    gen = torch.Generator().manual_seed(0)
    mixing = torch.tensor([[1.0, 0.0], [0.8, 0.6]])
    x = (torch.randn(4, 50, D, generator=gen) @ mixing.T).double()
    labels = torch.randint(K, (4, 50), generator=gen)
    params = emitter.m_step(x, torch.ones(4, 50, dtype=torch.bool), torch.nn.functional.one_hot(labels, K).double())
    for k in range(K):
        points = x[labels == k].numpy()
        L = params["scale_tril"][k].numpy()
        assert np.allclose(params["mean"][k].numpy(), points.mean(0), atol=1e-3)
        assert np.allclose(L @ L.T, np.cov(points.T, bias=True), atol=2e-3)
        assert np.allclose(L, np.tril(L))


def test_the_written_out_densities_equal_torchs():
    """The families' own diagonal Normal and Poisson (kept so that their numbers are those of earlier runs)
    against torch.distributions: log_prob, shapes, and sample moments."""
    from torch.distributions import Independent, Normal, Poisson

    from pyro_dssm.model.emissions.poisson import poisson
    from pyro_dssm.model.emissions.statistics import diagonal_normal

    gen = torch.Generator().manual_seed(0)
    mean, scale = torch.randn(4, 1, D, generator=gen), torch.rand(3, D, generator=gen) + 0.2
    x = torch.randn(4, 3, D, generator=gen)
    ours = diagonal_normal(mean, scale)
    assert ours.batch_shape == (4, 3) and ours.event_shape == (D,)
    assert torch.allclose(ours.log_prob(x), Independent(Normal(mean, scale), 1).log_prob(x), atol=1e-5)
    torch.manual_seed(1)
    draws = diagonal_normal(torch.tensor([1.0, -2.0]), torch.tensor([0.5, 2.0])).sample((20000,))
    assert torch.allclose(draws.mean(0), torch.tensor([1.0, -2.0]), atol=0.05)
    assert torch.allclose(draws.std(0), torch.tensor([0.5, 2.0]), rtol=0.03)
    rate = torch.rand(3, D, generator=gen) * 4 + 0.1
    counts = torch.poisson(rate.expand(4, 3, D), generator=gen)
    assert torch.allclose(poisson(rate).log_prob(counts), Independent(Poisson(rate), 1).log_prob(counts), atol=1e-5)
    assert torch.allclose(poisson(rate).sample((20000,)).mean(0), rate, rtol=0.05)
