r"""``gaussian_scale``: :math:`p(x_t \mid c_t) = \mathcal N(x_t;\ \mu(c_t), \mathrm{diag}\,s(c_t)^2)`.

One network (MLP K -> H -> 2D) gives the mean and a per-dimension scale
:math:`s = \mathrm{softplus}(\cdot) + s_{\min}` for each state, so regimes may
differ in noise level as well as in position. With hard states: a diagonal
Gaussian HMM, which is also its classical init. The scale head starts at ``model.noise_std``;
the floor :math:`s_{\min}` keeps a state from collapsing onto a single point (unbounded likelihood).
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.emissions.statistics import SCALE_FLOOR, diagonal_normal, inverse_softplus, weighted_moments
from pyro_dssm.model.networks import fit_output_layer, mlp


class GaussianScaleEmission(Emission):
    """Parameterizes mean and per-dimension scale of p(x_t | c_t): (..., K) -> (..., D), (..., D)."""

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, start_scale: float = 1.0):
        super().__init__(n_states, obs_dim, hidden_dim)
        self.net = mlp(n_states, hidden_dim, 2 * obs_dim)
        with torch.no_grad():  # start at scale = start_scale (model.noise_std), the fixed-sigma model's value
            self.net[2].bias[obs_dim:] = inverse_softplus(max(start_scale - SCALE_FLOOR, 1e-3))

    @classmethod
    def options(cls, config) -> dict:
        return {"start_scale": config.noise_std}

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(state).split(self.obs_dim, -1)
        return mean, nn.functional.softplus(raw) + SCALE_FLOOR

    def distribution(self, states, context):
        return diagonal_normal(*self(states))

    def m_step(self, x, mask, weights):
        mean, var = weighted_moments(x, weights * mask[..., None])
        return {"mean": mean, "scale": var.sqrt().clamp_min(2 * SCALE_FLOOR)}

    def classical_distribution(self, params, context):
        return diagonal_normal(params["mean"], params["scale"])

    def fit_to(self, params):
        eye = self.one_hot(params["mean"])
        target = torch.cat([params["mean"], inverse_softplus(params["scale"] - SCALE_FLOOR)], -1)
        return fit_output_layer(self.net, eye, target)

    def n_parameters(self) -> int:
        return 2 * self.n_states * self.obs_dim
