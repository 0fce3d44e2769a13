"""Data-driven initialisation of the generative networks, and a warm start for the guide.

Why: from a random start, SVI (and gradient-based maximum likelihood too)
often settles with two true states merged into one emission mean and another
mean unused, a local optimum that neither the Gumbel noise nor more epochs
escape. So, before any gradient step:

1. k-means++ on the observations gives K distinct centres (``init=kmeans``),
2. optionally refined by a few Baum-Welch (EM) iterations of a plain Gaussian
   HMM with the model's fixed sigma and uniform p(c_1) (``init=em``),
3. repeated from ``init_restarts`` k-means seeds, keeping the candidate with
   the highest exact log p(X) (like ``n_init`` in scikit-learn / hmmlearn),
4. the emitter and transition networks are then regressed onto the chosen
   means and transition matrix (:func:`fit_networks_to`),
5. and the guide is trained towards the exact posterior of that model
   (:func:`warm_start_guide`), so that SVI starts from an amortised posterior
   close to the truth rather than dragging the model towards a merged state.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from pyro_dssm.model import hmm
from pyro_dssm.inference.init_families import family_init
from pyro_dssm.data.chain import sticky_transition  # noqa: F401 (re-exported)
from pyro_dssm.inference.init_start import kmeans  # noqa: F401 (re-exported)
from pyro_dssm.model.dssm import DSSM, NeuralHMM

log = logging.getLogger(__name__)


def baum_welch(
    x: torch.Tensor, mask: torch.Tensor, means: torch.Tensor, trans: torch.Tensor, noise_std: float, n_iter: int
) -> tuple[torch.Tensor, torch.Tensor, float]:
    r"""EM for the means and transition matrix of a Gaussian HMM (uniform p(c_1), fixed sigma).

    The E-step uses autograd on the exact :func:`pyro_dssm.model.hmm.log_likelihood`:
    :math:`\partial \log p(X) / \partial \log p(x_t|c_t=k) = p(c_t=k|X)` and
    :math:`\partial \log p(X) / \partial \log A_{ij}` = expected number of i -> j transitions.
    M-step: means = posterior-weighted averages; A = normalised expected counts.

    x (B, T, D), mask (B, T), means (K, D), trans (K, K). Returns the new means,
    transition matrix and log p(X) per valid step at the last E-step.
    """
    K = means.shape[0]
    log_init = hmm.uniform_log_init(K, x)
    n_steps = float(mask.sum())
    loglik = float("nan")
    for _ in range(n_iter):
        log_trans = trans.clamp_min(1e-12).log().requires_grad_()
        log_lik = hmm.gaussian_log_likelihood(x, means, noise_std).detach().requires_grad_()
        total = hmm.log_likelihood(log_init, log_trans, log_lik, mask).sum()
        counts, gamma = torch.autograd.grad(total, [log_trans, log_lik])
        weight = gamma.sum((0, 1))  # (K,)
        means = torch.einsum("btk,btd->kd", gamma, x) / weight.clamp_min(1e-12)[:, None]
        trans = (counts + 1e-6) / (counts + 1e-6).sum(-1, keepdim=True)
        loglik = float(total.detach()) / n_steps
    return means.detach(), trans.detach(), loglik


def hmm_log_likelihood_per_step(x, mask, means, trans, noise_std) -> float:
    """Exact log p(X) per valid step of a Gaussian HMM with uniform p(c_1)."""
    K = means.shape[0]
    log_init = hmm.uniform_log_init(K, x)
    ll = hmm.gaussian_log_likelihood(x, means, noise_std)
    return float(hmm.log_likelihood(log_init, trans.log(), ll, mask).sum() / mask.sum())


def fit_networks_to(net: NeuralHMM, means: torch.Tensor, trans: torch.Tensor, steps: int = 300, lr: float = 1e-2):
    """Regress emitter(one_hot(k)) onto ``means[k]`` (K, D) and softmax(transition(one_hot(i))) onto ``trans[i]`` (K, K).

    Returns the final (mean squared error of the means, mean KL of the transition rows).
    """
    eye = torch.eye(net.n_states, dtype=means.dtype, device=means.device)
    params = list(net.emitter.parameters()) + list(net.transition.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    log_target = trans.clamp_min(1e-12).log()
    for _ in range(steps):
        mse = nn.functional.mse_loss(net.emitter(eye), means)
        kl = (trans * (log_target - net.transition(eye).log_softmax(-1))).sum(-1).mean()
        opt.zero_grad()
        (mse + kl).backward()
        opt.step()
    return float(mse.detach()), float(kl.detach())


def data_driven_init(
    net: NeuralHMM, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, method: str = "em",
    restarts: int = 1, em_iters: int = 20, stay_prob: float = 0.8, max_sequences: int = 300,
) -> dict[str, float]:
    """Steps 1-4 of the module docstring. x (N, T, D), mask (N, T); ``method`` is ``kmeans`` or ``em``.

    For ``model.emission`` other than ``gaussian``, steps 1-4 fit that family's classical HMM
    instead (:mod:`pyro_dssm.inference.init_families`).

    Uses at most ``max_sequences`` randomly chosen sequences. Returns the chosen
    candidate's ``init_loglik_per_step`` and index ``init_restart``.
    """
    if method not in ("kmeans", "em"):
        raise ValueError(f"init method must be 'kmeans' or 'em', got {method!r}")
    if x.shape[0] > max_sequences:
        idx = torch.randperm(x.shape[0], generator=generator)[:max_sequences].to(x.device)
        x, mask = x[idx], mask[idx]
    if net.config.emission != "gaussian":  # the other families: EM of their classical HMM, distilled
        return family_init(net, x, mask, generator, method, restarts, em_iters, stay_prob)
    points = x[mask]
    noise_std = net.config.noise_std
    best = None
    for restart in range(max(1, restarts)):
        means = kmeans(points.cpu(), net.n_states, generator).to(x)  # the generator lives on the CPU
        trans = sticky_transition(net.n_states, stay_prob).to(x)
        if method == "em" and em_iters > 0:
            means, trans, _ = baum_welch(x, mask, means, trans, noise_std, em_iters)
        score = hmm_log_likelihood_per_step(x, mask, means, trans, noise_std)
        log.debug("init restart %d: log p(X)/step %.4f", restart, score)
        if best is None or score > best[0]:
            best = (score, restart, means, trans)
    score, restart, means, trans = best
    fit_networks_to(net, means, trans)
    return {"init_loglik_per_step": score, "init_restart": restart}


def warm_start_guide(
    model: DSSM, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
    steps: int = 100, batch_size: int = 64, lr: float = 1e-2, targets: str | None = None,
) -> float:
    r"""Train the guide's conditionals :math:`q(c_t \mid c_{t-1}, X)` towards the exact posterior of the current model.

    The exact posterior is that of the HMM of :meth:`DSSM.exact_hmm`. Each
    step draws a minibatch of sequences, previous states :math:`\hat c_{1:T}` and
    targets :math:`p_t`, and minimises :math:`\sum_t \mathrm{CE}(p_t, q(c_t \mid \hat c_{t-1}, X))`
    with the guide fed :math:`\hat c_{t-1}` as its previous state:

    * ``targets="marginals"``: :math:`p_t = p(c_t \mid X)`, the smoothed marginals
      (:func:`pyro_dssm.model.hmm.posterior_marginals`), and each :math:`\hat c_t`
      drawn from them independently of the others. The target ignores the
      previous state: this fits :math:`q(c_t \mid c_{t-1}, X)` to :math:`p(c_t \mid X)`,
      not to the exact conditional.
    * ``targets="chain"``: a path :math:`\hat c_{1:T} \sim p(c_{1:T} \mid X)` of the exact
      posterior chain and :math:`p_t = p(c_t \mid \hat c_{t-1}, X) \propto A_{\hat c_{t-1} c_t}\,
      p(x_t \mid c_t)\, \beta_t(c_t)` (:func:`pyro_dssm.model.hmm.posterior_chain`,
      :func:`~pyro_dssm.model.hmm.sample_chain`): in expectation over the paths,
      :math:`\mathrm{KL}(p(C \mid X) \,\|\, q(C \mid X))` up to a constant.
      On the default data, seed 0, the guide's accuracy after the warm start
      was 0.98365 against 0.9837 with ``"marginals"`` (seed 1: 0.9860 / 0.9859, seed 2: 0.9903 / 0.99025).
      On ``data=switching_ar`` (``autoregressive``), seed 0, ``"chain"`` left a lower cross-entropy
      (0.069 against 0.130 nats/step) but a lower final greedy accuracy (0.979 x oracle against 0.985):
      ``"marginals"`` stays the default without the messages.

    * ``targets=None`` (the default): ``"chain"`` when the guide's evidence holds the backward
      messages (``model.guide_messages``; its conditionals, not its marginals, are then the exact
      answer, and the residual the networks learn is zero there), else ``"marginals"``.

    An amortised guide that starts far from the posterior drags the model
    towards what it can represent (often a merged state); starting it near
    the posterior of the initial model avoids that.
    x (N, T, D), mask (N, T). Returns the last cross-entropy per valid step.
    """
    if targets is None:
        targets = "chain" if model.uses_messages else "marginals"
    if targets not in ("marginals", "chain"):
        raise ValueError(f"warm-start targets must be 'marginals' or 'chain', got {targets!r}")
    with torch.no_grad():
        log_init, log_trans, ll = model.exact_hmm(x)
        if targets == "chain":
            posterior = hmm.posterior_chain(log_init, log_trans, ll, mask)  # (N, T, K, K)
        else:
            posterior = hmm.posterior_marginals(log_init, log_trans, ll, mask)  # (N, T, K)
    opt = torch.optim.Adam(model.posterior.parameters(), lr=lr)
    net = model.posterior
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=generator).to(x.device)
        xb, mb = x[idx], mask[idx]
        draw = _chain_targets if targets == "chain" else _marginal_targets
        prev_states, target = draw(posterior[idx], generator)
        given = prev_states.to(x.dtype).unbind(1)
        features, evidence = model.guide_inputs(xb, mb.sum(-1))
        logits = net.unroll(features, lambda t, _: given[t], evidence=evidence)[0]
        loss = (-(target * logits.log_softmax(-1)).sum(-1))[mb].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def _marginal_targets(marginals: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, K) marginals -> one-hot states drawn independently per step (B, T, K), and the marginals as targets."""
    K = marginals.shape[-1]
    flat = marginals.reshape(-1, K).cpu()  # the generator lives on the CPU
    states = torch.multinomial(flat, 1, generator=generator).to(marginals.device).squeeze(-1)
    return nn.functional.one_hot(states, K).reshape(marginals.shape), marginals


def _chain_targets(log_chain: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, K, K) exact posterior chain -> one-hot path (B, T, K) drawn from it, and the
    (B, T, K) conditionals p(c_t | sampled c_{t-1}, X) (p(c_1 | X) at t = 1)."""
    B, T, K, _ = log_chain.shape
    path = hmm.sample_chain(log_chain, generator)  # (B, T)
    rows = torch.cat([path[:, :1], path[:, :-1]], 1)  # the sampled c_{t-1}; any row at t = 1
    target = log_chain.gather(2, rows[:, :, None, None].expand(B, T, 1, K)).squeeze(2).exp()
    return nn.functional.one_hot(path, K), target
