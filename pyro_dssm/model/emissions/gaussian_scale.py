r"""``gaussian_scale``: :math:`p(x_t \mid c_t) = \mathcal N(x_t;\ \mu(c_t), \mathrm{diag}\,s(c_t)^2)`.

One network (MLP K -> H -> 2D) gives the mean and a per-dimension scale
:math:`s = \mathrm{softplus}(\cdot) + s_{\min}` for each state, so regimes may
differ in noise level as well as in position. With hard states: a diagonal
Gaussian HMM. The scale head starts at ``model.noise_std``; the floor
:math:`s_{\min}` keeps a state from collapsing onto a single point (unbounded likelihood).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.networks import mlp

SCALE_FLOOR = 1e-3  # in units of the standardised features: below any noise level worth modelling


def inverse_softplus(y: float) -> float:
    """x with softplus(x) = y > 0."""
    return y + math.log(-math.expm1(-y))


def diagonal_normal_log_prob(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_d \log \mathcal N(x_d; \mu_d, s_d^2)` over the last dim (broadcasting)."""
    z = (x - mean) / scale
    return (-0.5 * z.pow(2) - scale.log()).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi)


class GaussianScaleEmission(Emission):
    """Parameterizes mean and per-dimension scale of p(x_t | c_t): (..., K) -> (..., D), (..., D)."""

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, noise_std: float):
        super().__init__(n_states, obs_dim)
        self.net = mlp(n_states, hidden_dim, 2 * obs_dim)
        with torch.no_grad():  # start at scale = noise_std, the fixed-sigma model's value
            self.net[2].bias[obs_dim:] = inverse_softplus(max(noise_std - SCALE_FLOOR, 1e-3))

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(state).split(self.obs_dim, -1)
        return mean, nn.functional.softplus(raw) + SCALE_FLOOR

    def log_prob(self, x, states):
        return diagonal_normal_log_prob(x, *self(states))

    def table(self, x):
        mean, scale = self(self.one_hot(x))  # (K, D) each
        return diagonal_normal_log_prob(x[..., None, :], mean, scale)  # (B, T, K)

    def sample(self, states, generator=None):
        mean, scale = self(self.one_hot(self.net[0].weight))
        noise = torch.randn(*states.shape, self.obs_dim, generator=generator).to(mean)
        return mean[states] + scale[states] * noise

    def n_parameters(self) -> int:
        return 2 * self.n_states * self.obs_dim
