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

from pyro_dssm.model.transitions.context import ContextTransition


class InputsTransition(ContextTransition):
    """Parameterizes p(c_t | c_{t-1}, u_t): (..., K) previous state and (..., U) inputs of the step -> (..., K)
    logits of the next state (:class:`~pyro_dssm.model.transitions.context.ContextTransition`)."""

    reads_inputs = True

    def __init__(self, n_states: int, hidden_dim: int, input_dim: int):
        if input_dim < 1:
            raise ValueError(f"model.transition=inputs reads exogenous inputs, but the data give none (model.input_dim="
                             f"{input_dim}); name them with data.input_columns (CSV) or inputs= (Python)")
        super().__init__(n_states, hidden_dim, input_dim)
        self.input_dim = input_dim

    @classmethod
    def options(cls, config) -> dict:
        return {"input_dim": config.input_dim}

    def context(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), inputs (B, T, U) -> (B, T, U): row t is u_t (the inputs of the step switched into)."""
        if inputs is None:
            raise ValueError("model.transition=inputs needs the inputs of every step; none were given")
        return inputs
