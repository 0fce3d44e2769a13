r"""``stationary``: :math:`p(c_t \mid c_{t-1}) = \mathrm{Cat}(\mathrm{softmax}(\mathrm{MLP}(c_{t-1})))`.

An MLP K -> H -> K of the previous (relaxed) state. With one-hot states it is evaluated at K
inputs only, so the exact HMM sees a K x K matrix, the same at every step.
"""

from __future__ import annotations

import torch

from pyro_dssm.model.networks import fit_output_layer, mlp
from pyro_dssm.model.transitions.base import Transition

LOGIT_FLOOR = 1e-6  # the smallest transition probability the init writes into the logits


class StationaryTransition(Transition):
    """Parameterizes p(c_t | c_{t-1}): logits of the next state given the previous (relaxed) state.

    Input (..., K) point of the simplex (a one-hot vector for a hard state); output (..., K) unnormalised logits.
    """

    def __init__(self, n_states: int, hidden_dim: int):
        super().__init__(n_states, hidden_dim)
        self.net = mlp(n_states, hidden_dim, n_states)

    def forward(self, prev_state: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(prev_state)

    def fit_to(self, trans: torch.Tensor):
        """The rows put at ``trans`` (K, K) exactly (:func:`~pyro_dssm.model.networks.fit_output_layer`): logits
        log max(A_ij, 1e-6), so a transition the classical fit all but ruled out stays within reach of SVI's steps
        (logit -13.8, not the -27 of a 1e-12 count). None when exact, else the base class's KL loss."""
        eye = torch.eye(self.n_states, dtype=trans.dtype, device=trans.device)
        exact = fit_output_layer(self.net, eye, trans.clamp_min(LOGIT_FLOOR).log())
        return None if exact is None else super().fit_to(trans)
