"""The hidden Markov chain of the synthetic sources: sticky transition matrices and sampled state paths.

Every generator of known truth (:mod:`~pyro_dssm.data.switching_ar`, :mod:`~pyro_dssm.data.counts`,
:mod:`~pyro_dssm.data.periodic`) draws its states the same way, ``c_1 ~ initial``, ``c_t | c_{t-1} ~ Categorical(transition[c_{t-1}])``,
and then its observations given the states.
"""

from __future__ import annotations

import torch


def sticky_transition(n_states: int, transition_bias: float) -> torch.Tensor:
    """(K, K) matrix with ``transition_bias`` on the diagonal and ``(1 - transition_bias) / (K - 1)`` elsewhere."""
    transition = torch.full((n_states, n_states), (1.0 - transition_bias) / (n_states - 1))
    return transition.fill_diagonal_(transition_bias)


def sample_states(initial: torch.Tensor, transition: torch.Tensor, n_seqs: int, seq_len: int,
                  generator: torch.Generator) -> torch.Tensor:
    """(N, T) int64 state paths of the chain (``initial`` (K,), ``transition`` (K, K) row-stochastic, or (T, K, K)
    one table per step, row t the step into t, for a chain driven by known inputs)."""
    states = torch.empty(n_seqs, seq_len, dtype=torch.long)
    states[:, 0] = torch.multinomial(initial, n_seqs, replacement=True, generator=generator)
    for t in range(1, seq_len):
        rows = (transition if transition.dim() == 2 else transition[t])[states[:, t - 1]]  # (N, K)
        states[:, t] = torch.multinomial(rows, 1, generator=generator).squeeze(-1)
    return states
