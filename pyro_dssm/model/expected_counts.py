r"""Baum-Welch's E-step statistics by the scaled forward-backward recursions, without autograd.

EM (:mod:`pyro_dssm.inference.em`) needs, for G candidate HMMs over the same B sequences, each
sequence's :math:`\log p(X)`, the posterior marginals :math:`\gamma_t(k) = p(c_t = k \mid X)` and the
expected transition counts :math:`\sum_t \xi_t(i, j)`. They are the gradients of
:func:`pyro_dssm.model.hmm.grouped_log_likelihood` with respect to the table and the log transition matrix;
autograd's backward through the T small steps of the scaled forward costs about three forward passes.
Here the backward recursion is written out (Rabiner 1989, sec. V.A, with the forward's normalisers):

.. math::

    \hat\alpha_t = (\hat\alpha_{t-1} A) \odot p_t / n_t, \qquad
    \hat\beta_{t-1} = A\,(p_t \odot \hat\beta_t) / n_t, \quad \hat\beta_T = 1,

    \gamma_t = \hat\alpha_t \odot \hat\beta_t, \qquad
    \textstyle\sum_t \xi_t(i, j) = A_{ij} \sum_{t \ge 2} \hat\alpha_{t-1}(i)\, p_t(j)\, \hat\beta_t(j) / n_t,

with :math:`p_t = e^{\ell_t - s_t}` (the table shifted by its maximum per step) and
:math:`\log p(X) = \sum_t (\log n_t + s_t)`. A padded step carries :math:`\hat\alpha` forward and
:math:`\hat\beta` back unchanged and has :math:`\gamma_t = 0`. Two passes of T steps, then the counts in
one product over all steps. Where a group's product underflows, that group's statistics come from
autograd on :func:`~pyro_dssm.model.hmm.log_likelihood` (its log-space fallback), so the results are
the gradients' everywhere (tested against them).
"""

from __future__ import annotations

import torch

from pyro_dssm.model import hmm


def grouped_statistics(log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor,
                       mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The E-step of G HMMs (uniform or given start ``log_init`` (K,), log_trans (G, K, K)) over the same
    sequences: log_lik (G, B, T, K), mask (B, T) or None. Returns (G, B) log p(X), (G, K, K) expected transition
    counts (summed over sequences and steps) and (G, B, T, K) posterior marginals (0 on padded steps)."""
    mask = hmm.full_mask(log_lik[0], mask)
    with torch.no_grad():
        log_px, counts, gamma, smallest = _forward_backward(log_init, log_trans, log_lik, mask)
    bad = hmm.underflowed(log_px, smallest).any(-1)  # (G,)
    for g in bad.nonzero().squeeze(-1).tolist():
        log_px[g], counts[g], gamma[g] = _by_autograd(log_init, log_trans[g], log_lik[g], mask)
    return log_px, counts, gamma


def _forward_backward(log_init, log_trans, log_lik, mask):
    """The recursions of the module docstring for every group at once; (G, B) the smallest normaliser too."""
    A = log_trans.exp()  # (G, K, K)
    shift = log_lik.max(-1, keepdim=True).values  # (G, B, T, 1)
    probs = (log_lik - shift).exp()
    valid = mask[..., None]  # (B, T, 1)
    steps = probs.unbind(-2)
    alpha = log_init.exp() * steps[0]
    norm = alpha.sum(-1, keepdim=True)
    alphas, norms = [alpha / norm], [norm]
    for t in range(1, len(steps)):
        new = torch.bmm(alphas[-1], A) * steps[t]
        norm = new.sum(-1, keepdim=True)
        alphas.append(torch.where(valid[:, t], new / norm, alphas[-1]))
        norms.append(torch.where(valid[:, t], norm, 1.0))
    norms_all = torch.stack(norms, -2)  # (G, B, T, 1)
    beta, betas = torch.ones_like(alphas[-1]), [None] * len(steps)
    betas[-1] = beta
    A_t = A.transpose(-1, -2)
    for t in range(len(steps) - 1, 0, -1):
        back = torch.bmm(steps[t] * beta / norms[t], A_t)
        beta = torch.where(valid[:, t], back, beta)
        betas[t - 1] = beta
    alpha_all, beta_all = torch.stack(alphas, -2), torch.stack(betas, -2)  # (G, B, T, K)
    gamma = alpha_all * beta_all * valid
    later = probs[..., 1:, :] * beta_all[..., 1:, :] / norms_all[..., 1:, :] * valid[:, 1:]
    counts = A * torch.einsum("gbti,gbtj->gij", alpha_all[..., :-1, :], later)
    log_px = ((norms_all.log() + shift) * valid).sum((-2, -1))
    return log_px, counts, gamma, norms_all.squeeze(-1).amin(-1)


def _by_autograd(log_init, log_trans, log_lik, mask):
    """One group's statistics as the gradients of :func:`~pyro_dssm.model.hmm.log_likelihood` (underflow-safe)."""
    with torch.enable_grad():
        log_trans = log_trans.detach().requires_grad_()
        log_lik = log_lik.detach().requires_grad_()
        log_px = hmm.log_likelihood(log_init, log_trans, log_lik, mask)
        counts, gamma = torch.autograd.grad(log_px.sum(), [log_trans, log_lik])
    return log_px.detach(), counts, gamma
