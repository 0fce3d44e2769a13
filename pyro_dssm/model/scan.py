r"""The forward algorithm as an associative scan: depth :math:`\log_2 T` instead of :math:`T`.

The same exact HMM as :mod:`pyro_dssm.model.hmm`, with its conventions: ``log_init`` (K,) is
:math:`\log p(c_1)`; ``log_trans`` (K, K) is :math:`\log p(c_t = j \mid c_{t-1} = i)` at ``[i, j]``;
``log_lik`` (B, T, K) is :math:`\log p(x_t \mid c_t = k)`; ``mask`` (B, T) marks the valid steps
(padding after them, step 1 always valid).

**The recursion is a product of matrices.** The forward recursion
:math:`\alpha_t(j) = \sum_i \alpha_{t-1}(i)\, A_{ij}\, p(x_t \mid c_t = j)`, with
:math:`\alpha_1(j) = \pi_j\, p(x_1 \mid c_1 = j)`, is a row vector times a matrix,

.. math::
    \alpha_t = \alpha_{t-1} M_t, \qquad (M_t)_{ij} = A_{ij}\, p(x_t \mid c_t = j), \qquad
    \alpha_t = \alpha_1 M_2 M_3 \cdots M_t, \qquad p(x_{1:T}) = \alpha_1 M_2 \cdots M_T \mathbf 1.

**Associativity gives the depth.** The matrix product is associative, so the prefix products
:math:`P_t = M_2 \cdots M_t` can be grouped at will: pair neighbours, :math:`(M_2 M_3)(M_4 M_5)\cdots`,
and recurse on the half-length sequence of pairs (:func:`_reduce`, as Pyro's
``_sequential_logmatmulexp``); the inclusive scan (:func:`_scan`, as ``jax.lax.associative_scan``,
which dynamax's ``parallel_hmm_smoother`` uses) then fills in the even positions on the way back.
Each round is one batch of independent K x K products and there are :math:`\lceil \log_2 T \rceil`
rounds (twice that for the scan), against :math:`T - 1` dependent steps of the sequential loop.

**It costs a factor K of work.** A matrix product is :math:`O(K^3)` and the scan does fewer than
:math:`2T` of them: :math:`O(T K^3)` work, against :math:`O(T K^2)` for the sequential vector-matrix
loop of :mod:`~pyro_dssm.model.hmm`. The trade is made for a GPU, where the loop's T dependent steps
(each a few kernel launches on a tiny (B, K) tensor) leave the device idle and a round of the scan
fills it. On a CPU the extra work is paid in full: the scan still wins while K is small (a handful
of states), because there the loop's cost is per-step overhead (Python, dispatch on tiny tensors)
rather than arithmetic, and it loses once the :math:`K^3` products dominate (tens of states and
up). ``benchmarks/long_sequences.py`` measures both on one long sequence; the numbers are in
``benchmarks/RESULTS.md``.

Accuracy: the reduction combines the steps pairwise, as pairwise summation adds numbers, so the
bound on its rounding error grows like :math:`\log T` rather than like :math:`T` for the sequential
loop; in float32 on long sequences that is the visible difference between the two.

Everything is in log space: :math:`M_t` is stored as :math:`\log A_{ij} + \ell_t(j)`, the product is
:math:`(X \otimes Y)_{ij} = \log \sum_k e^{X_{ik} + Y_{kj}}`, and a padded step is the identity element
(0 on the diagonal, :math:`-\infty` off it), so a prefix product, and with it :math:`\alpha_t`,
repeats its last valid value through padding, as :func:`hmm.forward <pyro_dssm.model.hmm.forward>` does.
The product is a shifted matrix product (:func:`_log_matmul_exp`), exact unless a term underflows,
as it does where a transition probability is below the dtype's smallest normal number (logits of
+-200 in float32); every product reports such an underflow, and the sequences where one happened
are computed again with an exact logsumexp product (:func:`_exact_log_matmul_exp`, K times the
memory), as :func:`hmm.log_likelihood <pyro_dssm.model.hmm.log_likelihood>` falls back to log space.
That check costs one host synchronisation per call (per chunk in :func:`chunked_log_likelihood`).

:func:`chunked_log_likelihood` applies associativity at a second level: one very long sequence is
cut into chunks, each chunk's product is reduced in parallel, and only the normalised
:math:`\alpha` and the accumulated log-normaliser cross a chunk boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

# A product of two (..., K, K) log-matrices; the batch dim 0 of every operand is the sequence (B).
Product = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _safe_log(p: torch.Tensor) -> torch.Tensor:
    """log p for p >= 0, with log 0 = -inf and a zero (not NaN) gradient there."""
    positive = p > 0
    return torch.where(positive, torch.where(positive, p, 1.0).log(), -torch.inf)


def _log_matmul_exp(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Stable :math:`(x \otimes y)_{ij} = \log \sum_k e^{x_{ik} + y_{kj}}`, i.e. :math:`\log(e^x e^y)`, by a matmul.

    Each row of ``x`` and each column of ``y`` is shifted by its maximum before ``exp`` (the
    shifts are detached: the value does not depend on them), so the largest factor of every
    term is 1 and a product of :math:`[0, 1]` matrices replaces a logsumexp over (..., K, K, K).
    That is exact unless every term of an entry lies more than :math:`-\log` (smallest normal)
    nats (87 in float32) below its row's and column's maxima; such entries are reported.

    Args:
        x: (..., K, K); y: (..., K, K), broadcastable batch shapes.
    Returns:
        (..., K, K) the product; (..., K, K) bool, True where it underflowed although some term is finite.
    """
    lowest = torch.finfo(x.dtype).min  # an all -inf row or column: shift by a finite number, not -inf
    x_shift = x.detach().amax(-1, keepdim=True).clamp_min(lowest)
    y_shift = y.detach().amax(-2, keepdim=True).clamp_min(lowest)
    product = (x - x_shift).exp() @ (y - y_shift).exp()
    # a zero that is exact (every term -inf, as off the identity's diagonal) is no underflow
    reachable = (x.detach() > -torch.inf).to(x.dtype) @ (y.detach() > -torch.inf).to(x.dtype) > 0
    lost = (product.detach() < torch.finfo(x.dtype).tiny) & reachable
    return _safe_log(product) + x_shift + y_shift, lost


def _exact_log_matmul_exp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r""":math:`(x \otimes y)_{ij} = \log \sum_k e^{x_{ik} + y_{kj}}` as a logsumexp over (..., K, K, K): no underflow.

    Args:
        x: (..., K, K); y: (..., K, K).
    Returns:
        (..., K, K).
    """
    terms = x.unsqueeze(-1) + y.unsqueeze(-3)  # (..., K_i, K_k, K_j)
    shift = terms.detach().amax(-2, keepdim=True).clamp_min(torch.finfo(x.dtype).min)
    return _safe_log((terms - shift).exp().sum(-2)) + shift.squeeze(-2)


def _recording(flags: list[torch.Tensor]) -> Product:
    """:func:`_log_matmul_exp` that appends to ``flags`` a (B,) bool: did this product underflow in sequence b."""
    def product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out, lost = _log_matmul_exp(x, y)
        flags.append(lost.flatten(1).any(-1))
        return out
    return product


def _guarded(compute: Callable[[Product, torch.Tensor | None], torch.Tensor]) -> torch.Tensor:
    """``compute(product, rows)`` (a tensor with the sequences on dim 0) with the fast product, and again with
    the exact one for the sequences ``rows`` where the fast one underflowed. One host synchronisation."""
    flags: list[torch.Tensor] = []
    out = compute(_recording(flags), None)
    if not flags:
        return out
    bad = torch.stack(flags).any(0).nonzero().squeeze(-1)
    if bad.numel() == 0:
        return out
    # out-of-place: the fast graph of those rows gets no gradient (and holds no NaN: see _safe_log)
    return out.index_put((bad,), compute(_exact_log_matmul_exp, bad))


def _log_vecmat_exp(v: torch.Tensor, m: torch.Tensor, product: Product) -> torch.Tensor:
    r"""Row vector times matrix in log space, :math:`\log \sum_i e^{v_i + m_{ij}}`.

    Args:
        v: (..., K); m: (..., K, K).
    Returns:
        (..., K).
    """
    return product(v.unsqueeze(-2), m).squeeze(-2)


def _elements(log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    r"""The scan's elements :math:`\log M_t` (B, T, K, K) of the steps in ``log_lik`` (B, T, K): ``[b, t, i, j]`` is
    :math:`\log A_{ij} + \ell_t(j)`, or the identity (0 on the diagonal, -inf off it) where ``mask`` (B, T) is False."""
    elements = log_trans + log_lik.unsqueeze(-2)
    if mask is None:
        return elements
    K = log_trans.shape[-1]
    eye = torch.eye(K, dtype=torch.bool, device=log_lik.device)
    identity = torch.zeros(K, K, dtype=log_lik.dtype, device=log_lik.device).masked_fill(~eye, -torch.inf)
    return torch.where(mask[..., None, None], elements, identity)


def _reduce(elements: torch.Tensor, product: Product) -> torch.Tensor:
    """The ordered product of all elements (B, T, K, K) -> (B, K, K), T >= 1, in ceil(log2 T) rounds.

    Each round multiplies neighbours (0, 1), (2, 3), ... in one batched product; an odd last one
    waits for the next round. The order of the factors is kept: the product is not commutative.
    """
    while elements.shape[-3] > 1:
        T = elements.shape[-3]
        paired = product(elements[..., 0:T - 1:2, :, :], elements[..., 1::2, :, :])
        elements = torch.cat([paired, elements[..., T - 1:, :, :]], -3) if T % 2 else paired
    return elements.squeeze(-3)


def _scan(elements: torch.Tensor, product: Product) -> torch.Tensor:
    """Inclusive prefix products of elements (B, T, K, K): out[:, t] = elements[:, 0] x ... x elements[:, t].

    Blelloch's scheme, as ``jax.lax.associative_scan``: multiply neighbours (0, 1), (2, 3), ...,
    scan that half-length sequence recursively (its t-th prefix is the prefix ending at odd
    position 2t + 1), then an even position 2t >= 2 is the odd prefix before it times its own
    element. Fewer than 2T products in all, in 2 ceil(log2 T) rounds.
    """
    T = elements.shape[-3]
    if T < 2:
        return elements
    odd = _scan(product(elements[..., 0:T - 1:2, :, :], elements[..., 1::2, :, :]), product)  # prefixes at 1, 3, ..
    n_even = (T + 1) // 2
    even = product(odd[..., :n_even - 1, :, :], elements[..., 2::2, :, :])  # prefixes at 2, 4, ...
    even = torch.cat([elements[..., :1, :, :], even], -3)
    # interleave even and odd positions: pad odd to n_even, stack on a new axis after time, flatten
    if T % 2:
        odd = torch.cat([odd, even[..., -1:, :, :]], -3)
    return torch.stack([even, odd], -3).flatten(-4, -3)[..., :T, :, :]


def _start(log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None,
           rows: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The sequences ``rows`` (all for None) -> log alpha_1 (B, K) and the elements M_2 .. M_T of the product
    (:func:`_elements`), None when T = 1."""
    ll = log_lik if rows is None else log_lik[rows]
    first = log_init + ll[:, 0]
    if ll.shape[1] == 1:
        return first, None
    rest_mask = None if mask is None else (mask if rows is None else mask[rows])[:, 1:]
    return first, _elements(log_trans, ll[:, 1:], rest_mask)


def _check(log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None):
    """ValueError naming the argument whose shape disagrees with log_lik's (B, T, K), or a mask False at step 1."""
    if log_lik.dim() != 3 or log_lik.shape[1] == 0 or log_lik.shape[2] == 0:
        raise ValueError(f"expected log_lik of shape (B, T, K) with T, K >= 1, actual shape = {tuple(log_lik.shape)}")
    B, T, K = log_lik.shape
    if log_init.shape != (K,):
        raise ValueError(f"expected log_init of shape (K,) = ({K},) as log_lik's last dim, "
                         f"actual shape = {tuple(log_init.shape)}")
    if log_trans.shape != (K, K):
        raise ValueError(f"expected log_trans of shape (K, K) = ({K}, {K}) as log_lik's last dim, "
                         f"actual shape = {tuple(log_trans.shape)}")
    if mask is None:
        return
    if mask.shape != (B, T):
        raise ValueError(f"expected mask of shape (B, T) = ({B}, {T}) as log_lik's, actual shape = {tuple(mask.shape)}")
    empty = (~mask[:, 0].bool()).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"mask must mark step 1 of every sequence valid (padding comes after the valid steps); "
                         f"it is False at step 1 of sequence(s) {empty[:10]}")


def parallel_forward(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Forward (filtering) pass by an inclusive scan: :math:`\log\alpha_t(k) = \log p(x_{1:t}, c_t = k)`.

    :math:`\alpha_t = \alpha_1 \otimes P_t` with the prefix products :math:`P_t = M_2 \otimes \cdots
    \otimes M_t` (:func:`_scan`), all T of them at once. Equals :func:`hmm.forward
    <pyro_dssm.model.hmm.forward>`; memory O(B T K^2).

    Args:
        log_init: (K,); log_trans: (K, K); log_lik: (B, T, K); mask: (B, T) bool or None.
    Returns:
        log_alpha: (B, T, K); on padded steps it repeats the last valid value.
        log_px: (B,) log p(X).
    Raises:
        ValueError: shapes that disagree, or a mask that is False at step 1.
    """
    _check(log_init, log_trans, log_lik, mask)
    mask = None if mask is None else mask.bool()

    def compute(product: Product, rows: torch.Tensor | None) -> torch.Tensor:
        first, elements = _start(log_init, log_trans, log_lik, mask, rows)
        first = first.unsqueeze(1)  # (B, 1, K)
        if elements is None:
            return first
        prefixes = _scan(elements, product)  # (B, T-1, K, K): P_2 .. P_T
        return torch.cat([first, _log_vecmat_exp(first, prefixes, product)], 1)

    log_alpha = _guarded(compute)
    return log_alpha, log_alpha[:, -1].logsumexp(-1)


def parallel_log_likelihood(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r""":math:`\log p(x_{1:T}) = \log \alpha_1 M_2 \cdots M_T \mathbf 1` by a parallel reduction (:func:`_reduce`).

    Only the whole product is needed, so no scan: fewer than T products in
    :math:`\lceil \log_2 T \rceil` rounds. Equals :func:`hmm.log_likelihood
    <pyro_dssm.model.hmm.log_likelihood>`; memory O(B T K^2); differentiable.

    Args:
        log_init: (K,); log_trans: (K, K); log_lik: (B, T, K); mask: (B, T) bool or None.
    Returns:
        (B,) log p(X) of each sequence (padding excluded).
    Raises:
        ValueError: shapes that disagree, or a mask that is False at step 1.
    """
    _check(log_init, log_trans, log_lik, mask)
    mask = None if mask is None else mask.bool()

    def compute(product: Product, rows: torch.Tensor | None) -> torch.Tensor:
        first, elements = _start(log_init, log_trans, log_lik, mask, rows)
        if elements is None:
            return first
        return _log_vecmat_exp(first, _reduce(elements, product), product)

    return _guarded(compute).logsumexp(-1)


def _advance(
    log_alpha: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, product: Product, rows: torch.Tensor | None
) -> torch.Tensor:
    r""":math:`\log\alpha` (B, K) carried through the steps of log_lik (B, T, K), :math:`\alpha \otimes M_1 \otimes
    \cdots \otimes M_T`, for the sequences ``rows`` (None: all): (B, K), not normalised."""
    if rows is not None:
        log_alpha, log_lik = log_alpha[rows], log_lik[rows]
    return _log_vecmat_exp(log_alpha, _reduce(_elements(log_trans, log_lik, None), product), product)


def chunked_log_likelihood(
    log_init: torch.Tensor,
    log_trans: torch.Tensor,
    log_lik_fn: Callable[[int, int], torch.Tensor],
    n_steps: int,
    chunk: int = 4096,
) -> torch.Tensor:
    r"""Exact :math:`\log p(x_{1:T})` of very long sequences in memory bounded by the chunk, not by T.

    ``log_lik_fn(start, stop)`` gives the (B, stop - start, K) log-likelihoods of steps
    ``start .. stop - 1`` (0-based) and is called once per chunk, in order, so the caller can
    compute the emission table (or read it from disk) chunk by chunk. Each chunk's product
    :math:`M_s \cdots M_{s+c-1}` is reduced in parallel (:func:`_reduce`) and applied to the carry,
    the normalised :math:`\hat\alpha = \alpha / \sum_k \alpha(k)` (B, K), whose log-normaliser is
    accumulated: :math:`\log p(X) = \sum_{\text{chunks}} \log \sum_k (\hat\alpha \otimes P_{\text{chunk}})(k)`.
    By associativity this is the whole product, so the value is exact. Memory: one chunk's
    table and its elements, O(B chunk K^2), whatever T.

    It is meant for evaluation: call it under ``torch.no_grad()``, since with gradients the graph
    keeps every chunk alive and the memory grows with T again.

    Args:
        log_init: (K,); log_trans: (K, K).
        log_lik_fn: (start, stop) -> (B, stop - start, K), the same B on every call.
        n_steps: T >= 1, the length of every sequence.
        chunk: steps per call of ``log_lik_fn``, >= 1.
    Returns:
        (B,) log p(X).
    Raises:
        ValueError: chunk or n_steps < 1, or a chunk whose shape disagrees with (B, stop - start, K).
    """
    for name, value in [("chunk", chunk), ("n_steps", n_steps)]:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"expected {name} to be an int >= 1, got {name}={value!r}")
    log_alpha = log_px = None  # the carry: (B, K) log of the normalised alpha, (B,) accumulated log-normaliser
    for start in range(0, n_steps, chunk):
        stop = min(start + chunk, n_steps)
        log_lik = log_lik_fn(start, stop)
        B = "B" if log_px is None else log_px.shape[0]  # the first chunk sets B
        if log_lik.dim() != 3 or log_lik.shape[1] != stop - start or B not in ("B", log_lik.shape[0]):
            raise ValueError(f"log_lik_fn({start}, {stop}) must return shape ({B}, {stop - start}, K), "
                             f"actual shape = {tuple(log_lik.shape)}")
        _check(log_init, log_trans, log_lik)
        if log_alpha is None:  # the first step starts the chain: alpha_1 = pi * p(x_1 | c_1)
            log_alpha, log_px, log_lik = log_init + log_lik[:, 0], 0.0, log_lik[:, 1:]
        if log_lik.shape[1]:
            log_alpha = _guarded(functools.partial(_advance, log_alpha, log_trans, log_lik))
        norm = log_alpha.logsumexp(-1)  # (B,)
        log_alpha, log_px = log_alpha - norm.unsqueeze(-1), log_px + norm
    return log_px
