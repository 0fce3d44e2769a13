r"""``gaussian``: :math:`p(x_t \mid c_t) = \mathcal N(x_t;\ \mu(c_t), \sigma^2 I_D)`, sigma fixed (``model.noise_std``).

The network maps the state to the mean only (MLP K -> H -> D); with hard states
this is exactly a spherical Gaussian HMM with K means. Regimes can differ only in
their average position.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyro_dssm.model import hmm
from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.networks import mlp


class GaussianEmission(Emission):
    """Parameterizes the mean of p(x_t | c_t) = Normal(mean(c_t), sigma^2 I).

    ``forward``: (..., K) point of the simplex -> (..., D) mean.
    """

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, noise_std: float):
        super().__init__(n_states, obs_dim)
        self.noise_std = noise_std
        self.net = mlp(n_states, hidden_dim, obs_dim)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)

    def means(self) -> torch.Tensor:
        """(K, D) the mean of each hard state."""
        return self(self.one_hot(self.net[0].weight))

    def log_prob(self, x, states):
        mean = self(states)  # (B, T, D), every step in one call
        # sigma as a device tensor: a Python float would be copied to the device every step
        return dist.Normal(mean, mean.new_full((), self.noise_std)).log_prob(x).sum(-1)

    def table(self, x):
        return hmm.gaussian_log_likelihood(x, self.means(), self.noise_std)

    def sample(self, states, generator=None):
        means = self.means()
        noise = torch.randn(*states.shape, self.obs_dim, generator=generator)
        return means[states] + self.noise_std * noise.to(means)

    def n_parameters(self) -> int:
        return self.n_states * self.obs_dim
