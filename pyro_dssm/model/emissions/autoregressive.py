r"""``autoregressive``: a switching, non-linear AR(p) emission, the neural version of an AR-HMM.

For t > p, with the history :math:`h_t = [x_{t-1}, \dots, x_{t-p}]` (pD values),

.. math::

    p(x_t \mid c_t, h_t) = \mathcal N\big(x_t;\ A_{c_t} h_t + b_{c_t} + g_\mu(c_t, h_t),\
        \mathrm{diag}\,(\mathrm{softplus}(r_{c_t} + g_s(c_t, h_t)) + s_{\min})^2\big)

with per-state linear maps :math:`A_k` (D, pD), offsets :math:`b_k` and scales
:math:`r_k` (a linear path that holds a linear AR-HMM with diagonal noise exactly)
plus an MLP correction :math:`g = (g_\mu, g_s)` of [state, history] whose output
layer starts at zero (so the model starts as the linear AR-HMM the init fits,
:mod:`pyro_dssm.inference.init_families`). Relaxed states enter linearly:
:math:`\sum_k c_k (A_k h_t + b_k)` and :math:`\sum_k c_k r_k`, and as the MLP's input.

**The first p steps** have no complete history. They get their own state-dependent
diagonal Gaussian, :math:`p(x_t \mid c_t) = \mathcal N(m_{c_t}, \mathrm{diag}\,s_{c_t}^2)`
for :math:`t \le p`: the exact likelihood of a model whose first p observations
are drawn from a per-state initial density (as the classical AR-HMM conditions on
its first observations, but without dropping them from log p(X)). Padding with zeros
would instead treat a missing past as an observed zero and bias the AR fit.

With observed history every factor is a function of (c_t, x_{<t}) only, so
:meth:`AutoregressiveEmission.table` is the exact HMM table and forward, Viterbi,
marginals and log p(X) are exact.
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.networks import mlp
from pyro_dssm.model.emissions.gaussian_scale import SCALE_FLOOR, diagonal_normal_log_prob, inverse_softplus


def history(x: torch.Tensor, order: int) -> torch.Tensor:
    """x (B, T, D) -> (B, T, pD) ``[x_{t-1}, ..., x_{t-p}]``, zeros before the start (never used there)."""
    T = x.shape[1]
    return torch.cat([nn.functional.pad(x, (0, 0, lag, 0))[:, :T] for lag in range(1, order + 1)], -1)


class AutoregressiveEmission(Emission):
    """Parameterizes p(x_t | c_t, x_{t-p:t-1}) (module docstring): linear AR per state + MLP correction."""

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, noise_std: float, order: int = 1):
        super().__init__(n_states, obs_dim)
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"autoregressive order must be an integer >= 1, got {order!r}")
        K, D = n_states, obs_dim
        self.order = order
        start_scale = inverse_softplus(max(noise_std - SCALE_FLOOR, 1e-3))
        self.weight = nn.Parameter(torch.zeros(K, D, order * D))  # A_k
        self.bias = nn.Parameter(torch.randn(K, D) * 0.1)  # b_k
        self.raw_scale = nn.Parameter(torch.full((K, D), start_scale))  # r_k
        self.init_mean = nn.Parameter(torch.randn(K, D) * 0.1)  # m_k, t <= p
        self.init_raw_scale = nn.Parameter(torch.full((K, D), start_scale))  # s_k, t <= p
        self.net = mlp(K + order * D, hidden_dim, 2 * D)  # g
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    def per_state_linear(self, hist: torch.Tensor) -> torch.Tensor:
        """hist (..., pD) -> (..., K, D): A_k h + b_k for every state."""
        K, D = self.n_states, self.obs_dim
        return (hist @ self.weight.reshape(K * D, -1).T).unflatten(-1, (K, D)) + self.bias

    def moments(self, states: torch.Tensor, hist: torch.Tensor, first: torch.Tensor):
        """Mean and scale (..., D) for states (..., K) on the simplex, hist (..., pD), first (...) bool (t <= p)."""
        lin = (states.unsqueeze(-1) * self.per_state_linear(hist)).sum(-2)
        corr_mean, corr_scale = self.net(torch.cat([states, hist], -1)).split(self.obs_dim, -1)
        mean = torch.where(first[..., None], states @ self.init_mean, lin + corr_mean)
        raw = torch.where(first[..., None], states @ self.init_raw_scale, states @ self.raw_scale + corr_scale)
        return mean, nn.functional.softplus(raw) + SCALE_FLOOR

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[1], device=x.device) < self.order  # (T,)

    def log_prob(self, x, states):
        first = self._first(x).expand(x.shape[:2])
        return diagonal_normal_log_prob(x, *self.moments(states, history(x, self.order), first))

    def table(self, x):
        D = x.shape[-1]
        hist = history(x, self.order)  # (B, T, pD)
        corr_mean, corr_scale = self._correction_per_state(hist).split(D, -1)
        first = self._first(x)[:, None, None]  # (T, 1, 1) against (B, T, K, D)
        mean = torch.where(first, self.init_mean, self.per_state_linear(hist) + corr_mean)
        raw = torch.where(first, self.init_raw_scale, self.raw_scale + corr_scale)
        scale = nn.functional.softplus(raw) + SCALE_FLOOR
        return diagonal_normal_log_prob(x[:, :, None], mean, scale)  # (B, T, K)

    def _correction_per_state(self, hist: torch.Tensor) -> torch.Tensor:
        """hist (B, T, pD) -> (B, T, K, 2D): the MLP g([e_k, h_t]) for every one-hot state e_k.

        The first layer of [e_k, h] is W_h h + b + W_e[:, k]: the history's part is computed once
        and each state adds its own column, instead of running the layer on K copies of h.
        """
        first, activation, last = self.net
        K = self.n_states
        hidden = (hist @ first.weight[:, K:].T + first.bias)[:, :, None, :] + first.weight[:, :K].T  # (B, T, K, H)
        return last(activation(hidden))

    def sample(self, states, generator=None):
        N, T = states.shape
        p, D = self.order, self.obs_dim
        noise = torch.randn(N, T, D, generator=generator).to(self.bias)
        one_hot = nn.functional.one_hot(states, self.n_states).to(self.bias)
        hist = noise.new_zeros(N, p * D)  # [x_{t-1}, ..., x_{t-p}]
        xs = []
        for t in range(T):
            first = torch.full((N,), t < p, dtype=torch.bool, device=noise.device)
            mean, scale = self.moments(one_hot[:, t], hist, first)
            xs.append(mean + scale * noise[:, t])
            hist = torch.cat([xs[-1], hist[:, :-D]], -1)
        return torch.stack(xs, 1)

    def n_parameters(self) -> int:
        """Of the linear AR-HMM part: A_k, b_k, r_k and the initial m_k, s_k (the MLP correction not counted)."""
        K, D = self.n_states, self.obs_dim
        return K * (D * self.order * D + 4 * D)
