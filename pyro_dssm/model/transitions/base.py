r"""The contract of a transition family: :math:`p(c_t \mid c_{t-1}, \text{context}_t)`, one class per family.

A family gives the logits of the next state for a (relaxed) previous state
(:meth:`Transition.forward`, what the relaxed chains of :mod:`pyro_dssm.model.relaxed` call) and
the exact HMM's log transition table (:meth:`Transition.log_matrix`, (K, K): the same at every
step; a family that reads observed context needs a time-varying table, which the exact HMM code
does not take yet).
The initial distribution p(c_1) is uniform. Beside them: :meth:`Transition.fit_to`, the loss that
moves the networks to a classical (K, K) matrix (the init), and :meth:`Transition.n_parameters`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Transition(nn.Module):
    """Parameterizes p(c_t | c_{t-1}): (..., K) previous state on the simplex -> (..., K) logits of the next.

    Subclasses take ``(n_states, hidden_dim, **options)``.
    """

    def __init__(self, n_states: int, hidden_dim: int):
        super().__init__()
        self.n_states = n_states
        self.hidden_dim = hidden_dim

    @classmethod
    def options(cls, config) -> dict:
        """The family's keyword options from the ``model`` settings (``ModelConfig``); none by default."""
        return {}

    def forward(self, prev_state: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_matrix(self) -> torch.Tensor:
        """(K, K): ``[i, j] = log p(c_t = j | c_{t-1} = i)``, the previous states one-hot."""
        weight = next(self.parameters())
        eye = torch.eye(self.n_states, dtype=weight.dtype, device=weight.device)
        return self(eye).log_softmax(-1)

    def fit_to(self, trans: torch.Tensor) -> Callable[[], torch.Tensor]:
        """The loss whose minimum puts the rows at ``trans`` (K, K): the mean KL(trans[i] || p(. | i))."""
        log_target = trans.clamp_min(1e-12).log()
        return lambda: (trans * (log_target - self.log_matrix())).sum(-1).mean()

    def n_parameters(self) -> int:
        """Free parameters of the transition with hard states: K rows of K - 1 free probabilities."""
        return self.n_states * (self.n_states - 1)
