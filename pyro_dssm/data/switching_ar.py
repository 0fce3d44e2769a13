r"""Switching linear AR(1) data: regimes with one mean and different dynamics (``data=switching_ar``).

The generating process, K states and D dims:

.. math::

    c_1 \sim \mathrm{Uniform}(K), \qquad c_t \mid c_{t-1} \sim \mathrm{Categorical}(P_{c_{t-1}}),

    x_1 \mid c_1 = k \sim \mathcal N\big(m,\ s_k^2 I_D\big), \qquad s_k = \sigma_k / \sqrt{1 - r^2},

    x_t \mid c_t = k, x_{t-1} \sim \mathcal N\big(m + A_k (x_{t-1} - m),\ \sigma_k^2 I_D\big),

that is :math:`x_t = A_k x_{t-1} + b_k + \varepsilon_t` with :math:`b_k = (I - A_k) m`. Each
:math:`A_k = r\, Q R(\theta_k) Q^\top` rotates every pair of coordinates by :math:`\theta_k` (an odd D
leaves the last one unrotated), damped by ``damping`` :math:`r < 1`, in a random orthonormal basis Q
shared by the states. So every state's process is stable (all :math:`|\mathrm{eig}(A_k)| = r`), its
fixed point is the same m, and because :math:`A_k / r` is orthogonal its stationary law is
:math:`\mathcal N(m, s_k^2 I)`: x_1 is drawn from the stationary law of its state (no burn-in, and
:math:`\log p(x_1 \mid c_1)` is exact). Everything is linear with zero-mean noise, so
:math:`E[x_t \mid c_{1:T}] = m` at every step: a mean-only Gaussian HMM sees nothing; the rotation
angle and the noise level tell the states apart.

Drawn from the seed: :math:`m \sim \mathcal N(0, I_D)`, Q, and two random orders of the states for
:math:`\theta_k` evenly spaced on ``[-max_angle, max_angle]`` and
:math:`\sigma_k = \texttt{noise\_std} \cdot \texttt{noise\_spread}^{u_k}`, :math:`u_k` evenly spaced
on ``[-1/2, 1/2]``. Transitions are sticky (:func:`~pyro_dssm.data.chain.sticky_transition`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_dssm.config import SwitchingARDataConfig
from pyro_dssm.data.chain import sample_states, sticky_transition
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.data.synthetic import SyntheticData


@dataclass
class SwitchingARParams:
    r"""Parameters of a switching linear AR(1) HMM with isotropic noise per state.

    Attributes:
        initial: (K,) p(c_1).
        transition: (K, K) row-stochastic, ``transition[i, j] = p(c_t=j | c_{t-1}=i)``.
        mean: (D,) m, the fixed point of every state.
        dynamics: (K, D, D) A_k.
        noise_std: (K,) :math:`\sigma_k`, the innovation sigma of each state.
        initial_std: (K,) :math:`s_k`, the sigma of x_1 given c_1 = k.
    """

    initial: torch.Tensor
    transition: torch.Tensor
    mean: torch.Tensor
    dynamics: torch.Tensor
    noise_std: torch.Tensor
    initial_std: torch.Tensor

    @property
    def n_states(self) -> int:
        return self.dynamics.shape[0]

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        r"""(B, T, D) -> (B, T, K): :math:`\log p(x_t \mid c_t = k, x_{t-1})` (t = 1: :math:`\log p(x_1 \mid c_1 = k)`).

        Padded steps get finite values that a mask ignores.
        """
        B, T, D = x.shape
        m = self.mean.to(x)
        pred = m + torch.einsum("kij,btj->btki", self.dynamics.to(x), x[:, :-1] - m)  # (B, T-1, K, D)
        loc = torch.cat([m.expand(B, 1, self.n_states, D), pred], 1)  # (B, T, K, D)
        scale = torch.cat([self.initial_std.to(x).expand(B, 1, -1), self.noise_std.to(x).expand(B, T - 1, -1)], 1)
        sq = (x[:, :, None, :] - loc).pow(2).sum(-1)  # (B, T, K)
        return -0.5 * sq / scale**2 - D * (scale.log() + 0.5 * math.log(2 * math.pi))

    def sample(self, n_seqs: int, seq_len: int, generator: torch.Generator) -> SequenceData:
        """``n_seqs`` sequences of ``seq_len`` steps: the states, then the noise (N, T, D), then x step by step."""
        states = sample_states(self.initial, self.transition, n_seqs, seq_len, generator)
        noise = torch.randn(n_seqs, seq_len, self.mean.shape[0], generator=generator)
        x = torch.empty_like(noise)
        x[:, 0] = self.mean + self.initial_std[states[:, 0], None] * noise[:, 0]
        for t in range(1, seq_len):
            k = states[:, t]
            drift = (self.dynamics[k] @ (x[:, t - 1] - self.mean)[..., None]).squeeze(-1)  # (N, D)
            x[:, t] = self.mean + drift + self.noise_std[k, None] * noise[:, t]
        return SequenceData(x, torch.full((n_seqs,), seq_len, dtype=torch.long), states)


def rotation_blocks(angle: float, dim: int) -> torch.Tensor:
    """(D, D) block-diagonal rotation by ``angle`` in coordinates (0, 1), (2, 3), ...; an odd D keeps the last."""
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.eye(dim)
    for i in range(0, dim - 1, 2):
        rot[i:i + 2, i:i + 2] = torch.tensor([[c, -s], [s, c]])
    return rot


def make_switching_ar_params(n_states: int, obs_dim: int, transition_bias: float, noise_std: float, damping: float,
                             max_angle: float, noise_spread: float, generator: torch.Generator) -> SwitchingARParams:
    """Random parameters of the process in the module docstring (draws: m, Q, the two orders of the states)."""
    K, D = n_states, obs_dim
    mean = torch.randn(D, generator=generator)
    q, r = torch.linalg.qr(torch.randn(D, D, generator=generator))
    basis = q * torch.sign(torch.diagonal(r))  # the QR of a Gaussian matrix, signs fixed: a Haar-random Q
    angles = torch.linspace(-max_angle, max_angle, K)[torch.randperm(K, generator=generator)]
    levels = torch.linspace(-0.5, 0.5, K)[torch.randperm(K, generator=generator)]
    dynamics = torch.stack([damping * basis @ rotation_blocks(float(a), D) @ basis.T for a in angles])
    sigma = noise_std * noise_spread**levels
    return SwitchingARParams(torch.full((K,), 1.0 / K), sticky_transition(K, transition_bias), mean, dynamics,
                             sigma, sigma / math.sqrt(1.0 - damping**2))


def make_switching_ar(n_states: int = 3, obs_dim: int = 2, seq_len: int = 200, n_train: int = 300, n_val: int = 100,
                      transition_bias: float = 0.95, noise_std: float = 0.3, damping: float = 0.95,
                      max_angle: float = 0.5, noise_spread: float = 1.5, seed: int = 0) -> SyntheticData:
    """Seeded ``data=switching_ar``: parameters, then train, then validation sequences (x float32 (N, T, D))."""
    SwitchingARDataConfig(n_states=n_states, obs_dim=obs_dim, seq_len=seq_len, n_train=n_train, n_val=n_val,
                          transition_bias=transition_bias, noise_std=noise_std, damping=damping,
                          max_angle=max_angle, noise_spread=noise_spread)  # ValueError naming a bad argument
    gen = torch.Generator().manual_seed(seed)
    params = make_switching_ar_params(n_states, obs_dim, transition_bias, noise_std, damping, max_angle,
                                      noise_spread, gen)
    return SyntheticData(params.sample(n_train, seq_len, gen), params.sample(n_val, seq_len, gen), params)
