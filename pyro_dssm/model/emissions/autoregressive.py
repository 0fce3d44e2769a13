r"""``autoregressive``: a switching, non-linear AR(p) emission, the neural version of an AR-HMM.

For t > p, with the history :math:`h_t = [x_{t-1}, \dots, x_{t-p}]` (pD values),

.. math::

    p(x_t \mid c_t, h_t) = \mathcal N\big(x_t;\ A_{c_t} h_t + b_{c_t} + g_\mu(c_t, h_t),\
        \mathrm{diag}\,(\mathrm{softplus}(r_{c_t} + g_s(c_t, h_t)) + s_{\min})^2\big)

with per-state linear maps :math:`A_k` (D, pD), offsets :math:`b_k` and scales
:math:`r_k` (a linear path that holds a linear AR-HMM with diagonal noise exactly)
plus an MLP correction :math:`g = (g_\mu, g_s)` of [state, history] whose output
layer starts at zero (so the model starts as the linear AR-HMM of its classical init,
:meth:`AutoregressiveEmission.m_step`). Relaxed states enter linearly:
:math:`\sum_k c_k (A_k h_t + b_k)` and :math:`\sum_k c_k r_k`, and as the MLP's input.

**The first p steps** have no complete history. They get their own state-dependent
diagonal Gaussian, :math:`p(x_t \mid c_t) = \mathcal N(m_{c_t}, \mathrm{diag}\,s_{c_t}^2)`
for :math:`t \le p`: the exact likelihood of a model whose first p observations
are drawn from a per-state initial density (as the classical AR-HMM conditions on
its first observations, but without dropping them from log p(X)). Padding with zeros
would instead treat a missing past as an observed zero and bias the AR fit.

The context of step t (:meth:`AutoregressiveEmission.context`) is :math:`[h_t, [t \le p]]`:
every factor is a function of (c_t, x_{<t}) only, so the table is the exact HMM's.

**Inputs** (``model.emission_inputs=true``, a GLM-HMM): the exogenous inputs u_t (U values,
:mod:`pyro_dssm.model.inputs`) join the history as regressors, :math:`h_t = [x_{t-1}, \dots, x_{t-p}, u_t]`:
:math:`A_k` is then (D, pD + U) and the MLP reads them too; the classical M-step regresses on them as well. The
first p steps' Gaussian does not read them. Given u, every factor is still a function of (c_t, x_{<t}, u_t).
Order p = 0 reads no past: with inputs, a Gaussian GLM-HMM (:math:`h_t = u_t`); without, a per-state diagonal
Gaussian.
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_dssm.model.emissions.base import Emission, broadcast_states
from pyro_dssm.model.emissions.statistics import (PRIOR_WEIGHT, SCALE_FLOOR, diagonal_normal, inverse_softplus,
                                                  weighted_moments)
from pyro_dssm.model.networks import mlp


def history(x: torch.Tensor, order: int) -> torch.Tensor:
    """x (B, T, D) -> (B, T, pD) ``[x_{t-1}, ..., x_{t-p}]``, zeros before the start (never used there)."""
    T = x.shape[1]
    return torch.cat([x[..., :0]] + [nn.functional.pad(x, (0, 0, lag, 0))[:, :T] for lag in range(1, order + 1)], -1)


class AutoregressiveEmission(Emission):
    """Parameterizes p(x_t | c_t, x_{t-p:t-1}) (module docstring): linear AR per state + MLP correction."""

    accepts_inputs = True

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, order: int = 1, start_scale: float = 1.0,
                 input_dim: int = 0):
        super().__init__(n_states, obs_dim, hidden_dim)
        if not isinstance(order, int) or order < 0:
            raise ValueError(f"autoregressive order must be an integer >= 0, got {order!r}")
        K, D = n_states, obs_dim
        self.order, self.input_dim = order, input_dim
        raw_start = float(inverse_softplus(max(start_scale - SCALE_FLOOR, 1e-3)))
        self.weight = nn.Parameter(torch.zeros(K, D, order * D + input_dim))  # A_k
        self.bias = nn.Parameter(torch.randn(K, D) * 0.1)  # b_k
        self.raw_scale = nn.Parameter(torch.full((K, D), raw_start))  # r_k
        self.init_mean = nn.Parameter(torch.randn(K, D) * 0.1)  # m_k, t <= p
        self.init_raw_scale = nn.Parameter(torch.full((K, D), raw_start))  # s_k, t <= p
        self.net = mlp(K + order * D + input_dim, hidden_dim, 2 * D)  # g
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    @classmethod
    def options(cls, config) -> dict:
        return {"order": config.ar_order, "start_scale": config.noise_std,
                "input_dim": config.input_dim if config.emission_inputs else 0}

    def context(self, x, inputs=None):
        """x (B, T, D) [, inputs (B, T, U)] -> (B, T, pD [+ U] + 1): the regressors h_t and [t <= p]."""
        first = torch.arange(x.shape[1], device=x.device) < self.order  # (T,)
        regressors = [history(x, self.order)] + ([inputs.to(x.dtype)] if self.input_dim else [])
        return torch.cat([*regressors, first.to(x.dtype)[:, None].expand(*x.shape[:2], 1)], -1)

    def per_state_linear(self, hist: torch.Tensor) -> torch.Tensor:
        """hist (..., pD [+ U]) -> (..., K, D): A_k h + b_k for every state."""
        K, D = self.n_states, self.obs_dim
        return (hist @ self.weight.reshape(K * D, -1).T).unflatten(-1, (K, D)) + self.bias

    def distribution(self, states, context):
        states, context = broadcast_states(states, context)
        hist, first = context[..., :-1], context[..., -1:] > 0.5
        lin = (states.unsqueeze(-1) * self.per_state_linear(hist)).sum(-2)
        corr_mean, corr_scale = self.net(torch.cat([states, hist], -1)).split(self.obs_dim, -1)
        mean = torch.where(first, states @ self.init_mean, lin + corr_mean)
        raw = torch.where(first, states @ self.init_raw_scale, states @ self.raw_scale + corr_scale)
        return diagonal_normal(mean, nn.functional.softplus(raw) + SCALE_FLOOR)

    def complete_table(self, x, inputs=None):
        """:meth:`Emission.complete_table` without K copies of the history through the MLP (:meth:`_correction_per_state`)."""
        D = x.shape[-1]
        context = self.context_of(x, inputs)
        hist, first = context[..., :-1], context[..., -1:, None] > 0.5  # first (B, T, 1, 1) against (B, T, K, D)
        corr_mean, corr_scale = self._correction_per_state(hist).split(D, -1)
        mean = torch.where(first, self.init_mean, self.per_state_linear(hist) + corr_mean)
        raw = torch.where(first, self.init_raw_scale, self.raw_scale + corr_scale)
        return diagonal_normal(mean, nn.functional.softplus(raw) + SCALE_FLOOR).log_prob(x[:, :, None])

    def _correction_per_state(self, hist: torch.Tensor) -> torch.Tensor:
        """hist (B, T, pD) -> (B, T, K, 2D): the MLP g([e_k, h_t]) for every one-hot state e_k.

        The first layer of [e_k, h] is W_h h + b + W_e[:, k]: the history's part is computed once
        and each state adds its own column, instead of running the layer on K copies of h.
        """
        first, activation, last = self.net
        K = self.n_states
        hidden = (hist @ first.weight[:, K:].T + first.bias)[:, :, None, :] + first.weight[:, :K].T  # (B, T, K, H)
        return last(activation(hidden))

    def m_step(self, x, mask, weights, inputs=None, ridge: float = 1e-3):
        r"""Linear AR(p)-HMM with diagonal noise, weighted least squares (in float64):
        :math:`W_k = (\sum_t w_{tk} y_t u_t^\top)(\sum_t w_{tk} u_t u_t^\top + \lambda I)^{-1}`, :math:`u_t = [h_t, 1]`;
        the first p steps' Gaussian from their weighted moments."""
        fit = self.regression(x, mask, weights, ridge, inputs)
        resid, w_ar = fit.pop("resid"), fit.pop("weights")
        var = (torch.einsum("btk,btkd->kd", w_ar, resid.pow(2)) + PRIOR_WEIGHT * resid.pow(2).mean((0, 1, 2))) \
            / (w_ar.sum((0, 1))[:, None] + PRIOR_WEIGHT)
        return {**fit, "scale": var.sqrt().clamp_min(2 * SCALE_FLOOR).to(x)}

    def regression(self, x, mask, weights, ridge: float, inputs=None) -> dict[str, torch.Tensor]:
        """The M-step's shared part: ``coef`` (K, D, pD [+ U] + 1), the first steps' ``init_mean`` / ``init_scale`` (K, D),
        and, in float64, the residuals ``resid`` (B, T, K, D) of every state's fit with the regression's weights
        ``weights`` (B, T, K) (0 on the first p steps and where a target or its history has a missing cell)."""
        observed = ~torch.isnan(x)
        # NaN cells: the regression uses the steps whose target and history are complete (the rest weigh 0)
        complete = observed.all(-1)
        usable = complete & torch.stack([complete] + [nn.functional.pad(complete, (lag, 0), value=True)[:, :x.shape[1]]
                                                      for lag in range(1, self.order + 1)]).all(0)
        x_first = x.double()
        x = x.nan_to_num(0.0)
        context = self.context_of(x.double(), inputs)
        u, first = torch.cat([context[..., :-1], torch.ones_like(context[..., :1])], -1), context[0, :, -1] > 0.5
        w = (weights * mask[..., None]).double()
        w_ar = w * (~first)[None, :, None] * usable[..., None]
        gram = torch.einsum("btk,bti,btj->kij", w_ar, u, u) + ridge * torch.eye(u.shape[-1], dtype=u.dtype)
        cross = torch.einsum("btk,btd,btj->kdj", w_ar, x.double(), u)  # (K, D, pD + 1)
        coef = torch.linalg.solve(gram, cross.transpose(1, 2)).transpose(1, 2)
        resid = x.double()[:, :, None] - torch.einsum("kdj,btj->btkd", coef, u)
        init_mean, init_var = weighted_moments(torch.where(first[None, :, None], x_first, 0.0),
                                               w * first[None, :, None])
        return {"coef": coef.to(x), "init_mean": init_mean.to(x),
                "init_scale": init_var.sqrt().clamp_min(2 * SCALE_FLOOR).to(x), "resid": resid, "weights": w_ar}

    def classical_distribution(self, params, context):
        hist, first = context[..., 0, :-1], context[..., -1:] > 0.5  # first (..., 1, 1) against (..., K, D)
        u = torch.cat([hist, hist.new_ones(*hist.shape[:-1], 1)], -1)  # [h_t, 1]
        mean = torch.where(first, params["init_mean"], torch.einsum("kdj,...j->...kd", params["coef"], u))
        return diagonal_normal(mean, torch.where(first, params["init_scale"], params["scale"]))

    def fit_to(self, params):
        """The linear path takes A_k, b_k, the noise (:meth:`copy_noise`) and the first steps' Gaussian exactly; the
        MLP correction is zero."""
        with torch.no_grad():
            self.weight.copy_(params["coef"][..., :-1])
            self.bias.copy_(params["coef"][..., -1])
            self.copy_noise(params)
            self.init_mean.copy_(params["init_mean"])
            self.init_raw_scale.copy_(inverse_softplus(params["init_scale"] - SCALE_FLOOR))
            nn.init.zeros_(self.net[2].weight)
            nn.init.zeros_(self.net[2].bias)
        return None

    def copy_noise(self, params) -> None:
        """The classical noise into the network's: sigma_k (K, D) -> r_k."""
        self.raw_scale.copy_(inverse_softplus(params["scale"] - SCALE_FLOOR))

    def n_parameters(self) -> int:
        """Of the linear AR-HMM part: A_k (on the inputs too), b_k, r_k and the initial m_k, s_k (the MLP correction
        not counted)."""
        K, D = self.n_states, self.obs_dim
        return K * (D * (self.order * D + self.input_dim) + 2 * D + (2 * D if self.order else 0))
