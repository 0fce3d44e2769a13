r"""``autoregressive_full``: the switching AR(p) emission with a full noise covariance per state.

For t > p, with the history :math:`h_t = [x_{t-1}, \dots, x_{t-p}]` (pD values),

.. math::

    p(x_t \mid c_t, h_t) = \mathcal N\big(x_t;\ A_{c_t} h_t + b_{c_t} + g(c_t, h_t),\ L_{c_t} L_{c_t}^\top\big)

with per-state linear maps :math:`A_k` (D, pD) and offsets :math:`b_k` as in ``autoregressive``
(:mod:`pyro_dssm.model.emissions.autoregressive`), an MLP correction :math:`g` of the mean only (its output layer
starts at zero), and a lower-triangular Cholesky factor per state: diagonal
:math:`\mathrm{softplus}(r_k) + s_{\min}`, entries below it :math:`l_k` as they are. The innovations of
channels that move together (joint angles, sensor axes) are correlated within a regime; a diagonal AR
family must spend states on that. With hard states and g = 0: a linear AR-HMM with full-covariance noise
(dynamax's ``LinearAutoregressiveHMM``), which is also the classical init (:meth:`AutoregressiveFullEmission.m_step`).

Relaxed states enter linearly: :math:`\sum_k c_k (A_k h_t + b_k)`, :math:`\mathrm{softplus}(\sum_k c_k r_k)`,
:math:`\sum_k c_k l_k`. The first p steps keep the diagonal initial Gaussian of ``autoregressive``
:math:`\mathcal N(m_{c_t}, \mathrm{diag}\, s_{c_t}^2)`. The noise does not depend on the history (one factor
per state), so the exact table inverts K factors, not one per step.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pyro_dssm.model.emissions.autoregressive import AutoregressiveEmission
from pyro_dssm.model.emissions.base import broadcast_states
from pyro_dssm.model.emissions.gaussian_full import COVARIANCE_RIDGE, multivariate_normal
from pyro_dssm.model.emissions.statistics import PRIOR_WEIGHT, SCALE_FLOOR, diagonal_normal, inverse_softplus
from pyro_dssm.model.networks import mlp


def ar_table(mean: torch.Tensor, scale_tril: torch.Tensor, first_mean: torch.Tensor, first_scale: torch.Tensor,
             first: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""x (B, T, D) -> (B, T, K): :math:`\log \mathcal N(x_t; \mu_{tk}, L_k L_k^\top)` for the steps after the first p,
    :math:`\log \mathcal N(x_t; m_k, \mathrm{diag}\, s_k^2)` where ``first`` (T,) is True.

    ``mean`` (B, T, K, D) the per-step, per-state means; ``scale_tril`` (K, D, D); ``first_mean``,
    ``first_scale`` (K, D). :math:`L_k^{-1}` from K triangular solves, applied to every step's residual.
    """
    eye = torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
    inverse = torch.linalg.solve_triangular(scale_tril, eye, upper=False)  # (K, D, D)
    z = torch.einsum("kij,btkj->btki", inverse, x[:, :, None] - mean)  # (B, T, K, D)
    log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
    later = -0.5 * z.pow(2).sum(-1) - log_det - 0.5 * x.shape[-1] * math.log(2 * math.pi)
    start = diagonal_normal(first_mean, first_scale).log_prob(x[:, :, None])  # (B, T, K)
    return torch.where(first[None, :, None], start, later)


class AutoregressiveFullEmission(AutoregressiveEmission):
    """Parameterizes p(x_t | c_t, x_{t-p:t-1}) (module docstring): linear AR per state + mean correction,
    full-covariance noise per state."""

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, order: int = 1, start_scale: float = 1.0,
                 input_dim: int = 0):
        super().__init__(n_states, obs_dim, hidden_dim, order=order, start_scale=start_scale, input_dim=input_dim)
        K, D = n_states, obs_dim
        below = torch.tril_indices(D, D, offset=-1)
        self.register_buffer("rows", below[0], persistent=False)
        self.register_buffer("cols", below[1], persistent=False)
        self.raw_tril = nn.Parameter(torch.zeros(K, D * (D - 1) // 2))  # l_k, below the diagonal
        self.net = mlp(K + order * D + input_dim, hidden_dim, D)  # g: the mean's correction only
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def cholesky(self, raw_scale: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        """raw_scale (..., D), lower (..., D(D-1)/2) -> (..., D, D): softplus(raw) + s_min on the diagonal."""
        scale_tril = torch.diag_embed(nn.functional.softplus(raw_scale) + SCALE_FLOOR)
        scale_tril[..., self.rows, self.cols] = lower
        return scale_tril

    def distribution(self, states, context):
        states, context = broadcast_states(states, context)
        hist, first = context[..., :-1], context[..., -1:] > 0.5
        lin = (states.unsqueeze(-1) * self.per_state_linear(hist)).sum(-2)
        mean = torch.where(first, states @ self.init_mean, lin + self.net(torch.cat([states, hist], -1)))
        raw = torch.where(first, states @ self.init_raw_scale, states @ self.raw_scale)
        lower = (states @ self.raw_tril) * ~first  # the first steps' Gaussian is diagonal
        return multivariate_normal(mean, self.cholesky(raw, lower))

    def complete_table(self, x, inputs=None):
        """:meth:`Emission.complete_table` by :func:`ar_table`: the MLP once per step and state, K factors inverted."""
        context = self.context_of(x, inputs)
        hist = context[..., :-1]
        mean = self.per_state_linear(hist) + self._correction_per_state(hist)  # (B, T, K, D)
        first_scale = nn.functional.softplus(self.init_raw_scale) + SCALE_FLOOR
        return ar_table(mean, self.cholesky(self.raw_scale, self.raw_tril), self.init_mean, first_scale,
                        context[0, :, -1] > 0.5, x)

    def hard_log_prob(self, x, states, inputs=None):
        """The table gathered at one-hot ``states`` (B, T, K): K Cholesky factors, not one per step."""
        return (self.table(x, inputs) * states).sum(-1)

    def m_step(self, x, mask, weights, inputs=None, ridge: float = 1e-3):
        r"""The linear AR(p)-HMM of ``autoregressive``'s M-step with full-covariance noise: each state's
        weighted residual covariance, shrunk by ``PRIOR_WEIGHT`` pseudo-points towards the pooled one, plus
        ``COVARIANCE_RIDGE`` on its diagonal; ``scale_tril`` its Cholesky factor (K, D, D)."""
        fit = self.regression(x, mask, weights, ridge, inputs)
        resid, w_ar = fit.pop("resid"), fit.pop("weights")
        scatter = torch.einsum("btk,btki,btkj->kij", w_ar, resid, resid)
        pooled = torch.einsum("btki,btkj->ij", resid, resid) / resid[..., 0].numel()
        cov = (scatter + PRIOR_WEIGHT * pooled) / (w_ar.sum((0, 1))[:, None, None] + PRIOR_WEIGHT)
        cov = cov + COVARIANCE_RIDGE * torch.eye(self.obs_dim, dtype=cov.dtype, device=cov.device)
        return {**fit, "scale_tril": torch.linalg.cholesky(cov).to(x)}

    def classical_distribution(self, params, context):
        hist, first = context[..., 0, :-1], context[..., -1:] > 0.5  # first (..., 1, 1) against (..., K, D)
        u = torch.cat([hist, hist.new_ones(*hist.shape[:-1], 1)], -1)  # [h_t, 1]
        mean = torch.where(first, params["init_mean"], torch.einsum("kdj,...j->...kd", params["coef"], u))
        scale_tril = torch.where(first[..., None], torch.diag_embed(params["init_scale"]), params["scale_tril"])
        return multivariate_normal(mean, scale_tril)

    def complete_classical_table(self, params, x, inputs=None):
        context = self.context_of(x, inputs)
        u = torch.cat([context[..., :-1], torch.ones_like(context[..., :1])], -1)
        mean = torch.einsum("kdj,btj->btkd", params["coef"], u)
        return ar_table(mean, params["scale_tril"], params["init_mean"], params["init_scale"],
                        context[0, :, -1] > 0.5, x)

    def copy_noise(self, params) -> None:
        """The classical Cholesky factors (K, D, D) into the network's: their diagonal -> r_k, below it -> l_k."""
        scale_tril = params["scale_tril"]
        self.raw_scale.copy_(inverse_softplus(scale_tril.diagonal(dim1=-2, dim2=-1) - SCALE_FLOOR))
        self.raw_tril.copy_(scale_tril[:, self.rows, self.cols])

    def n_parameters(self) -> int:
        """A_k, b_k, the Cholesky factors' lower triangles and the initial m_k, s_k (the MLP correction not counted)."""
        K, D = self.n_states, self.obs_dim
        return K * (D * (self.order * D + self.input_dim) + D + D * (D + 1) // 2 + (2 * D if self.order else 0))
