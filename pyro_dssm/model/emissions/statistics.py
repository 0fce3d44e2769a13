r"""Numbers the built-in families share: floors that keep a density bounded, weighted moments of the
classical M-steps, and the inverse of softplus (to put a positive parameter into a raw network output)."""

from __future__ import annotations

import math

import torch

SCALE_FLOOR = 1e-3  # in units of the standardised features: below any noise level worth modelling
RATE_FLOOR = 1e-4  # the least Poisson rate
PRIOR_WEIGHT = 1e-2  # pseudo-observations at the pooled statistics in an M-step: an empty state stays finite


def inverse_softplus(y):
    """x with softplus(x) = y > 0, elementwise (a tensor or a float)."""
    y = torch.as_tensor(y)
    return y + torch.log(-torch.expm1(-y))


def weighted_moments(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-state mean and variance (K, D) of x (B, T, D) under weights w (B, T, K), shrunk by
    ``PRIOR_WEIGHT`` pseudo-points towards the pooled moments: :math:`m_k = (\sum w x + \epsilon \bar x) / (N_k + \epsilon)`.

    NaN cells of x are missing: each channel's moments are then over the steps where it is observed
    (the M-step of a diagonal family's EM with values missing at random, :func:`observed_moments`)."""
    if bool(torch.isnan(x).any()):
        return observed_moments(x, w)
    total = w.sum((0, 1))[:, None]  # (K, 1)
    pooled = (x * w.sum(-1, keepdim=True)).sum((0, 1)) / w.sum().clamp_min(1e-12)  # (D,)
    pooled_var = ((x - pooled).pow(2) * w.sum(-1, keepdim=True)).sum((0, 1)) / w.sum().clamp_min(1e-12)
    mean = (torch.einsum("btk,btd->kd", w, x) + PRIOR_WEIGHT * pooled) / (total + PRIOR_WEIGHT)
    sq = torch.einsum("btk,btkd->kd", w, (x[:, :, None] - mean).pow(2))
    var = (sq + PRIOR_WEIGHT * pooled_var) / (total + PRIOR_WEIGHT)
    return mean, var


def observed_moments(x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`weighted_moments` of x (B, T, D) with NaN cells, per channel over the steps that observe it."""
    o = (~torch.isnan(x)).to(w.dtype)
    filled = x.nan_to_num(0.0)
    total = torch.einsum("btk,btd->kd", w, o)  # (K, D): each state's weight on each channel's observed steps
    w_all = w.sum(-1, keepdim=True)  # (B, T, 1)
    pooled = (filled * w_all).sum((0, 1)) / (o * w_all).sum((0, 1)).clamp_min(1e-12)  # (D,)
    pooled_var = ((filled - pooled).pow(2) * o * w_all).sum((0, 1)) / (o * w_all).sum((0, 1)).clamp_min(1e-12)
    mean = (torch.einsum("btk,btd->kd", w, filled) + PRIOR_WEIGHT * pooled) / (total + PRIOR_WEIGHT)
    sq = torch.einsum("btk,btkd->kd", w, (filled[:, :, None] - mean).pow(2) * o[:, :, None])
    var = (sq + PRIOR_WEIGHT * pooled_var) / (total + PRIOR_WEIGHT)
    return mean, var


class DiagonalNormal(torch.distributions.Distribution):
    r""":math:`\mathcal N(\mu, \mathrm{diag}\,s^2)` over the last dim: mean and scale (..., D); batch (...), event (D,).

    :meth:`log_prob` is :math:`\sum_d -\tfrac12 z_d^2 - \log s_d - \tfrac12 \log 2\pi`, :math:`z = (x - \mu)/s`,
    written out as the families computed it before they became distributions (so their numbers are
    bitwise those of earlier runs); equal to ``Independent(Normal(mean, scale), 1)`` up to rounding
    (tested). Not validated: a check of the scale would read it back from the device every step.
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor):
        self.mean_, self.scale = torch.broadcast_tensors(mean, scale)
        super().__init__(self.mean_.shape[:-1], self.mean_.shape[-1:], validate_args=False)

    @property
    def mean(self) -> torch.Tensor:
        return self.mean_

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z = (value - self.mean_) / self.scale
        return (-0.5 * z.pow(2) - self.scale.log()).sum(-1) - 0.5 * value.shape[-1] * math.log(2 * math.pi)

    def channel_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """(..., D) per-channel terms of :meth:`log_prob` (a missing channel's are left out, :func:`observed_log_prob`)."""
        z = (value - self.mean_) / self.scale
        return -0.5 * z.pow(2) - self.scale.log() - 0.5 * math.log(2 * math.pi)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return self.mean_ + self.scale * torch.randn(shape, dtype=self.mean_.dtype, device=self.mean_.device)


def diagonal_normal(mean: torch.Tensor, scale: torch.Tensor) -> DiagonalNormal:
    """N(mean, diag scale^2) over the last dim, (..., D) each: batch (...), event (D,) (:class:`DiagonalNormal`)."""
    return DiagonalNormal(mean, scale)
