r"""The shared form of the transitions that read context: an MLP of [c_{t-1}, context_t], a table per step.

``recurrent`` (context :math:`x_{t-1}`, and :math:`u_t` with inputs) and ``inputs`` (context
:math:`u_t`) differ only in what they read (:meth:`~pyro_dssm.model.transitions.base.Transition.context`);
this class holds the rest: the MLP (K + C) -> H -> K, its logits at a relaxed previous state, the
exact HMM's (B, T, K, K) table (:func:`context_table`), and its weight count. Without context (the
classical init, ``transmat_``) the table is the one at context 0.
"""

from __future__ import annotations

import torch

from pyro_dssm.model.networks import mlp
from pyro_dssm.model.transitions.base import Transition


class ContextTransition(Transition):
    """Parameterizes p(c_t | c_{t-1}, context_t): (..., K) previous state and (..., C) context -> (..., K) logits.

    Subclasses set what the context is (:meth:`context`) and ``context_dim`` C through ``__init__``.
    """

    reads_context = True

    def __init__(self, n_states: int, hidden_dim: int, context_dim: int):
        super().__init__(n_states, hidden_dim)
        self.context_dim = context_dim
        self.net = mlp(n_states + context_dim, hidden_dim, n_states)

    def forward(self, prev_state: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:  # the table at context 0
            context = prev_state.new_zeros(*prev_state.shape[:-1], self.context_dim)
        batch = torch.broadcast_shapes(prev_state.shape[:-1], context.shape[:-1])
        return self.net(torch.cat([prev_state.expand(*batch, self.n_states), context.expand(*batch, self.context_dim)],
                                  -1))

    def log_matrix(self, context: torch.Tensor | None = None) -> torch.Tensor:
        """(K, K) at context 0 without ``context``; (B, T, K, K) for ``context`` (B, T, C) (:func:`context_table`)."""
        if context is None:
            return super().log_matrix()
        return context_table(self.net, self.n_states, context)

    def n_parameters(self) -> int:
        """The network's weights (the table is a function of the context, not K rows of free probabilities)."""
        return sum(p.numel() for p in self.net.parameters())


def context_table(net, n_states: int, context: torch.Tensor) -> torch.Tensor:
    """(B, T, K, K) log p(c_t = j | c_{t-1} = i, context_t) of an MLP ``net`` (Linear, activation, Linear) of
    [one-hot c_{t-1} (K), context_t (C)]: the first layer's part of the context is computed once per step and each
    previous state adds its own column (not K copies of the context)."""
    first, activation, last = net
    hidden = (context @ first.weight[:, n_states:].T + first.bias)[:, :, None, :] + first.weight[:, :n_states].T
    return last(activation(hidden)).log_softmax(-1)  # hidden: (B, T, K, H)
