r"""The interface of an emission family: :math:`p(x_t \mid c_t, x_{t-p:t-1})`.

Every family is one ``nn.Module`` with four methods. States are points of the
simplex, (B, T, K): relaxed Gumbel-Softmax samples while training the DSSM,
one-hot vectors for the exact HMM. With hard states and observed history the
emission is a (B, T, K) table of :math:`\log p(x_t \mid c_t = k, x_{<t})`
(:meth:`Emission.table`), so forward, Viterbi, marginals and log p(X) of
:mod:`pyro_dssm.model.hmm` hold for every family.
"""

from __future__ import annotations

import torch
from torch import nn


class Emission(nn.Module):
    """Parameterizes p(x_t | c_t, x_{t-p:t-1}) for one family (``order`` = p past observations)."""

    order: int = 0

    def __init__(self, n_states: int, obs_dim: int):
        super().__init__()
        self.n_states = n_states
        self.obs_dim = obs_dim

    def log_prob(self, x: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """x (B, T, D), states (B, T, K) on the simplex -> (B, T) log p(x_t | state_t, past)."""
        raise NotImplementedError

    def table(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, K): log p(x_t | c_t = k, x_{<t}) for every state k (the exact HMM's table)."""
        raise NotImplementedError

    def detached_table(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`table` without gradient, computed once per batch and weights.

        The guide (its inputs) and the analytic objective (the expected reconstruction) both
        ask for it within one step. The cache holds x itself, so it can only answer for this
        very tensor, unchanged (``_version``), under unchanged weights (their ``_version``
        grows with every optimiser step).
        """
        key = (x._version, tuple(p._version for p in self.parameters()))
        cached = getattr(self, "_detached", None)
        if cached is not None and cached[0] is x and cached[1] == key:
            return cached[2]
        with torch.no_grad():
            table = self.table(x)
        self._detached = (x, key, table)
        return table

    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """states (N, T) int64 -> x (N, T, D) drawn from p(x_t | c_t, past), step by step where the past matters."""
        raise NotImplementedError

    def check_data(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """ValueError naming the first value of x (N, T, D) on the valid steps of mask (N, T) outside the support."""
        if not bool(torch.isfinite(x if mask is None else x[mask.bool()]).all()):
            raise ValueError("x holds NaN or infinite values; expected finite numbers")

    def n_parameters(self) -> int:
        """Free parameters of the emission table with hard states (for BIC / AIC)."""
        raise NotImplementedError

    def one_hot(self, like: torch.Tensor) -> torch.Tensor:
        """(K, K) identity: the K hard states, in the dtype and device of ``like``."""
        return torch.eye(self.n_states, dtype=like.dtype, device=like.device)


def first_bad_step(bad: torch.Tensor, mask: torch.Tensor | None) -> tuple[int, int, int] | None:
    """(sequence, step, channel) of the first True of bad (N, T, D) on the valid steps of mask (N, T), or None."""
    if mask is not None:
        bad = bad & mask.bool()[..., None]
    where = bad.nonzero()
    return None if len(where) == 0 else tuple(int(v) for v in where[0])
