r"""``gaussian_full``: :math:`p(x_t \mid c_t) = \mathcal N(x_t;\ \mu(c_t), L(c_t) L(c_t)^\top)`, full covariance.

One network (MLP K -> H -> D + D(D+1)/2) gives the mean and the lower-triangular Cholesky
factor :math:`L` of each state's covariance: its diagonal through
:math:`\mathrm{softplus}(\cdot) + s_{\min}` (positive, so :math:`LL^\top` is positive definite),
its entries below the diagonal as they are. With hard states: a full-covariance Gaussian HMM
(hmmlearn's ``covariance_type="full"``), which is also its classical init. For channels that move
together (joint angles, sensor axes), where a diagonal family must spend states on correlations.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.emissions.statistics import PRIOR_WEIGHT, SCALE_FLOOR, inverse_softplus, weighted_moments
from pyro_dssm.model.networks import fit_output_layer, mlp

COVARIANCE_RIDGE = 1e-4  # added to a classical covariance's diagonal: a state on a subspace stays invertible


def multivariate_normal(mean: torch.Tensor, scale_tril: torch.Tensor):
    """N(mean, L L^T): mean (..., D), scale_tril (..., D, D); batch (...), event (D,). Not validated (no host sync)."""
    return torch.distributions.MultivariateNormal(mean, scale_tril=scale_tril, validate_args=False)


def state_table(mean: torch.Tensor, scale_tril: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""x (B, T, D), mean (K, D), scale_tril (K, D, D) -> (B, T, K): :math:`\log \mathcal N(x_t; \mu_k, L_k L_k^\top)`.

    :math:`-\tfrac12 \lVert L_k^{-1}(x_t - \mu_k) \rVert^2 - \sum_i \log L_{k,ii} - \tfrac D2 \log 2\pi`,
    with :math:`L_k^{-1}` from K small triangular solves and :math:`L_k^{-1} x_t` one matrix product over
    all steps (what ``MultivariateNormal.log_prob`` computes with a triangular solve per step batch,
    about 1.7x slower at K=12, D=36, B x T = 6400).
    """
    eye = torch.eye(scale_tril.shape[-1], dtype=scale_tril.dtype, device=scale_tril.device)
    inverse = torch.linalg.solve_triangular(scale_tril, eye, upper=False)  # (K, D, D)
    z = torch.einsum("kij,btj->btki", inverse, x) - torch.einsum("kij,kj->ki", inverse, mean)  # (B, T, K, D)
    log_det = scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)  # (K,)
    return -0.5 * z.pow(2).sum(-1) - log_det - 0.5 * x.shape[-1] * math.log(2 * math.pi)


class GaussianFullEmission(Emission):
    """Parameterizes mean and Cholesky factor of p(x_t | c_t): (..., K) -> (..., D), (..., D, D)."""

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, start_scale: float = 1.0):
        super().__init__(n_states, obs_dim, hidden_dim)
        D = obs_dim
        self.register_buffer("rows", torch.tril_indices(D, D)[0], persistent=False)
        self.register_buffer("cols", torch.tril_indices(D, D)[1], persistent=False)
        self.net = mlp(n_states, hidden_dim, D + D * (D + 1) // 2)
        with torch.no_grad():  # start at L = start_scale I (model.noise_std): the fixed-sigma model's value
            raw = self.net[2].bias[D:]
            raw.zero_()
            raw[self.rows == self.cols] = float(inverse_softplus(max(start_scale - SCALE_FLOOR, 1e-3)))
            self.net[2].weight[D:] *= 0.1

    @classmethod
    def options(cls, config) -> dict:
        return {"start_scale": config.noise_std}

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        D = self.obs_dim
        mean, raw = self.net(state).split([D, D * (D + 1) // 2], -1)
        diagonal = self.rows == self.cols
        entries = torch.where(diagonal, nn.functional.softplus(raw) + SCALE_FLOOR, raw)
        scale_tril = entries.new_zeros(*entries.shape[:-1], D, D)
        scale_tril[..., self.rows, self.cols] = entries
        return mean, scale_tril

    def distribution(self, states, context):
        return multivariate_normal(*self(states))

    def complete_table(self, x):
        """:meth:`Emission.complete_table` by :func:`state_table` (the states' factors inverted once)."""
        return state_table(*self(self.one_hot(x)), x)

    def complete_classical_table(self, params, x):
        return state_table(params["mean"], params["scale_tril"], x)

    def hard_log_prob(self, x, states, inputs=None):
        """The table gathered at one-hot ``states`` (B, T, K): the network and the Cholesky solves run for
        the K states, not for every step (at K=12, D=36 the per-step factors made a step 3x gaussian's)."""
        return (self.table(x) * states).sum(-1)

    def m_step(self, x, mask, weights):
        """Weighted means and full covariances, shrunk by ``PRIOR_WEIGHT`` pseudo-points towards the pooled one."""
        w = weights * mask[..., None]
        mean, _ = weighted_moments(x, w)
        if bool(torch.isnan(x).any()):
            return {"mean": mean, "scale_tril": torch.linalg.cholesky(self._pairwise_covariance(x, mask, w, mean))}
        centred = x[:, :, None] - mean  # (B, T, K, D)
        scatter = torch.einsum("btk,btki,btkj->kij", w, centred, centred)
        pooled = torch.einsum("bt,bti,btj->ij", mask.to(x), x - x[mask].mean(0), x - x[mask].mean(0)) / mask.sum()
        cov = (scatter + PRIOR_WEIGHT * pooled) / (w.sum((0, 1))[:, None, None] + PRIOR_WEIGHT)
        cov = cov + COVARIANCE_RIDGE * torch.eye(self.obs_dim, dtype=x.dtype, device=x.device)
        return {"mean": mean, "scale_tril": torch.linalg.cholesky(cov)}

    def _pairwise_covariance(self, x, mask, w, mean):
        """(K, D, D) covariances of x (B, T, D) with NaN cells: each entry (i, j) over the steps observing both
        channels (pairwise deletion), shrunk as :meth:`m_step` does, then its eigenvalues floored at
        ``COVARIANCE_RIDGE`` (pairwise estimates need not be positive definite). An approximate M-step: the init's."""
        o = (~torch.isnan(x) & mask[..., None]).to(x.dtype)  # (B, T, D)
        filled = x.nan_to_num(0.0)
        centred = (filled[:, :, None] - mean) * o[:, :, None]  # (B, T, K, D), 0 where missing
        scatter = torch.einsum("btk,btki,btkj->kij", w, centred, centred)
        pairs = torch.einsum("btk,bti,btj->kij", w, o, o)
        overall = (filled * o).sum((0, 1)) / o.sum((0, 1)).clamp_min(1)
        c = (filled - overall) * o
        pooled = torch.einsum("bti,btj->ij", c, c) / torch.einsum("bti,btj->ij", o, o).clamp_min(1)
        cov = (scatter + PRIOR_WEIGHT * pooled) / (pairs + PRIOR_WEIGHT)
        values, vectors = torch.linalg.eigh((cov + cov.transpose(-1, -2)) / 2)
        return (vectors * values.clamp_min(COVARIANCE_RIDGE)[..., None, :]) @ vectors.transpose(-1, -2)

    def classical_distribution(self, params, context):
        return multivariate_normal(params["mean"], params["scale_tril"])

    def fit_to(self, params):
        eye = self.one_hot(params["mean"])
        L = params["scale_tril"][:, self.rows, self.cols]  # (K, D(D+1)/2)
        diagonal = self.rows == self.cols
        raw = torch.where(diagonal, inverse_softplus((L - SCALE_FLOOR).clamp_min(1e-6)), L)
        target = torch.cat([params["mean"], raw], -1)
        return fit_output_layer(self.net, eye, target)

    def n_parameters(self) -> int:
        D = self.obs_dim
        return self.n_states * (D + D * (D + 1) // 2)
