r"""Known states (semi-supervised): a state given at some steps is an observation, noise-free.

With ``model.known_states`` the observation of step t is :math:`(x_t, l_t)`: the D features and a
label :math:`l_t \in \{0..K-1\}`, or missing (NaN) where the state is not known. The label's
emission is the indicator :math:`p(l_t \mid c_t) = [l_t = c_t]`, so

.. math::

    p(x_t, l_t \mid c_t) = p(x_t \mid c_t, x_{<t})\, [l_t = c_t],

and a missing label is summed out (a factor 1). Every exact algorithm of :mod:`pyro_dssm.model.hmm`
then runs on the table :math:`\log p(x_t \mid c_t = k, x_{<t}) + \log [l_t = k]`: forward,
Viterbi and marginals are the posterior *clamped* at the known steps, and log p(X) is
:math:`\log p(x_{1:T}, l_{\text{known}})`. The logarithm of 0 is taken as ``-CLAMP`` (finite: no
``inf - inf`` in the recursions; :math:`e^{-10^4}` is 0 in every float type). The guide gets the same
term on its logits, so its draws never leave the known state, and the ELBO is that of
:math:`p(X, l_{\text{known}})`.

Carrying the label as the last column of the observation tensor (B, T, D + 1) lets minibatches,
subsets and windows keep it with its step without a second tensor to index alongside x.
"""

from __future__ import annotations

import torch

CLAMP = 1e4  # -log 0 of the label's indicator emission


def split_known(x: torch.Tensor, has_known: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Observations (B, T, D [+ 1]) -> the features (B, T, D) and the known-state codes (B, T) int64 (-1: not
    known), or None without ``has_known``."""
    if not has_known:
        return x, None
    labels = x[..., -1]
    return x[..., :-1], torch.where(torch.isnan(labels), -1.0, labels).long()


def clamp_table(codes: torch.Tensor, n_states: int, like: torch.Tensor) -> torch.Tensor:
    """codes (B, T) int64 (-1: not known) -> (B, T, K) :math:`\\log [l_t = k]`: 0 where the state is k or not known,
    ``-CLAMP`` elsewhere; dtype and device of ``like``."""
    states = torch.arange(n_states, device=codes.device)
    allowed = (codes[..., None] < 0) | (codes[..., None] == states)
    return torch.where(allowed, 0.0, -CLAMP).to(like)


def clamped(table: torch.Tensor, clamp: torch.Tensor | None) -> torch.Tensor:
    """An emission table (B, T, K) with the known states' log-indicator ``clamp`` (B, T, K) added; itself for None."""
    return table if clamp is None else table + clamp


def with_known(x: torch.Tensor, codes: torch.Tensor | None) -> torch.Tensor:
    """Features (B, T, D) and codes (B, T) (-1: not known) -> observations (B, T, D + 1); x itself for None."""
    if codes is None:
        return x
    label = torch.where(codes < 0, float("nan"), codes.to(x.dtype))
    return torch.cat([x, label[..., None]], -1)


def none_known(x: torch.Tensor, has_known: bool) -> torch.Tensor:
    """Features (B, T, D) -> the observations of a model that observes known states (``has_known``): no state known
    at any step, (B, T, D + 1) with a NaN column (:func:`with_known`); x itself otherwise. For decode data that give
    none."""
    return with_known(x, torch.full(x.shape[:2], -1, device=x.device)) if has_known else x


def state_names(n_states: int, known_names: list[str] | None) -> list[str] | None:
    """The names of states 0..K-1 of a model trained with known states: the k-th class's, ``unnamed_k`` for the
    extra states (K larger than the classes); None (the state numbers) without known states."""
    if known_names is None:
        return None
    return [known_names[k] if k < len(known_names) else f"unnamed_{k}" for k in range(n_states)]
