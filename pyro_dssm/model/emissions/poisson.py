r"""``poisson``: counts, :math:`p(x_t \mid c_t) = \prod_d \mathrm{Poisson}(x_{td};\ \lambda_d(c_t))`.

The rate is a network of the state (MLP K -> H -> D) through
:math:`\lambda = \mathrm{softplus}(\cdot) + \lambda_{\min}`. For non-negative
integer data (spike trains, event counts) fed unstandardised; anything else is
refused by :meth:`PoissonEmission.check_data` with the first bad value.
Classical init: a Poisson HMM (rates = weighted means of the counts).
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_dssm.model.emissions.base import Emission, first_bad_step
from pyro_dssm.model.emissions.statistics import RATE_FLOOR, inverse_softplus, weighted_moments
from pyro_dssm.model.networks import mlp


class IndependentPoisson(torch.distributions.Distribution):
    r"""Independent Poisson counts over the last dim of ``rate`` (..., D): batch (...), event (D,).

    :meth:`log_prob` is :math:`\sum_d x_d \log \lambda_d - \lambda_d - \log x_d!`, as the family computed it
    before it became a distribution (bitwise the numbers of earlier runs); equal to torch's ``Poisson`` summed
    (tested). Not validated (no host sync)."""

    arg_constraints = {}

    def __init__(self, rate: torch.Tensor):
        self.rate = rate
        super().__init__(rate.shape[:-1], rate.shape[-1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value * self.rate.log() - self.rate - torch.lgamma(value + 1)).sum(-1)

    def channel_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """(..., D) per-channel terms of :meth:`log_prob` (for missing counts)."""
        return value * self.rate.log() - self.rate - torch.lgamma(value + 1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return torch.poisson(self.rate.expand(self._extended_shape(sample_shape)))


def poisson(rate: torch.Tensor) -> IndependentPoisson:
    """Independent Poisson counts over the last dim of ``rate`` (..., D) (:class:`IndependentPoisson`)."""
    return IndependentPoisson(rate)


class PoissonEmission(Emission):
    """Parameterizes the rates of p(x_t | c_t): (..., K) point of the simplex -> (..., D) rates > 0."""

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int):
        super().__init__(n_states, obs_dim, hidden_dim)
        self.net = mlp(n_states, hidden_dim, obs_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.net(state)) + RATE_FLOOR

    def rates(self) -> torch.Tensor:
        """(K, D) the rates of each hard state."""
        return self(self.one_hot(self.net[0].weight))

    def distribution(self, states, context):
        return poisson(self(states))

    def complete_table(self, x):
        r""":meth:`Emission.complete_table` with :math:`\sum_d x_d \log \lambda_{kd}` as one matrix product."""
        rate = self.rates()  # (K, D)
        return x @ rate.log().T - rate.sum(-1) - torch.lgamma(x + 1).sum(-1, keepdim=True)

    def m_step(self, x, mask, weights):
        return {"rate": weighted_moments(x, weights * mask[..., None])[0].clamp_min(2 * RATE_FLOOR)}

    def classical_distribution(self, params, context):
        return poisson(params["rate"])

    def fit_to(self, params):
        eye = self.one_hot(params["rate"])
        target = inverse_softplus(params["rate"] - RATE_FLOOR)
        return lambda: nn.functional.mse_loss(self.net(eye), target)

    def check_data(self, x, mask=None):
        super().check_data(x, mask)
        observed = ~torch.isnan(x)  # NaN: a missing count
        for bad, what in ((x < 0, "negative"), (observed & (x != x.round()), "not an integer")):
            found = first_bad_step(bad, mask)
            if found is not None:
                i, t, d = found
                raise ValueError(f"poisson emission needs non-negative integer counts: sequence {i}, step {t}, "
                                 f"channel {d} holds {float(x[i, t, d])!r} ({what}); with data=csv the features are "
                                 f"standardised, use model.emission=gaussian or gaussian_scale there")

    def n_parameters(self) -> int:
        return self.n_states * self.obs_dim
