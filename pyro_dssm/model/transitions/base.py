r"""The contract of a transition family: :math:`p(c_t \mid c_{t-1}, \text{context}_t)`, one class per family.

A family gives the logits of the next state for a (relaxed) previous state and what it reads of
the observed past (:meth:`Transition.forward`, what the relaxed chains of
:mod:`pyro_dssm.model.relaxed` call; :meth:`Transition.context`, nothing for ``stationary``) and
the exact HMM's log transition table (:meth:`Transition.log_matrix`): (K, K), the same at every
step, for a family without context; (B, T, K, K) for one that reads it (``recurrent``: the last
observation; ``inputs``: the exogenous inputs u_t, :mod:`pyro_dssm.model.inputs`), still an exact
HMM because what it reads is observed (:mod:`pyro_dssm.model.hmm` takes either).
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

    reads_context: bool = False  # whether p(c_t | c_{t-1}) reads the observed past or inputs (a time-varying table)
    reads_inputs: bool = False  # whether it reads the exogenous inputs u_t (model.input_dim > 0 required)
    past_rows: int = 0  # how many observations before step t its table into t reads (online filtering carries them)

    def forward(self, prev_state: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """prev_state (..., K) on the simplex, context (..., C) of the step (None: no context) -> (..., K) logits."""
        raise NotImplementedError

    def context(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor | None:
        """x (B, T, D) and inputs (B, T, U) (None without) -> (B, T, C): what the transition into step t reads of
        x_{<t} and u_t (row 0 unused); None for a family without context."""
        return None

    def log_matrix(self, context: torch.Tensor | None = None) -> torch.Tensor:
        """``[..., i, j] = log p(c_t = j | c_{t-1} = i)``, the previous states one-hot: (K, K) without ``context``,
        (B, T, K, K) for ``context`` (B, T, C) (:meth:`context`)."""
        weight = next(self.parameters())
        eye = torch.eye(self.n_states, dtype=weight.dtype, device=weight.device)
        if context is None:
            return self(eye).log_softmax(-1)
        return self(eye, context[:, :, None]).log_softmax(-1)

    def fit_to(self, trans: torch.Tensor) -> Callable[[], torch.Tensor] | None:
        """The loss whose minimum puts the rows at ``trans`` (K, K): the mean KL(trans[i] || p(. | i)); a family
        that can put them there exactly does so and returns None (``stationary``)."""
        log_target = trans.clamp_min(1e-12).log()
        return lambda: (trans * (log_target - self.log_matrix())).sum(-1).mean()

    def n_parameters(self) -> int:
        """Free parameters of the transition with hard states: K rows of K - 1 free probabilities."""
        return self.n_states * (self.n_states - 1)
