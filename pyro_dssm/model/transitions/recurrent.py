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

from pyro_dssm.model.transitions.context import ContextTransition


class RecurrentTransition(ContextTransition):
    """Parameterizes p(c_t | c_{t-1}, x_{t-1}): (..., K) previous state and (..., D [+ U]) previous observation [and
    inputs] -> (..., K) logits of the next state (:class:`~pyro_dssm.model.transitions.context.ContextTransition`)."""

    past_rows = 1

    def __init__(self, n_states: int, hidden_dim: int, obs_dim: int, input_dim: int = 0):
        super().__init__(n_states, hidden_dim, obs_dim + input_dim)
        self.obs_dim = obs_dim
        self.input_dim = input_dim
        self.reads_inputs = input_dim > 0

    @classmethod
    def options(cls, config) -> dict:
        return {"obs_dim": config.obs_dim, "input_dim": config.input_dim}

    def context(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), inputs (B, T, U) -> (B, T, D [+ U]): row t is x_{t-1} (missing cells and row 0: zeros)
        [and u_t]."""
        filled = x.nan_to_num(0.0)
        previous = torch.cat([torch.zeros_like(filled[:, :1]), filled[:, :-1]], 1)
        return previous if inputs is None or not self.input_dim else torch.cat([previous, inputs], -1)
