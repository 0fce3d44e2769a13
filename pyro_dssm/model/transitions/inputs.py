r"""``inputs``: :math:`p(c_t \mid c_{t-1}, u_t) = \mathrm{Cat}(\mathrm{softmax}(\mathrm{MLP}([c_{t-1}, u_t])))`.

An input-output HMM's transition (ssm's ``InputDrivenTransitions``, a GLM-HMM's when the MLP is
linear): the switch depends on exogenous inputs :math:`u_t` given beside the data (a stimulus, a
control signal; ``data.input_columns``, ``inputs=`` in Python, :mod:`pyro_dssm.model.inputs`).
An MLP (K + U) -> H -> K of the previous (relaxed) state and the step's inputs. Because the inputs
are given, the exact HMM sees a known table per step,
:math:`A_t[i, j] = p(c_t = j \mid c_{t-1} = i, u_t)`, (B, T, K, K), and every exact algorithm of
:mod:`pyro_dssm.model.hmm` applies. Without context (the classical init, ``transmat_``) the table is
the one at :math:`u_t = 0`, the inputs' training mean once standardised.
"""

from __future__ import annotations

import torch

from pyro_dssm.model.networks import mlp
from pyro_dssm.model.transitions.base import Transition
from pyro_dssm.model.transitions.recurrent import context_table


class InputsTransition(Transition):
    """Parameterizes p(c_t | c_{t-1}, u_t): (..., K) previous state and (..., U) inputs of the step -> (..., K)
    logits of the next state."""

    reads_context = True
    reads_inputs = True

    def __init__(self, n_states: int, hidden_dim: int, input_dim: int):
        super().__init__(n_states, hidden_dim)
        if input_dim < 1:
            raise ValueError(f"model.transition=inputs reads exogenous inputs, but the data give none (model.input_dim="
                             f"{input_dim}); name them with data.input_columns (CSV) or inputs= (Python)")
        self.input_dim = input_dim
        self.net = mlp(n_states + input_dim, hidden_dim, n_states)

    @classmethod
    def options(cls, config) -> dict:
        return {"input_dim": config.input_dim}

    def context(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), inputs (B, T, U) -> (B, T, U): row t is u_t (the inputs of the step switched into)."""
        if inputs is None:
            raise ValueError("model.transition=inputs needs the inputs of every step; none were given")
        return inputs

    def forward(self, prev_state: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if context is None:  # the table at u_t = 0
            context = prev_state.new_zeros(*prev_state.shape[:-1], self.input_dim)
        batch = torch.broadcast_shapes(prev_state.shape[:-1], context.shape[:-1])
        return self.net(torch.cat([prev_state.expand(*batch, self.n_states), context.expand(*batch, self.input_dim)],
                                  -1))

    def log_matrix(self, context: torch.Tensor | None = None) -> torch.Tensor:
        """(K, K) at u_t = 0 without ``context``; (B, T, K, K) for ``context`` (B, T, U)."""
        if context is None:
            return super().log_matrix()
        return context_table(self.net, self.n_states, context)

    def n_parameters(self) -> int:
        """The network's weights (the table is a function of u_t, not K rows of free probabilities)."""
        return sum(p.numel() for p in self.net.parameters())
