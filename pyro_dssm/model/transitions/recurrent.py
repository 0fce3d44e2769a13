r"""``recurrent``: :math:`p(c_t \mid c_{t-1}, x_{t-1}) = \mathrm{Cat}(\mathrm{softmax}(\mathrm{MLP}([c_{t-1}, x_{t-1}])))`.

With exogenous inputs (``model.input_dim`` U > 0, :mod:`pyro_dssm.model.inputs`) the MLP reads
:math:`[c_{t-1}, x_{t-1}, u_t]`.

The switch depends on where the last observation is (a car turns at the end of its track, a
recurrent switching model in the sense of Linderman et al. 2017, ssm's ``RecurrentTransitions``).
An MLP (K + D) -> H -> K of the previous (relaxed) state and the previous observation. Because
:math:`x_{t-1}` is observed, the exact HMM sees a known table for every step,
:math:`A_t[i, j] = p(c_t = j \mid c_{t-1} = i, x_{t-1})`, (B, T, K, K) (:meth:`RecurrentTransition.log_matrix`),
and every exact algorithm of :mod:`pyro_dssm.model.hmm` applies. A missing cell of
:math:`x_{t-1}` (NaN) reads as 0, the channel's training mean. Without context (the classical
init, ``transmat_``) the table is the one at :math:`x_{t-1} = 0`.
"""

from __future__ import annotations

import torch

from pyro_dssm.model.networks import mlp
from pyro_dssm.model.transitions.base import Transition


class RecurrentTransition(Transition):
    """Parameterizes p(c_t | c_{t-1}, x_{t-1}): (..., K) previous state and (..., D) previous observation -> (..., K)
    logits of the next state."""

    reads_context = True
    past_rows = 1

    def __init__(self, n_states: int, hidden_dim: int, obs_dim: int, input_dim: int = 0):
        super().__init__(n_states, hidden_dim)
        self.obs_dim = obs_dim
        self.input_dim = input_dim
        self.context_dim = obs_dim + input_dim
        self.reads_inputs = input_dim > 0
        self.net = mlp(n_states + self.context_dim, hidden_dim, n_states)

    @classmethod
    def options(cls, config) -> dict:
        return {"obs_dim": config.obs_dim, "input_dim": config.input_dim}

    def context(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), inputs (B, T, U) -> (B, T, D [+ U]): row t is x_{t-1} (missing cells and row 0: zeros)
        [and u_t]."""
        filled = x.nan_to_num(0.0)
        previous = torch.cat([torch.zeros_like(filled[:, :1]), filled[:, :-1]], 1)
        return previous if inputs is None or not self.input_dim else torch.cat([previous, inputs], -1)

    def forward(self, prev_state: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:  # the table at x_{t-1} = 0
            context = prev_state.new_zeros(*prev_state.shape[:-1], self.context_dim)
        batch = torch.broadcast_shapes(prev_state.shape[:-1], context.shape[:-1])
        return self.net(torch.cat([prev_state.expand(*batch, self.n_states), context.expand(*batch, self.context_dim)],
                                  -1))

    def log_matrix(self, context: torch.Tensor | None = None) -> torch.Tensor:
        """(K, K) at x_{t-1} = 0 without ``context``; (B, T, K, K) for ``context`` (B, T, C)
        (:func:`context_table`)."""
        if context is None:
            return super().log_matrix()
        return context_table(self.net, self.n_states, context)

    def n_parameters(self) -> int:
        """The network's weights (the table is a function of x_{t-1}, not K rows of free probabilities)."""
        return sum(p.numel() for p in self.net.parameters())


def context_table(net, n_states: int, context: torch.Tensor) -> torch.Tensor:
    """(B, T, K, K) log p(c_t = j | c_{t-1} = i, context_t) of an MLP ``net`` (Linear, activation, Linear) of
    [one-hot c_{t-1} (K), context_t (C)]: the first layer's part of the context is computed once per step and each
    previous state adds its own column (not K copies of the context)."""
    first, activation, last = net
    hidden = (context @ first.weight[:, n_states:].T + first.bias)[:, :, None, :] + first.weight[:, :n_states].T
    return last(activation(hidden)).log_softmax(-1)  # hidden: (B, T, K, H)
