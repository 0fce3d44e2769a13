"""Starting points of every data-driven init: k-means++ centres (the sticky transition matrix is :func:`pyro_dssm.data.chain.sticky_transition`)."""

from __future__ import annotations

import torch


def kmeans(points: torch.Tensor, n_clusters: int, generator: torch.Generator, n_iter: int = 50) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations. points (N, D) -> centres (K, D)."""
    N = points.shape[0]
    if N < n_clusters:
        raise ValueError(f"k-means needs at least {n_clusters} points, got {N}")
    centres = [points[torch.randint(N, (1,), generator=generator)].squeeze(0)]
    for _ in range(1, n_clusters):
        d2 = torch.cdist(points, torch.stack(centres)).pow(2).min(-1).values
        weights = d2 / d2.sum() if d2.sum() > 0 else torch.ones_like(d2)
        centres.append(points[torch.multinomial(weights, 1, generator=generator)].squeeze(0))
    centres = torch.stack(centres)
    for _ in range(n_iter):
        assign = torch.cdist(points, centres).argmin(-1)
        new = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=n_clusters).to(points.dtype)
        new = torch.where(counts[:, None] == 0, centres, new / counts.clamp(min=1)[:, None])
        if torch.allclose(new, centres):
            break
        centres = new
    return centres

