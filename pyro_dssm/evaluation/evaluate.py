"""Validation metrics of a trained DSSM and the oracle ceiling (all exact maths from :mod:`hmm`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pyro_dssm.model import hmm
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.model.relaxed import categorical_kl
from pyro_dssm.evaluation.metrics import clustering_scores, hungarian_accuracy
from pyro_dssm.model.dssm import DSSM, NeuralHMM


def exact_decode(
    exact_hmm: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]], data: SequenceData,
    device: torch.device, batch_size: int = 512,
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Exact inference in an HMM over ``data``, batch by batch.

    ``exact_hmm``: x (B, T, D) -> (log_init (K,), log_trans (K, K) or (B, T, K, K), log_lik (B, T, K)): a model's
    :meth:`~pyro_dssm.model.dssm.NeuralHMM.exact_hmm` or a ground truth's (:func:`oracle_metrics`).

    Returns:
        log p(X) summed over sequences, the (N, T) Viterbi paths and the (N, T)
        argmax of the posterior marginals (both on CPU).
    """
    loglik, vit, marg = 0.0, [], []
    for start in range(0, len(data), batch_size):
        batch = data.subset(torch.arange(start, min(start + batch_size, len(data))))
        x, mask = batch.x.to(device), batch.mask.to(device)
        log_init, log_trans, ll = exact_hmm(x)
        loglik += float(hmm.log_likelihood(log_init, log_trans, ll, mask).sum())
        vit.append(hmm.viterbi(log_init, log_trans, ll, mask)[0].cpu())
        marg.append(hmm.posterior_marginals(log_init, log_trans, ll, mask).argmax(-1).cpu())
    return loglik, torch.cat(vit), torch.cat(marg)


def oracle_metrics(params, data: SequenceData) -> dict[str, float]:
    """The ceiling for this data: decoding with the true HMM parameters.

    ``params``: the ground truth, any object with ``n_states``, ``initial`` (K,),
    ``transition`` (K, K) or ``log_transitions(x) -> (B, T, K, K)`` (switches that read the observed past,
    :class:`~pyro_dssm.data.recurrent.TrackParams`) and ``log_likelihoods(x (B, T, D)) -> (B, T, K)``
    (e.g. :class:`~pyro_dssm.data.synthetic.HMMParams`).

    ``oracle_accuracy``: Hungarian accuracy of argmax_k p(c_t = k | X) (posterior
    marginals, which maximise expected per-step accuracy); ``oracle_loglik_per_step``:
    log p(X) per valid step under the true parameters.
    """
    def exact_hmm(x):
        log_trans = params.log_transitions(x) if hasattr(params, "log_transitions") else params.transition.log()
        return params.initial.log(), log_trans, params.log_likelihoods(x)
    loglik, _, marg = exact_decode(exact_hmm, data, torch.device("cpu"))
    return {
        "oracle_accuracy": hungarian_accuracy(data.states, marg, params.n_states, data.mask),
        "oracle_loglik_per_step": loglik / float(data.mask.sum()),
    }


@torch.no_grad()
def evaluate_hmm(net: NeuralHMM, data: SequenceData) -> dict[str, float]:
    """Exact metrics of the HMM defined by ``net``'s networks (DSSM or exact baseline).

    Keys: ``val_loglik_per_step`` (exact log p(X) per valid step) and, with
    labels, ``viterbi_accuracy`` and ``marginal_accuracy`` (Hungarian-matched).
    """
    loglik, vit, marg = exact_decode(net.exact_hmm, data, next(net.parameters()).device)
    out = {"val_loglik_per_step": loglik / float(data.mask.sum())}
    if data.states is not None:
        out["viterbi_accuracy"] = hungarian_accuracy(data.states, vit, net.n_states, data.label_mask)
        out["marginal_accuracy"] = hungarian_accuracy(data.states, marg, net.n_states, data.label_mask)
    return out


def discrete_elbo(model: DSSM, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""One-sample ELBO of the *discrete* model, each step's reconstruction averaged exactly over c_t, (B,).

    A hard path is drawn from the guide's categorical conditionals (fed one-hot
    previous states), and
    :math:`\mathrm{ELBO} = \sum_t \sum_k q(c_t = k \mid c_{<t}, X) \log p(x_t \mid k, x_{<t}) - \sum_t \mathrm{KL}(q(c_t|c_{<t},X) \| p(c_t|c_{t-1}))`
    at the path's earlier steps. Averaging over the current step (Rao-Blackwellisation) keeps the
    expectation and removes the noise of drawing c_t, which in a one-sample estimate at the sampled
    state alone is larger than the differences between epochs that keep-best ranks by it.
    Its expectation is the ELBO, a lower bound on the exact log p(X) of
    :meth:`DSSM.exact_hmm`, so it compares across temperatures and objectives.
    """
    B, K = x.shape[0], model.n_states
    features, evidence = model.guide_inputs(x, mask.sum(-1))

    def sample(t, q_logits):
        state = torch.multinomial(q_logits.softmax(-1), 1, generator=generator).squeeze(-1)
        return nn.functional.one_hot(state, K).to(x.dtype)
    q_logits, fed = model.posterior.unroll(features, sample, evidence=evidence)  # (B, T, K) each
    states = fed.argmax(-1)  # (B, T) the sampled path
    log_init, log_trans, ll = model.exact_hmm(x)  # ll (B, T, K)
    # p(c_1) then p(c_t | c_{t-1}) at the sampled previous states
    if log_trans.dim() == 2:
        rows = log_trans[states[:, :-1]]  # (B, T-1, K)
    else:  # a table per step: sequence b's row c_{t-1} at step t
        rows = log_trans[:, 1:].gather(2, states[:, :-1, None, None].expand(-1, -1, 1, K)).squeeze(2)
    p_logits = torch.cat([log_init.expand(B, 1, K), rows], 1)
    steps = (q_logits.softmax(-1) * ll).sum(-1) - categorical_kl(q_logits, p_logits)
    total = x.new_zeros(B)
    for step in steps.masked_fill(~mask, 0.0).unbind(1):
        total = total + step  # in step order: the same float32 sum as the recursion always gave
    return total


@torch.no_grad()
def evaluate(model: DSSM, data: SequenceData, seed: int = 0, batch_size: int = 512) -> dict[str, float]:
    """Metrics of ``model`` on ``data`` (all per valid time step where normalised).

    Keys: those of :func:`evaluate_hmm`, plus ``val_elbo_per_step`` (discrete
    ELBO, :func:`discrete_elbo`), ``elbo_gap_per_step`` (exact log p(X) minus ELBO) and, with labels,
    ``val_accuracy`` (guide argmax, Hungarian-matched), ``val_nmi`` and ``val_ari``
    on the labelled valid steps.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    out = evaluate_hmm(model, data)
    elbo, guide_pred = 0.0, []
    for start in range(0, len(data), batch_size):
        batch = data.subset(torch.arange(start, min(start + batch_size, len(data))))
        x, mask = batch.x.to(device), batch.mask.to(device)
        elbo += float(discrete_elbo(model, x, mask, gen).sum())
        guide_pred.append(model.guide_logits(x, mask).argmax(-1).cpu())
    n = float(data.mask.sum())
    out["val_elbo_per_step"] = elbo / n
    out["elbo_gap_per_step"] = out["val_loglik_per_step"] - out["val_elbo_per_step"]
    if data.states is not None:
        # guide argmax against the labelled steps: val_accuracy, val_nmi, val_ari
        out.update(clustering_scores(data.states, torch.cat(guide_pred), model.n_states, data.label_mask, "val_"))
    model.train(was_training)
    return out
