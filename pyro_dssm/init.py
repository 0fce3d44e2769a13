"""Data-driven initialisation: start the emitter at k-means centres of the observations.

Why: from a random start, SVI often settles with two true states merged into
one emission mean and another mean unused (a local optimum the Gumbel noise
rarely escapes). Starting the K emission means at distinct k-means centres
puts every state near a cluster of the data from step one.
"""

from __future__ import annotations

import torch
from torch import nn

from .model import DSSM


def kmeans(points: torch.Tensor, n_clusters: int, generator: torch.Generator, n_iter: int = 50) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations. points (N, D) -> centres (K, D)."""
    N = points.shape[0]
    if N < n_clusters:
        raise ValueError(f"k-means needs at least {n_clusters} points, got {N}")
    centres = [points[torch.randint(N, (1,), generator=generator)].squeeze(0)]
    for _ in range(1, n_clusters):
        d2 = torch.cdist(points, torch.stack(centres)).pow(2).min(-1).values
        idx = torch.multinomial(d2 / d2.sum() if d2.sum() > 0 else torch.ones_like(d2), 1, generator=generator)
        centres.append(points[idx].squeeze(0))
    centres = torch.stack(centres)
    for _ in range(n_iter):
        assign = torch.cdist(points, centres).argmin(-1)
        new = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=n_clusters).to(points.dtype)
        empty = counts == 0
        new = torch.where(empty[:, None], centres, new / counts.clamp(min=1)[:, None])
        if torch.allclose(new, centres):
            break
        centres = new
    return centres


def fit_emitter_to(model: DSSM, centres: torch.Tensor, steps: int = 300, lr: float = 1e-2) -> float:
    """Regress emitter(one_hot(k)) onto ``centres[k]`` (K, D); returns the final mean squared error."""
    eye = torch.eye(model.n_states, device=centres.device)
    opt = torch.optim.Adam(model.emitter.parameters(), lr=lr)
    for _ in range(steps):
        loss = nn.functional.mse_loss(model.emitter(eye), centres)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def kmeans_init(model: DSSM, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, max_points: int = 20000) -> torch.Tensor:
    """Set the emission means to k-means centres of the valid steps of x (B, T, D); returns the centres (K, D)."""
    points = x[mask]
    if points.shape[0] > max_points:
        points = points[torch.randperm(points.shape[0], generator=generator)[:max_points]]
    centres = kmeans(points, model.n_states, generator)
    fit_emitter_to(model, centres)
    return centres


def fit_transition_to(model: DSSM, stay_prob: float, steps: int = 300, lr: float = 1e-2) -> float:
    """Regress softmax(transition(one_hot(i))) onto a sticky matrix (``stay_prob`` on the diagonal).

    Returns the final KL between target rows and the fitted rows.
    """
    K = model.n_states
    eye = torch.eye(K, device=next(model.parameters()).device)
    target = torch.full((K, K), (1 - stay_prob) / (K - 1), device=eye.device)
    target.fill_diagonal_(stay_prob)
    opt = torch.optim.Adam(model.transition.parameters(), lr=lr)
    for _ in range(steps):
        log_p = model.transition(eye).log_softmax(-1)
        loss = (target * (target.log() - log_p)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


def warm_start_guide(
    model: DSSM, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
    steps: int = 100, batch_size: int = 64, lr: float = 1e-2,
) -> float:
    r"""Train the guide to match the exact posterior of the current generative model.

    Minimises :math:`\sum_t \mathrm{CE}(p(c_t \mid X), q(c_t \mid c_{t-1}, X))` with the
    targets from exact forward-backward (:func:`pyro_dssm.hmm.posterior_marginals`)
    under :meth:`DSSM.hmm_parameters`, the guide fed one-hot samples of the
    targets as previous states. An amortised guide that starts far from the
    posterior drags the model towards what it can represent (often a merged
    state); starting it at the posterior of the initial model avoids that.
    x (N, T, D), mask (N, T). Returns the last cross-entropy per step.
    """
    from . import hmm

    with torch.no_grad():
        log_init, log_trans, means = model.hmm_parameters()
        ll = hmm.gaussian_log_likelihood(x, means, model.config.noise_std)
        targets = hmm.posterior_marginals(log_init, log_trans, ll, mask)  # (N, T, K)
    opt = torch.optim.Adam(model.posterior.parameters(), lr=lr)
    net, K = model.posterior, model.n_states
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        idx = torch.randint(x.shape[0], (min(batch_size, x.shape[0]),), generator=generator).to(x.device)
        xb, mb, tb = x[idx], mask[idx], targets[idx]
        flat = tb.reshape(-1, K)
        prev_states = nn.functional.one_hot(torch.multinomial(flat.cpu(), 1, generator=generator).to(x.device).squeeze(-1), K)
        prev_states = prev_states.reshape(tb.shape).to(x.dtype)
        features = net.encode(xb, mb.sum(-1))
        prev, hidden = net.initial(features)
        ce = []
        for t in range(xb.shape[1]):
            logits, hidden = net.step(features[:, t], prev, hidden)
            ce.append(-(tb[:, t] * logits.log_softmax(-1)).sum(-1))
            prev = prev_states[:, t]
        loss = torch.stack(ce, 1)[mb].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())
