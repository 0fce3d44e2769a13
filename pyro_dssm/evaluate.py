"""Validation metrics of a trained DSSM and the oracle ceiling (all exact maths from :mod:`hmm`)."""

from __future__ import annotations

import torch
from torch import nn

from . import hmm
from .data import HMMParams, SequenceData
from .distributions import categorical_kl
from .metrics import hungarian_accuracy
from .model import DSSM


def oracle_accuracy(params: HMMParams, data: SequenceData) -> float:
    """Hungarian accuracy of argmax_k p(c_t = k | X) under the true HMM: the ceiling for this data."""
    ll = hmm.gaussian_log_likelihood(data.x, params.means.to(data.x), params.noise_std)
    marg = hmm.posterior_marginals(params.initial.log().to(ll), params.transition.log().to(ll), ll, data.mask)
    return hungarian_accuracy(data.states, marg.argmax(-1), params.n_states, data.mask)


def oracle_log_likelihood_per_step(params: HMMParams, data: SequenceData) -> float:
    """log p(X) under the true HMM, per valid time step."""
    ll = hmm.gaussian_log_likelihood(data.x, params.means.to(data.x), params.noise_std)
    lp = hmm.log_likelihood(params.initial.log().to(ll), params.transition.log().to(ll), ll, data.mask)
    return float(lp.sum() / data.mask.sum())


def discrete_elbo(model: DSSM, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""One-sample ELBO of the *discrete* model, (B,).

    A hard path is drawn from the guide's categorical conditionals (fed one-hot
    previous states), and
    :math:`\mathrm{ELBO} = \sum_t \log N(x_t; \mu(c_t), \sigma^2) - \sum_t \mathrm{KL}(q(c_t|c_{<t},X) \| p(c_t|c_{t-1}))`.
    Its expectation is a lower bound on the exact log p(X) of :meth:`DSSM.hmm_parameters`,
    so it compares across temperatures and objectives.
    """
    K = model.n_states
    features = model.posterior.encode(x, mask.sum(-1))
    prev, hidden = model.posterior.initial(features)
    log_init, log_trans, means = model.hmm_parameters()
    p_logits = log_init.expand(x.shape[0], K)
    ll = hmm.gaussian_log_likelihood(x, means, model.config.noise_std)  # (B, T, K)
    total = x.new_zeros(x.shape[0])
    for t in range(x.shape[1]):
        q_logits, hidden = model.posterior.step(features[:, t], prev, hidden)
        state = torch.multinomial(q_logits.softmax(-1), 1, generator=generator).squeeze(-1)
        step = ll[:, t].gather(-1, state[:, None]).squeeze(-1) - categorical_kl(q_logits, p_logits)
        total = total + step.masked_fill(~mask[:, t], 0.0)
        prev = nn.functional.one_hot(state, K).to(x.dtype)
        p_logits = log_trans[state]
    return total


@torch.no_grad()
def evaluate(model: DSSM, data: SequenceData, seed: int = 0, batch_size: int = 512) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (all per valid time step where normalised).

    Keys: ``val_elbo_per_step`` (discrete ELBO), ``val_loglik_per_step`` (exact
    log p(X) of the learned HMM), ``elbo_gap_per_step`` (their difference), and,
    when ``data`` has states, ``val_accuracy`` (guide argmax) and
    ``viterbi_accuracy`` (Viterbi path of the learned HMM), both Hungarian-matched.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    log_init, log_trans, means = model.hmm_parameters()
    elbo = loglik = 0.0
    guide_pred, vit_pred = [], []
    for start in range(0, len(data), batch_size):
        batch = data.subset(torch.arange(start, min(start + batch_size, len(data))))
        x, mask = batch.x.to(device), batch.mask.to(device)
        ll = hmm.gaussian_log_likelihood(x, means, model.config.noise_std)
        loglik += float(hmm.log_likelihood(log_init, log_trans, ll, mask).sum())
        elbo += float(discrete_elbo(model, x, mask, gen).sum())
        guide_pred.append(model.guide_logits(x, mask).argmax(-1).cpu())
        vit_pred.append(hmm.viterbi(log_init, log_trans, ll, mask)[0].cpu())
    n = float(data.mask.sum())
    out = {
        "val_elbo_per_step": elbo / n,
        "val_loglik_per_step": loglik / n,
        "elbo_gap_per_step": (loglik - elbo) / n,
    }
    if data.states is not None:
        K = model.n_states
        out["val_accuracy"] = hungarian_accuracy(data.states, torch.cat(guide_pred), K, data.mask)
        out["viterbi_accuracy"] = hungarian_accuracy(data.states, torch.cat(vit_pred), K, data.mask)
    model.train(was_training)
    return out
