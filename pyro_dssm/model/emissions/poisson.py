r"""``poisson``: counts, :math:`p(x_t \mid c_t) = \prod_d \mathrm{Poisson}(x_{td};\ \lambda_d(c_t))`.

The rate is a network of the state (MLP K -> H -> D) through
:math:`\lambda = \mathrm{softplus}(\cdot) + \lambda_{\min}`. For non-negative
integer data (spike trains, event counts) fed unstandardised; anything else is
refused by :meth:`PoissonEmission.check_data` with the first bad value.
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_dssm.model.emissions.base import Emission, first_bad_step
from pyro_dssm.model.networks import mlp

RATE_FLOOR = 1e-4


def poisson_log_prob(x: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    r""":math:`\sum_d x_d \log \lambda_d - \lambda_d - \log x_d!` over the last dim (broadcasting)."""
    return (x * rate.log() - rate - torch.lgamma(x + 1)).sum(-1)


class PoissonEmission(Emission):
    """Parameterizes the rates of p(x_t | c_t): (..., K) point of the simplex -> (..., D) rates > 0."""

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, noise_std: float = 1.0):
        super().__init__(n_states, obs_dim)
        self.net = mlp(n_states, hidden_dim, obs_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(self.net(state)) + RATE_FLOOR

    def rates(self) -> torch.Tensor:
        """(K, D) the rates of each hard state."""
        return self(self.one_hot(self.net[0].weight))

    def log_prob(self, x, states):
        return poisson_log_prob(x, self(states))

    def table(self, x):
        rate = self.rates()  # (K, D)
        # sum_d x_d log rate_kd as one matrix product instead of a (B, T, K, D) tensor
        return x @ rate.log().T - rate.sum(-1) - torch.lgamma(x + 1).sum(-1, keepdim=True)

    def sample(self, states, generator=None):
        rate = self.rates()[states]  # (N, T, D)
        return torch.poisson(rate.detach().cpu(), generator=generator).to(rate)

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
