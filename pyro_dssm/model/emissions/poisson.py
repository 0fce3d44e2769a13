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


def poisson(rate: torch.Tensor):
    """Independent Poisson counts over the last dim of ``rate`` (..., D): batch (...), event (D,)."""
    return torch.distributions.Independent(torch.distributions.Poisson(rate, validate_args=False), 1,
                                           validate_args=False)


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
        for bad, what in ((x < 0, "negative"), (x != x.round(), "not an integer")):
            found = first_bad_step(bad, mask)
            if found is not None:
                i, t, d = found
                raise ValueError(f"poisson emission needs non-negative integer counts: sequence {i}, step {t}, "
                                 f"channel {d} holds {float(x[i, t, d])!r} ({what}); with data=csv the features are "
                                 f"standardised, use model.emission=gaussian or gaussian_scale there")

    def n_parameters(self) -> int:
        return self.n_states * self.obs_dim
