r"""``gaussian``: :math:`p(x_t \mid c_t) = \mathcal N(x_t;\ \mu(c_t), \sigma^2 I_D)`, sigma fixed (``model.noise_std``).

The network maps the state to the mean only (MLP K -> H -> D); with hard states
this is exactly a spherical Gaussian HMM with K means. Regimes can differ only in
their average position. Classical init: Baum-Welch of that HMM (means = weighted
averages), without a sticky prior or random-label starts.
"""

from __future__ import annotations

import torch

from pyro_dssm.model import hmm
from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.emissions.statistics import diagonal_normal
from pyro_dssm.model.networks import fit_output_layer, mlp


class GaussianEmission(Emission):
    """Parameterizes the mean of p(x_t | c_t) = Normal(mean(c_t), sigma^2 I).

    ``forward``: (..., K) point of the simplex -> (..., D) mean.
    """

    em_stickiness = 0.0
    em_random_starts = 0

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, noise_std: float = 1.0):
        super().__init__(n_states, obs_dim, hidden_dim)
        self.noise_std = noise_std
        self.net = mlp(n_states, hidden_dim, obs_dim)

    @classmethod
    def options(cls, config) -> dict:
        return {"noise_std": config.noise_std}

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state)

    def means(self) -> torch.Tensor:
        """(K, D) the mean of each hard state."""
        return self(self.one_hot(self.net[0].weight))

    def _normal(self, mean: torch.Tensor):
        # sigma as a device tensor: a Python float would be copied to the device every step
        return diagonal_normal(mean, mean.new_full((), self.noise_std).expand_as(mean))

    def distribution(self, states, context):
        return self._normal(self(states))

    def complete_table(self, x):
        """:meth:`Emission.complete_table` by the expanded square (one matrix product, no (B, T, K, D) tensor)."""
        return hmm.gaussian_log_likelihood(x, self.means(), self.noise_std)

    def start(self, x, mask, labels, centres=None):
        """From k-means: the centres themselves, as hmmlearn starts its means."""
        return super().start(x, mask, labels) if centres is None else {"mean": centres}

    def m_step(self, x, mask, weights):
        """Means = the weighted averages (hmmlearn's M-step with sigma fixed)."""
        w = weights * mask[..., None]
        observed = ~torch.isnan(x)  # a missing cell counts for its channel's mean nowhere
        if bool(observed.all()):
            return {"mean": torch.einsum("btk,btd->kd", w, x) / w.sum((0, 1)).clamp_min(1e-12)[:, None]}
        o = observed.to(x.dtype)
        return {"mean": torch.einsum("btk,btd->kd", w, x.nan_to_num(0.0))
                / torch.einsum("btk,btd->kd", w, o).clamp_min(1e-12)}

    def classical_distribution(self, params, context):
        return self._normal(params["mean"])

    def complete_classical_table(self, params, x):
        return hmm.gaussian_log_likelihood(x, params["mean"], self.noise_std)

    def fit_to(self, params):
        eye = self.one_hot(params["mean"])
        return fit_output_layer(self.net, eye, params["mean"])

    def n_parameters(self) -> int:
        return self.n_states * self.obs_dim
