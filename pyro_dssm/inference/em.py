r"""The classical init of every family: Baum-Welch of the family's parametric HMM, then distilled into the networks.

One loop for every emission family (:class:`~pyro_dssm.model.emissions.base.Emission`), which
brings its own M-step (:meth:`~pyro_dssm.model.emissions.base.Emission.m_step`), the density of
its classical HMM and the move of its networks to it (``fit_to``):

1. candidates start from labels: the nearest k-means++ centre of each x_t (``restarts`` seeds)
   and, with ``method="em"``, i.i.d. uniform labels (``em_random_starts`` per k-means start, a
   family attribute: on real data the best AR-HMM often comes from a random start);
2. each runs ``em_iters`` Baum-Welch iterations (:func:`baum_welch`; fewer once converged, ``em_tol``) with a
   sticky Dirichlet prior on the transitions (``em_stickiness`` x a state's share of the steps extra
   self-transitions); with ``screen_iters`` > 0, each runs that many and only the ``finalists`` best by log p(X)
   the rest (a screening round: on long recordings with many candidates most of them are far behind after a few
   iterations). Candidates share their E-steps (:func:`baum_welch_many`);
3. the candidate with the highest exact log p(X) wins (as ``n_init`` in scikit-learn / hmmlearn);
4. :func:`distill` puts it into the emission and transition networks (exactly: a family copies its parameters or
   solves its network's output layer, :func:`pyro_dssm.model.networks.fit_output_layer`).
"""

from __future__ import annotations

import logging
import math

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from pyro_dssm.data.chain import sticky_transition
from pyro_dssm.model import hmm, scan
from pyro_dssm.model.expected_counts import grouped_statistics
from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.known import clamped

log = logging.getLogger(__name__)


def kmeans(points: torch.Tensor, n_clusters: int, generator: torch.Generator, n_iter: int = 50) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations. points (N, D) -> centres (K, D); points with NaN cells (missing)
    go to :func:`masked_kmeans`."""
    N = points.shape[0]
    if N < n_clusters:
        raise ValueError(f"k-means needs at least {n_clusters} points, got {N}")
    if bool(torch.isnan(points).any()):
        return masked_kmeans(points, n_clusters, generator, n_iter)
    centres = [points[torch.randint(N, (1,), generator=generator)].squeeze(0)]
    for _ in range(1, n_clusters):
        d2 = torch.cdist(points, torch.stack(centres)).pow(2).min(-1).values
        weights = d2 / d2.sum() if d2.sum() > 0 else torch.ones_like(d2)
        centres.append(points[torch.multinomial(weights, 1, generator=generator)].squeeze(0))
    centres, points_t = torch.stack(centres), points.T.contiguous()
    for _ in range(n_iter):
        assign = nearest(points_t, centres)
        new = torch.zeros_like(centres).index_add_(0, assign, points)
        counts = torch.bincount(assign, minlength=n_clusters).to(points.dtype)
        new = torch.where(counts[:, None] == 0, centres, new / counts.clamp(min=1)[:, None])
        if torch.allclose(new, centres):
            break
        centres = new
    return centres


def nearest(points_t: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    r"""(N,) index of the nearest of centres (K, D) to each of the points, given transposed, points_t (D, N): the
    argmin over k of :math:`\lVert c_k \rVert^2 - 2 c_k \cdot x` (the squared distance less
    :math:`\lVert x \rVert^2`), one (K, D) x (D, N) product and a min over its K rows (the wide layout: ~4x cheaper
    than the (N, D) x (D, K) one and ``cdist`` at N = 10^4, K = 5)."""
    return torch.addmm(centres.pow(2).sum(-1, keepdim=True), centres, points_t, alpha=-2.0).min(0).indices


def masked_kmeans(points: torch.Tensor, n_clusters: int, generator: torch.Generator,
                  n_iter: int = 50) -> torch.Tensor:
    """k-means of points (N, D) with NaN cells: distances over each point's observed cells
    (:func:`observed_distance`), each centre's channel the mean of its points' observed values there (k-POD's
    Lloyd step without imputation). k-means++ seeding from points with at least half their cells observed."""
    observed = ~torch.isnan(points)
    o, filled = observed.to(points.dtype), points.nan_to_num(0.0)
    seeds = points[observed.float().mean(-1) >= 0.5]
    seeds = seeds if len(seeds) >= n_clusters else points
    first = seeds[torch.randint(len(seeds), (1,), generator=generator)]
    centres = first.nan_to_num(0.0)
    for _ in range(1, n_clusters):
        d2 = observed_distance(seeds, centres).min(-1).values
        weights = d2 / d2.sum() if d2.sum() > 0 else torch.ones_like(d2)
        centres = torch.cat([centres, seeds[torch.multinomial(weights, 1, generator=generator)].nan_to_num(0.0)])
    for _ in range(n_iter):
        assign = nn.functional.one_hot(observed_distance(points, centres).argmin(-1), n_clusters).to(points.dtype)
        counts = assign.T @ o  # (K, D) observed values of each cluster's points per channel
        new = torch.where(counts > 0, (assign.T @ filled) / counts.clamp_min(1), centres)
        if torch.allclose(new, centres):
            break
        centres = new
    return centres


def start_labels(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, n_states: int,
                 random: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T, K) one-hot labels to start from, and the k-means++ centres (K, D) they come from: the nearest
    centre of each x_t, or i.i.d. uniform states (centres None)."""
    if random:
        return nn.functional.one_hot(torch.randint(n_states, x.shape[:2], generator=generator), n_states).to(x), None
    centres = kmeans(x[mask].cpu(), n_states, generator).to(x)  # the generator lives on the CPU; NaN: missing
    labels = observed_distance(x.reshape(-1, x.shape[-1]), centres).argmin(-1).reshape(x.shape[:2]).cpu()
    return nn.functional.one_hot(labels, n_states).to(x), centres


def segment_labels(x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator, n_states: int,
                   length: int) -> torch.Tensor:
    """(B, T, K) one-hot labels constant on segments of ``length`` steps: each sequence cut every ``length`` steps from
    a random phase, every segment summarised per channel by its level, AR(1) slope and innovation scale
    (:func:`_segment_summary`, standardised over the segments), the summaries clustered by k-means.
    A start for regimes that last: k-means of single steps sees a point where a regime is a pattern over many.
    Segments are halved until there are at least ``n_states`` of them. x (B, T, D) may hold NaN (missing)."""
    lengths = mask.sum(-1).tolist()
    while True:
        bounds = []  # (sequence, start, end)
        for b, n in enumerate(lengths):
            phase = int(torch.randint(length, (1,), generator=generator))
            cuts = sorted({0, *range(phase, n, length)})
            bounds += [(b, s, e) for s, e in zip(cuts, cuts[1:] + [n])]
        if len(bounds) >= n_states or length <= 2:
            break
        length //= 2
    summaries = torch.stack([_segment_summary(x[b, s:e].cpu()) for b, s, e in bounds])  # (S, 3 D)
    centre = summaries.nanmean(0)
    summaries = (summaries - centre) / ((summaries - centre).pow(2).nanmean(0).sqrt() + 1e-6)
    assign = observed_distance(summaries, kmeans(summaries, n_states, generator)).argmin(-1).tolist()
    labels = torch.zeros(x.shape[:2], dtype=torch.long)
    for (b, s, e), k in zip(bounds, assign):
        labels[b, s:e] = k
    return nn.functional.one_hot(labels, n_states).to(x)


def _segment_summary(segment: torch.Tensor) -> torch.Tensor:
    r"""segment (n, D) -> (3 D,): per channel the mean m, the AR(1) slope a of :math:`x_t - m` on :math:`x_{t-1} - m`
    and the log standard deviation of its residual (the innovation's scale), over the observed cells (NaN where a
    channel has none)."""
    mean = segment.nanmean(0)
    if len(segment) < 2:
        return torch.cat([mean, torch.zeros_like(mean), torch.full_like(mean, float("nan"))])
    now, before = segment[1:] - mean, segment[:-1] - mean
    slope = (now * before).nansum(0) / (before.pow(2) * ~torch.isnan(now)).nansum(0).clamp_min(1e-12)
    residual = (now - slope * before).pow(2).nanmean(0)
    return torch.cat([mean, slope, 0.5 * residual.clamp_min(1e-12).log()])


def align_to_known(labels: torch.Tensor, centres: torch.Tensor | None, clamp: torch.Tensor,
                   mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Start labels (B, T, K) and their centres (K, D) renamed so that state k is the known class k: the
    permutation that agrees most with the known states (Hungarian, on their confusion counts), then each known
    step labelled with its own state. ``clamp`` (B, T, K): the known states' log-indicator."""
    known = (clamp < 0).any(-1) & mask  # (B, T)
    given = (clamp == 0).to(labels)  # (B, T, K): one-hot where known
    counts = torch.einsum("btk,btj->kj", labels * known[..., None], given)  # (label k, class j)
    rows, cols = linear_sum_assignment(-counts.cpu().numpy())
    order = torch.empty(labels.shape[-1], dtype=torch.long)
    order[torch.as_tensor(cols)] = torch.as_tensor(rows)  # state j takes the labels of k-means cluster order[j]
    labels = labels[..., order.to(labels.device)]
    centres = None if centres is None else centres[order.to(centres.device)]
    return torch.where(known[..., None], given, labels), centres


def observed_distance(points: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """points (N, D) with NaN for missing cells, centres (K, D) -> (N, K) squared distances over each point's
    observed cells (the Euclidean distance squared when nothing is missing)."""
    observed = ~torch.isnan(points)
    if bool(observed.all()):
        return torch.cdist(points, centres).pow(2)
    filled = points.nan_to_num(0.0)
    o = observed.to(points.dtype)
    return (filled.pow(2).sum(-1, keepdim=True) - 2 * filled @ centres.T + o @ centres.pow(2).T).clamp_min(0.0)


# EM's E-step costs in units of one step of the forward-backward (~25 us, one thread; measured: benchmarks/RESULTS.md,
# "EM's E-step by the forward-backward"): G candidates' forward-backward about T units (its steps are small ops whose
# cost hardly grows with G, B or K in the shapes where the scan competes), the parallel scan of one candidate about
# SCAN_ROUND_COST log2 T + B K^3 T / SCAN_CELLS_PER_UNIT
SCAN_ROUND_COST = 10.0
SCAN_CELLS_PER_UNIT = 3000.0


def e_step_log_px(batch: int, steps: int, n_states: int, group: int = 1):
    """The exact log p(X) whose statistics EM's E-step takes for ``group`` candidates over B = ``batch`` sequences of
    T = ``steps`` steps and K = ``n_states``: :func:`pyro_dssm.model.scan.parallel_log_likelihood` (log2 T rounds of
    products, its gradients taken candidate by candidate) where that costs less than the candidates' forward-backward
    together (a few long sequences and few candidates: bee dances, long recordings), else the sequential scaled
    forward :func:`pyro_dssm.model.hmm.log_likelihood`, whose statistics
    :func:`pyro_dssm.model.expected_counts.grouped_statistics` computes for all candidates at once. Both are exact; they
    differ by rounding (float32)."""
    scan_cost = SCAN_ROUND_COST * math.log2(max(steps, 2)) + batch * n_states ** 3 * steps / SCAN_CELLS_PER_UNIT
    if group * scan_cost < steps:
        return scan.parallel_log_likelihood
    return hmm.log_likelihood


def _log_prior(log_trans: torch.Tensor, kappa: float) -> torch.Tensor:
    r""":math:`\sum_{ij} (\kappa [i = j] + 10^{-6}) \log A_{ij}`: the log density (up to a constant) of the Dirichlet
    prior whose MAP :func:`baum_welch`'s transition update is, for log_trans (..., K, K) -> (...)."""
    K = log_trans.shape[-1]
    pseudo = kappa * torch.eye(K, dtype=log_trans.dtype, device=log_trans.device) + 1e-6
    return (pseudo * log_trans).sum((-2, -1))


def baum_welch(emitter: Emission, params: dict, x: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor,
               n_iter: int, kappa: float = 0.0, clamp: torch.Tensor | None = None,
               inputs: torch.Tensor | None = None, tol: float = 0.0) -> tuple[dict, torch.Tensor, float]:
    r"""EM for the classical HMM of ``emitter``'s family (uniform p(c_1)) from ``params`` and ``trans`` (K, K).

    The E-step's posteriors and expected transition counts are the gradients of the exact log p(X),
    :math:`\partial \log p(X) / \partial \log p(x_t|c_t=k) = p(c_t=k|X)` and
    :math:`\partial \log p(X) / \partial \log A_{ij}` = expected number of i -> j transitions, computed by the
    scaled forward-backward (:mod:`pyro_dssm.model.expected_counts`) or as the gradients of the parallel scan
    (:func:`e_step_log_px` picks).
    M-step: the family's :meth:`~pyro_dssm.model.emissions.base.Emission.m_step`; transitions the MAP under
    a sticky Dirichlet prior, :math:`A_{ij} \propto n_{ij} + \kappa [i = j]`.
    x (B, T, D), mask (B, T) bool; ``clamp`` (B, T, K) the known states' log-indicator added to the table
    (:mod:`pyro_dssm.model.known`), or None; ``inputs`` (B, T, U) for an emission that reads them (a GLM-HMM's
    regressors, in its table and M-step). ``tol`` > 0: stop after the M-step of the first iteration whose E-step
    found the objective EM maximises, log p(X) + log Dir(A) (:func:`_log_prior`), per valid step less than ``tol``
    above the previous one's (converged, as hmmlearn's ``tol``; EM never lowers it, while log p(X) alone may fall
    under the sticky prior). Returns the parameters, the transition matrix and the exact log p(X) per valid step
    of the returned parameters. One candidate of :func:`_baum_welch_group`, which holds the loop.
    """
    return _baum_welch_group(emitter, [params], x, mask, trans[None], n_iter, kappa, clamp, inputs, tol)[0]


def _grouped_e_step(batch: int, steps: int, n_states: int, group: int):
    """EM's two passes for G candidates, as :func:`e_step_log_px` picks them: the E-step, (log_init (K,), log_trans
    (G, K, K), log_lik (G, B, T, K), mask) -> (G, B) log p(X), (G, K, K) expected transition counts and (G, B, T, K)
    posterior marginals; and log p(X) alone, (G, B), to score the result. The scaled forward-backward and forward of
    all candidates at once (:func:`pyro_dssm.model.expected_counts.grouped_statistics`,
    :func:`pyro_dssm.model.hmm.grouped_log_likelihood`), or the parallel scan (its gradients for the E-step)
    candidate by candidate."""
    single = e_step_log_px(batch, steps, n_states, group)
    if single is hmm.log_likelihood:
        return grouped_statistics, hmm.grouped_log_likelihood

    def each(log_init, log_trans, log_lik, mask):
        return torch.stack([single(log_init, log_trans[g], log_lik[g], mask) for g in range(len(log_trans))])

    def by_scan(log_init, log_trans, log_lik, mask):
        out = []
        for g in range(len(log_trans)):
            log_trans_g, log_lik_g = log_trans[g].detach().requires_grad_(), log_lik[g].detach().requires_grad_()
            log_px = single(log_init, log_trans_g, log_lik_g, mask)
            out.append((log_px.detach(), *torch.autograd.grad(log_px.sum(), [log_trans_g, log_lik_g])))
        return tuple(torch.stack(parts) for parts in zip(*out))
    return by_scan, each


# Candidates whose E-step is the sequential forward run together (:func:`baum_welch_many`), as many per group as keep
# G x B x T x K at most this many cells (the tables and the forward-backward's messages: ~100 MB in float32)
GROUP_MAX_CELLS = 2 ** 22


def baum_welch_many(emitter: Emission, starts: list[dict], x: torch.Tensor, mask: torch.Tensor,
                    transitions: list[torch.Tensor], n_iter: int, kappa: float = 0.0, clamp: torch.Tensor | None = None,
                    inputs: torch.Tensor | None = None, tol: float = 0.0) -> list[tuple[dict, torch.Tensor, float]]:
    """:func:`baum_welch` of every candidate (``starts[g]`` with ``transitions[g]`` (K, K)) on the same data, in the
    same order: groups of candidates share each E-step (:func:`pyro_dssm.model.expected_counts.grouped_statistics`: T
    batched steps instead of G T small ones; at most ``GROUP_MAX_CELLS`` cells per group), each candidate with its
    own stop (``tol``). Where :func:`e_step_log_px` picks the parallel scan for the group (a few long sequences and
    few candidates) they run one by one. The same results as one by one, up to float rounding."""
    (B, T), K = x.shape[:2], transitions[0].shape[-1]
    size = min(len(starts), max(1, GROUP_MAX_CELLS // (B * T * K)))
    size = 1 if e_step_log_px(B, T, K, size) is not hmm.log_likelihood else size
    return [run for g in range(0, len(starts), size) for run in
            _baum_welch_group(emitter, starts[g:g + size], x, mask, torch.stack(transitions[g:g + size]), n_iter, kappa,
                              clamp, inputs, tol)]


def _baum_welch_group(emitter: Emission, starts: list[dict], x: torch.Tensor, mask: torch.Tensor, trans: torch.Tensor,
                      n_iter: int, kappa: float, clamp: torch.Tensor | None, inputs: torch.Tensor | None,
                      tol: float) -> list[tuple[dict, torch.Tensor, float]]:
    """:func:`baum_welch_many` for one group: trans (G, K, K). The candidates still iterating share each E-step; a
    candidate leaves the group once converged (:func:`baum_welch`'s rule)."""
    G, K = trans.shape[:2]
    e_step, log_px_of = _grouped_e_step(*x.shape[:2], K, G)
    log_init, eye = hmm.uniform_log_init(K, x), torch.eye(K, dtype=x.dtype, device=x.device)
    params, trans, n_valid = list(starts), trans.clone(), float(mask.sum())
    previous, active = [-float("inf")] * G, list(range(G))

    def tables(which: list[int]) -> torch.Tensor:
        return torch.stack([clamped(emitter.classical_table(params[g], x, inputs), clamp) for g in which])

    for _ in range(n_iter):
        if not active:
            break
        log_trans = trans[active].clamp_min(1e-12).log()
        with torch.no_grad():
            log_lik = tables(active)
        log_px, counts, gamma = e_step(log_init, log_trans, log_lik, mask)
        totals = log_px.sum(-1)  # (A,)
        counts = counts + kappa * eye + 1e-6
        trans[active] = counts / counts.sum(-1, keepdim=True)
        objective = (totals + _log_prior(log_trans, kappa)) / n_valid
        still = []
        for i, (g, current) in enumerate(zip(active, objective.tolist())):
            params[g] = emitter.m_step(x, mask, gamma[i], **emitter.input_keywords(inputs))
            if not (tol > 0 and current - previous[g] < tol):
                still.append(g)
            previous[g] = current
        active = still
    with torch.no_grad():
        scores = log_px_of(log_init, trans.log(), tables(list(range(G))), mask).sum(-1) / mask.sum()
    return [(params[g], trans[g], float(scores[g])) for g in range(G)]


def fit_classical(emitter: Emission, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
                  method: str = "em", restarts: int = 1, em_iters: int = 20, stay_prob: float = 0.8,
                  clamp: torch.Tensor | None = None, inputs: torch.Tensor | None = None,
                  screen_iters: int = 0, finalists: int = 4, em_tol: float = 0.0,
                  segments: int = 0) -> tuple[dict, torch.Tensor, float, int]:
    """Steps 1-3 of the module docstring: the best candidate's (parameters, transition (K, K), log p(X) per
    step, index). ``method="kmeans"`` scores the k-means starts without EM iterations. ``clamp`` (B, T, K): the
    known states' log-indicator (:func:`baum_welch`); the start labels take the known states where given.
    ``inputs`` (B, T, U): for an emission that reads them (:func:`baum_welch`); the start labels ignore them.
    ``screen_iters`` > 0 (below ``em_iters``): every candidate runs that many iterations, the ``finalists`` best by
    log p(X) the remaining ones (step 2). ``em_tol``: each run of iterations stops once converged (:func:`baum_welch`'s
    ``tol``). ``segments`` > 0 (``method="em"``): ``restarts`` more candidates start from :func:`segment_labels` of
    that many steps, after the others (whose draws stay as without them)."""
    if method not in ("kmeans", "em"):
        raise ValueError(f"init method must be 'kmeans' or 'em', got {method!r}")
    K = emitter.n_states
    restarts = max(1, restarts)
    n_random = emitter.em_random_starts * restarts if method == "em" else 0
    n_segment = restarts if method == "em" and segments > 0 else 0
    kappa = emitter.em_stickiness * float(mask.sum()) / K
    iters = em_iters if method == "em" else 0
    first = screen_iters if 0 < screen_iters < iters else iters
    starts = []
    for restart in range(restarts + n_random + n_segment):
        if restart < restarts + n_random:
            labels, centres = start_labels(x, mask, generator, K, random=restart >= restarts)
        else:
            labels, centres = segment_labels(x, mask, generator, K, segments), None
        if clamp is not None:
            labels, centres = align_to_known(labels, centres, clamp, mask)
        starts.append(emitter.start(x, mask, labels, centres, **emitter.input_keywords(inputs)))
    sticky = [sticky_transition(K, stay_prob).to(x)] * len(starts)
    runs = baum_welch_many(emitter, starts, x, mask, sticky, first, kappa, clamp, inputs, em_tol)
    candidates = [(*run, restart) for restart, run in enumerate(runs)]  # (params, transition, log p(X)/step, index)
    for _, _, score, restart in candidates:
        kind = "k-means" if restart < restarts else "random" if restart < restarts + n_random else "segments"
        log.debug("init candidate %d (%s): log p(X)/step %.4f", restart, kind, score)
    if first < iters:  # the screening round's best go on
        leaders = sorted(candidates, key=lambda c: -c[2])[:finalists]
        runs = baum_welch_many(emitter, [c[0] for c in leaders], x, mask, [c[1] for c in leaders], iters - first,
                               kappa, clamp, inputs, em_tol)
        candidates = [(*run, c[3]) for run, c in zip(runs, leaders)]
        log.debug("init finalists %s: log p(X)/step %s", [c[3] for c in candidates],
                  [round(c[2], 4) for c in candidates])
    return max(candidates, key=lambda c: c[2])


def distill(net: nn.Module, params: dict, trans: torch.Tensor, steps: int = 300, lr: float = 1e-2) -> float:
    """Step 4: put the classical ``params`` and ``trans`` (K, K) into ``net``'s emitter and transition networks.

    What maps exactly is copied or solved for (the families' ``fit_to``: a network's output layer by least
    squares, :func:`pyro_dssm.model.networks.fit_output_layer`); the rest is regressed by Adam on the sum of
    their losses (the transition rows by KL). Returns the final loss (0.0 when everything mapped exactly).
    """
    losses, weights = [], []
    for module, loss in ((net.transition, net.transition.fit_to(trans)), (net.emitter, net.emitter.fit_to(params))):
        if loss is not None:
            losses.append(loss)
            weights += list(module.parameters())
    if not losses:
        return 0.0
    opt = torch.optim.Adam(weights, lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        loss = sum(f() for f in losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())
