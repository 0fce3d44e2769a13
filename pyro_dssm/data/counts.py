r"""Count data from a Poisson HMM (``data=counts``): spike trains or event counts with known truth.

The generating process, K states and D channels:

.. math::

    c_1 \sim \mathrm{Uniform}(K), \qquad c_t \mid c_{t-1} \sim \mathrm{Categorical}(P_{c_{t-1}}),

    x_{t,d} \mid c_t = k \sim \mathrm{Poisson}(\lambda_{k,d}) \quad \text{independently over } d,

with log-normal rates :math:`\log \lambda_{k,d} = \log(\texttt{mean\_rate}) + \texttt{rate\_spread}\, z_{k,d}`,
:math:`z_{k,d} \sim \mathcal N(0, 1)` (``mean_rate`` is the median rate) and sticky transitions
(:func:`~pyro_dssm.data.chain.sticky_transition`). The counts are stored as float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_dssm.config import CountsDataConfig
from pyro_dssm.data.chain import sample_states, sticky_transition
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.data.synthetic import SyntheticData


@dataclass
class PoissonHMMParams:
    r"""Parameters of a Poisson HMM.

    Attributes:
        initial: (K,) p(c_1).
        transition: (K, K) row-stochastic, ``transition[i, j] = p(c_t=j | c_{t-1}=i)``.
        rates: (K, D) :math:`\lambda_{k,d} > 0`.
    """

    initial: torch.Tensor
    transition: torch.Tensor
    rates: torch.Tensor

    @property
    def n_states(self) -> int:
        return self.rates.shape[0]

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        r"""(B, T, D) counts -> (B, T, K): :math:`\sum_d x_{t,d} \log\lambda_{k,d} - \lambda_{k,d} - \log x_{t,d}!`."""
        rates = self.rates.to(x)
        return x @ rates.log().T - rates.sum(-1) - torch.lgamma(x + 1).sum(-1, keepdim=True)

    def sample(self, n_seqs: int, seq_len: int, generator: torch.Generator) -> SequenceData:
        """``n_seqs`` sequences of ``seq_len`` steps: the states, then the (N, T, D) counts as float32."""
        states = sample_states(self.initial, self.transition, n_seqs, seq_len, generator)
        x = torch.poisson(self.rates[states], generator=generator)
        return SequenceData(x.float(), torch.full((n_seqs,), seq_len, dtype=torch.long), states)


def make_poisson_params(n_states: int, obs_dim: int, transition_bias: float, mean_rate: float, rate_spread: float,
                        generator: torch.Generator) -> PoissonHMMParams:
    """Random parameters of the process in the module docstring (draws: the (K, D) log-normal rates)."""
    K = n_states
    rates = torch.exp(math.log(mean_rate) + rate_spread * torch.randn(K, obs_dim, generator=generator))
    return PoissonHMMParams(torch.full((K,), 1.0 / K), sticky_transition(K, transition_bias), rates)


def make_counts(n_states: int = 4, obs_dim: int = 8, seq_len: int = 100, n_train: int = 300, n_val: int = 100,
                transition_bias: float = 0.9, mean_rate: float = 1.0, rate_spread: float = 0.7,
                seed: int = 0) -> SyntheticData:
    """Seeded ``data=counts``: parameters, then train, then validation sequences (x float32 counts (N, T, D))."""
    CountsDataConfig(n_states=n_states, obs_dim=obs_dim, seq_len=seq_len, n_train=n_train, n_val=n_val,
                     transition_bias=transition_bias, mean_rate=mean_rate,
                     rate_spread=rate_spread)  # ValueError naming a bad argument
    gen = torch.Generator().manual_seed(seed)
    params = make_poisson_params(n_states, obs_dim, transition_bias, mean_rate, rate_spread, gen)
    return SyntheticData(params.sample(n_train, seq_len, gen), params.sample(n_val, seq_len, gen), params)
