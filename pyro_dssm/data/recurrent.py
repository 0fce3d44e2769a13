r"""A track that turns at its ends: switches that depend on the last observation (``data=recurrent``).

K = 2 states, moving right (k = 0) and left (k = 1) along a line; x_t is the position (D = 1):

.. math::

    x_1 \sim \mathrm{Uniform}(-L, L), \qquad x_t = x_{t-1} + v_{c_t} + \sigma \varepsilon_t,
    \quad v = (+v, -v),

and the chance to turn grows as the car passes the end it is heading for,

.. math::

    p(c_t \ne c_{t-1} \mid c_{t-1} = k, x_{t-1}) = \max\big(\epsilon,\ \mathrm{sigmoid}(s\,(d_k x_{t-1} - L))\big),
    \qquad d = (+1, -1),

with a floor :math:`\epsilon` of spontaneous turns. The transition table is a known function of
:math:`x_{t-1}`, so the exact HMM with a (B, T, K, K) table is the oracle (:class:`TrackParams`). A
stationary transition matrix can only learn how often the car turns, not where: it finds a turn
from the increments alone, some steps late, where the oracle expects it at the ends. An
autoregressive emission holds :math:`x_t \mid x_{t-1}, c_t` exactly (:math:`A = 1`, :math:`b_k = v_k`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_dssm.config import RecurrentDataConfig
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.data.synthetic import SyntheticData, draw_splits

DIRECTIONS = (1.0, -1.0)  # d_k: state 0 moves right, state 1 left


@dataclass
class TrackParams:
    """The true process of ``data=recurrent`` (module docstring): speed v, noise sigma, track half-length L,
    sharpness s of the turn, floor epsilon of spontaneous turns."""

    speed: float
    noise_std: float
    half_length: float
    sharpness: float
    floor: float

    n_states = 2

    @property
    def initial(self) -> torch.Tensor:
        """(K,) uniform p(c_1)."""
        return torch.full((self.n_states,), 1.0 / self.n_states)

    def turn_probability(self, position: torch.Tensor, state: int) -> torch.Tensor:
        """p(c_t != c_{t-1} | c_{t-1} = state, x_{t-1} = position), elementwise."""
        return torch.sigmoid(self.sharpness * (DIRECTIONS[state] * position - self.half_length)).clamp_min(self.floor)

    def log_transitions(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, 1) -> (B, T, K, K) log p(c_t = j | c_{t-1} = i, x_{t-1}) (row 0 unused: a copy of row 1)."""
        previous = torch.cat([x[:, :1, 0], x[:, :-1, 0]], 1)  # (B, T): x_{t-1}
        turn = torch.stack([self.turn_probability(previous, k) for k in range(2)], -1)  # (B, T, K)
        table = torch.stack([torch.stack([1 - turn[..., 0], turn[..., 0]], -1),
                             torch.stack([turn[..., 1], 1 - turn[..., 1]], -1)], -2)  # (B, T, K_prev, K)
        return table.log()

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, 1) -> (B, T, K): log N(x_t - x_{t-1}; v_k, sigma^2); the first step's uniform density
        log(1 / 2L) for every state."""
        step = (x[:, 1:, 0:1] - x[:, :-1, 0:1]) - torch.tensor([self.speed * d for d in DIRECTIONS]).to(x)
        inc = -0.5 * (step / self.noise_std) ** 2 - math.log(self.noise_std) - 0.5 * math.log(2 * math.pi)
        first = x.new_full((x.shape[0], 1, self.n_states), -math.log(2 * self.half_length))
        return torch.cat([first, inc], 1)

    def sample(self, n_seqs: int, seq_len: int, generator: torch.Generator) -> SequenceData:
        """n_seqs tracks of seq_len steps: positions (N, T, 1) and states (N, T)."""
        x = torch.empty(n_seqs, seq_len)
        states = torch.empty(n_seqs, seq_len, dtype=torch.long)
        x[:, 0] = (2 * torch.rand(n_seqs, generator=generator) - 1) * self.half_length
        states[:, 0] = torch.randint(2, (n_seqs,), generator=generator)
        speeds = torch.tensor([self.speed * d for d in DIRECTIONS])
        for t in range(1, seq_len):
            prev = states[:, t - 1]
            turn = torch.where(prev == 0, self.turn_probability(x[:, t - 1], 0), self.turn_probability(x[:, t - 1], 1))
            flip = torch.rand(n_seqs, generator=generator) < turn
            states[:, t] = torch.where(flip, 1 - prev, prev)
            x[:, t] = x[:, t - 1] + speeds[states[:, t]] + self.noise_std * torch.randn(n_seqs, generator=generator)
        return SequenceData(x[..., None], torch.full((n_seqs,), seq_len, dtype=torch.long), states)


def make_recurrent(cfg: RecurrentDataConfig, seed: int = 0) -> SyntheticData:
    """Seeded ``data=recurrent``: the parameters of ``cfg`` (fixed, not drawn), then train, then validation tracks."""
    params = TrackParams(cfg.speed, cfg.noise_std, cfg.half_length, cfg.sharpness, cfg.floor)
    return SyntheticData(*draw_splits(params, cfg, seed), params)
