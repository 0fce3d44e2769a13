r"""Switches driven by an exogenous input (``data=driven``): an input-output HMM with known truth.

K = 3 states, D = 2 features, U = 1 input. The input is a slow series given beside the data (a
stimulus, a control signal), a stationary AR(1) with unit variance,

.. math::

    u_1 \sim N(0, 1), \qquad u_t = \rho\, u_{t-1} + \sqrt{1 - \rho^2}\, \eta_t,

and each state has its preferred input level :math:`m_k \in \{-a, 0, +a\}`; the chain leans towards
the state whose level is near the input, with some stickiness:

.. math::

    p(c_t = j \mid c_{t-1} = i, u_t) \propto \exp\big(s\, [i = j] - g\, (u_t - m_j)^2\big).

The features are noisy around one mean per state (on the unit circle),
:math:`x_t \mid c_t = k \sim N(\mu_k, \sigma^2 I)`, noisy enough that the emission alone leaves many
steps ambiguous: the input tells which state comes next, a stationary matrix only how often a state
is left. The exact HMM with the true (B, T, K, K) table is the oracle (:class:`DrivenParams`).

Observations carry the input after the features, (N, T, D + U) (:mod:`pyro_dssm.model.inputs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_dssm.config import DrivenDataConfig
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.data.synthetic import SyntheticData, draw_splits


@dataclass
class DrivenParams:
    """The true process of ``data=driven`` (module docstring): stickiness s, gain g, input levels +-a, input
    persistence rho, emission sigma; K = 3 states on the unit circle in D = 2, U = 1 input."""

    stickiness: float
    gain: float
    level: float
    persistence: float
    noise_std: float

    n_states = 3
    obs_dim = 2
    input_dim = 1

    @property
    def initial(self) -> torch.Tensor:
        """(K,) uniform p(c_1)."""
        return torch.full((self.n_states,), 1.0 / self.n_states)

    @property
    def means(self) -> torch.Tensor:
        """(K, D) the states' means, evenly spaced on the unit circle."""
        angles = torch.arange(self.n_states) * 2 * math.pi / self.n_states
        return torch.stack([angles.cos(), angles.sin()], -1)

    @property
    def levels(self) -> torch.Tensor:
        """(K,) each state's preferred input level m_k: -a, 0, +a."""
        return torch.linspace(-self.level, self.level, self.n_states)

    def log_transitions(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D + U) -> (B, T, K, K) log p(c_t = j | c_{t-1} = i, u_t) (row 0 unused)."""
        u = x[..., self.obs_dim]
        logits = self.stickiness * torch.eye(self.n_states).to(x) - self.gain * (u[..., None, None] - self.levels.to(x)) ** 2
        return logits.log_softmax(-1)

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D + U) -> (B, T, K): log N(x_t; mu_k, sigma^2 I) of the features."""
        features = x[..., :self.obs_dim]
        sq = ((features[:, :, None] - self.means.to(x)) ** 2).sum(-1)
        return -0.5 * sq / self.noise_std ** 2 - self.obs_dim * (math.log(self.noise_std) + 0.5 * math.log(2 * math.pi))

    def sample(self, n_seqs: int, seq_len: int, generator: torch.Generator) -> SequenceData:
        """n_seqs sequences of seq_len steps: observations (N, T, D + U) (features, then the input) and states (N, T)."""
        u = torch.empty(n_seqs, seq_len)
        u[:, 0] = torch.randn(n_seqs, generator=generator)
        innovation = math.sqrt(1 - self.persistence ** 2)
        for t in range(1, seq_len):
            u[:, t] = self.persistence * u[:, t - 1] + innovation * torch.randn(n_seqs, generator=generator)
        table = self.log_transitions(torch.cat([torch.zeros(n_seqs, seq_len, self.obs_dim), u[..., None]], -1)).exp()
        states = torch.empty(n_seqs, seq_len, dtype=torch.long)
        states[:, 0] = torch.randint(self.n_states, (n_seqs,), generator=generator)
        rows = torch.arange(n_seqs)
        for t in range(1, seq_len):
            states[:, t] = torch.multinomial(table[rows, t, states[:, t - 1]], 1, generator=generator)[:, 0]
        features = self.means[states] + self.noise_std * torch.randn(n_seqs, seq_len, self.obs_dim, generator=generator)
        return SequenceData(torch.cat([features, u[..., None]], -1), torch.full((n_seqs,), seq_len, dtype=torch.long),
                            states)


@dataclass
class DrivenData(SyntheticData):
    """:class:`~pyro_dssm.data.synthetic.SyntheticData` whose observations carry an input column: its name."""

    input_names: tuple[str, ...] = ("u",)


def make_driven(cfg: DrivenDataConfig, seed: int = 0) -> DrivenData:
    """Seeded ``data=driven``: the parameters of ``cfg`` (fixed, not drawn), then train, then validation sequences."""
    params = DrivenParams(cfg.stickiness, cfg.gain, cfg.level, cfg.persistence, cfg.noise_std)
    return DrivenData(*draw_splits(params, cfg, seed), params)
