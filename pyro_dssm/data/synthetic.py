"""Synthetic HMM data: the ground truth the model is measured against.

The generating process is a plain Gaussian HMM

    c_1 ~ Uniform(K),   c_t | c_{t-1} ~ Categorical(A[c_{t-1}]),
    x_t | c_t ~ Normal(mu[c_t], noise_std^2 I_D),

with ``A[i, i] = transition_bias`` and ``A[i, j] = (1 - transition_bias) / (K - 1)``
for ``j != i``. Train and validation sequences share one set of parameters
(:class:`HMMParams`), which stays available for the oracle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_dssm.config import SyntheticDataConfig
from pyro_dssm.data.chain import sample_states, sticky_transition
from pyro_dssm.data.sequences import SequenceData


@dataclass
class HMMParams:
    """Parameters of a Gaussian HMM.

    Attributes:
        initial: (K,) initial state probabilities p(c_1).
        transition: (K, K) row-stochastic matrix, ``transition[i, j] = p(c_t=j | c_{t-1}=i)``.
        means: (K, D) emission means.
        noise_std: emission standard deviation (isotropic).
    """

    initial: torch.Tensor
    transition: torch.Tensor
    means: torch.Tensor
    noise_std: float

    @property
    def n_states(self) -> int:
        return self.means.shape[0]

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        r"""x (B, T, D) -> (B, T, K): :math:`\log \mathcal N(x_t; \mu_k, \sigma^2 I)` under these parameters.

        The same floating-point steps as :func:`pyro_dssm.model.hmm.gaussian_log_likelihood`
        (the data layer cannot import the model layer), so the oracle's numbers do not move.
        """
        means = self.means.to(x)
        missing = torch.isnan(x)
        if bool(missing.any()):  # NaN cells are missing: the density of the observed ones (independent channels)
            o = (~missing).to(x.dtype)
            x = x.nan_to_num(0.0)
            sq = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ means.T + o @ means.pow(2).T).clamp_min(0.0)
            D = o.sum(-1, keepdim=True)  # (B, T, 1) observed channels of each step
        else:
            D = x.shape[-1]
            # |x - mu|^2 = |x|^2 - 2 x.mu + |mu|^2: one matrix product instead of a (B, T, K, D) tensor
            sq = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ means.T + means.pow(2).sum(-1)).clamp_min(0.0)
        return -0.5 * sq / self.noise_std**2 - D * (math.log(self.noise_std) + 0.5 * math.log(2 * math.pi))

    def sample(self, n_seqs: int, seq_len: int, generator: torch.Generator) -> SequenceData:
        """:func:`sample_hmm` of these parameters."""
        return sample_hmm(self, n_seqs, seq_len, generator)


def make_hmm_params(
    n_states: int, obs_dim: int, transition_bias: float, noise_std: float, generator: torch.Generator
) -> HMMParams:
    """Random HMM parameters: sticky transitions, means ~ N(0, I_D)."""
    K = n_states
    means = torch.randn(K, obs_dim, generator=generator)
    return HMMParams(torch.full((K,), 1.0 / K), sticky_transition(K, transition_bias), means, noise_std)


def sample_hmm(params: HMMParams, n_seqs: int, seq_len: int, generator: torch.Generator) -> SequenceData:
    """Draw ``n_seqs`` sequences of length ``seq_len`` from ``params``.

    Returns :class:`SequenceData` with x (N, T, D) float32 and states (N, T).
    """
    N, T = n_seqs, seq_len
    states = sample_states(params.initial, params.transition, N, T, generator)
    noise = torch.randn(N, T, params.means.shape[1], generator=generator)
    x = params.means[states] + params.noise_std * noise
    return SequenceData(x.float(), torch.full((N,), T, dtype=torch.long), states)


@dataclass
class SyntheticData:
    """Train and validation sequences drawn from one HMM (``params``)."""

    train: SequenceData
    val: SequenceData
    params: HMMParams


def draw_splits(params, cfg, seed: int) -> tuple[SequenceData, SequenceData]:
    """Train, then validation sequences (``cfg.n_train``, ``cfg.n_val`` of ``cfg.seq_len`` steps) from a process with
    fixed parameters whose ``sample(n, T, generator)`` draws them, from one generator seeded with ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    train = params.sample(cfg.n_train, cfg.seq_len, gen)
    return train, params.sample(cfg.n_val, cfg.seq_len, gen)


def validate_synthetic_args(n_states, obs_dim, seq_len, n_train, n_val, transition_bias, noise_std,
                            missing_fraction=0.0) -> None:
    """Raise ValueError naming the first bad argument of :func:`make_synthetic` (the checks of ``data=synthetic``)."""
    SyntheticDataConfig(n_states=n_states, obs_dim=obs_dim, seq_len=seq_len, n_train=n_train, n_val=n_val,
                        transition_bias=transition_bias, noise_std=noise_std, missing_fraction=missing_fraction)


def make_synthetic(
    n_states: int = 5,
    obs_dim: int = 10,
    seq_len: int = 100,
    n_train: int = 1000,
    n_val: int = 200,
    transition_bias: float = 0.9,
    noise_std: float = 1.0,
    seed: int = 0,
    missing_fraction: float = 0.0,
) -> SyntheticData:
    """Seeded synthetic dataset: parameters, then train, then validation sequences; then, with
    ``missing_fraction`` > 0, that share of their cells set to NaN (missing completely at random,
    :func:`remove_cells`; the oracle, :meth:`HMMParams.log_likelihoods`, sees the same cells)."""
    validate_synthetic_args(n_states, obs_dim, seq_len, n_train, n_val, transition_bias, noise_std, missing_fraction)
    gen = torch.Generator().manual_seed(seed)
    params = make_hmm_params(n_states, obs_dim, transition_bias, noise_std, gen)
    train = sample_hmm(params, n_train, seq_len, gen)
    val = sample_hmm(params, n_val, seq_len, gen)
    if missing_fraction > 0:  # its own generator: the observed values are those of the complete data
        holes = torch.Generator().manual_seed(seed + 1)
        train, val = remove_cells(train, missing_fraction, holes), remove_cells(val, missing_fraction, holes)
    return SyntheticData(train, val, params)


def remove_cells(data: SequenceData, fraction: float, generator: torch.Generator) -> SequenceData:
    """``data`` with each cell of x set to NaN (missing) with probability ``fraction``, independently (MCAR)."""
    holes = torch.rand(data.x.shape, generator=generator) < fraction
    return SequenceData(data.x.masked_fill(holes, float("nan")), data.lengths, data.states)
