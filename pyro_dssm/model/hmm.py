r"""Exact inference in a discrete HMM: the one implementation every caller uses.

Pure functions of (initial, transition, per-step log-likelihoods), in log space,
batched over sequences, with an optional (B, T) mask for ragged sequences
(padded steps must come after the valid ones; every sequence has >= 1 valid step).

Notation: ``log_init`` (K,) is :math:`\log p(c_1)`; ``log_lik`` (B, T, K) is
:math:`\log p(x_t \mid c_t = k)`; ``log_trans`` is either

- (K, K), :math:`\log p(c_t = j \mid c_{t-1} = i)` at ``[i, j]``, the same at every step, or
- (B, T, K, K), :math:`\log p(c_t = j \mid c_{t-1} = i, u_{b,t})` at ``[b, t, i, j]`` for sequence b
  at 0-based step t >= 1 (``[:, 0]`` is unused: the first step reads ``log_init``).

The time-varying table is for transitions that read observed context :math:`u_t` (the
last observation :math:`x_{t-1}`, exogenous inputs): given the observations, the states
are still a Markov chain, with step-dependent matrices, so every algorithm here stays
exact; only the matrix that multiplies each step changes. :func:`check_transitions`
states the contract; each routine branches on the shape once per call, so the (K, K)
path runs the same operations as before the table could vary.
"""

from __future__ import annotations

import itertools
import math

import torch


def gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, noise_std: float) -> torch.Tensor:
    r""":math:`\log \mathcal N(x_t; \mu_k, \sigma^2 I)` for every state.

    Args:
        x: (B, T, D) observations.
        means: (K, D) emission means.
        noise_std: sigma.
    Returns:
        (B, T, K) log-likelihoods.
    """
    D = x.shape[-1]
    # |x - mu|^2 = |x|^2 - 2 x.mu + |mu|^2: one matrix product instead of a (B, T, K, D) tensor
    sq = x.pow(2).sum(-1, keepdim=True) - 2 * x @ means.T + means.pow(2).sum(-1)  # (B, T, K)
    sq = sq.clamp_min(0.0)
    return -0.5 * sq / noise_std**2 - D * (math.log(noise_std) + 0.5 * math.log(2 * math.pi))


def uniform_log_init(n_states: int, like: torch.Tensor) -> torch.Tensor:
    """(K,) log p(c_1) of the uniform start the model assumes, with ``like``'s dtype and device."""
    return torch.full((n_states,), -math.log(n_states), dtype=like.dtype, device=like.device)


def check_transitions(log_trans: torch.Tensor, log_lik: torch.Tensor) -> None:
    """Raise ``ValueError`` unless log_trans is (K, K) or (B, T, K, K) for log_lik (B, T, K)."""
    if log_lik.dim() != 3:
        raise ValueError(f"expected log_lik of shape (B, T, K), actual shape = {tuple(log_lik.shape)}")
    B, T, K = log_lik.shape
    if log_trans.shape != (K, K) and log_trans.shape != (B, T, K, K):
        raise ValueError(f"expected log_trans of shape (K, K) = ({K}, {K}) or (B, T, K, K) = ({B}, {T}, {K}, {K}) "
                         f"from log_lik's shape, actual shape = {tuple(log_trans.shape)}")


def _per_step(table: torch.Tensor, T: int) -> list[torch.Tensor]:
    """The T per-step matrices of a checked table: the (K, K) table (or the groups' (G, K, K) ones,
    :func:`grouped_log_likelihood`) itself T times, or a (B, T, K, K) table's (B, K, K) views.

    Indexed by 0-based step t like the table; a list so that the loops index it at no cost.
    """
    return [table] * T if table.dim() <= 3 else list(table.unbind(1))


def _vecmat(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    r"""(B, K) x (B, K, K) -> (B, K): :math:`\sum_i v_{bi} m_{bij}`, the batched ``v @ m``."""
    return (v.unsqueeze(-2) @ m).squeeze(-2)


def _rows(log_trans: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The transitions of the sequences ``index`` picks: a (K, K) table is shared, a (B, T, K, K) one is indexed."""
    return log_trans if log_trans.dim() == 2 else log_trans[index]


def full_mask(log_lik: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T) bool mask for log_lik (B, T, K): ``mask`` as bool, or every step valid where it is None."""
    if mask is None:
        return torch.ones(log_lik.shape[:2], dtype=torch.bool, device=log_lik.device)
    return mask.bool()


def log_likelihood(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r""":math:`\log p(x_{1:T}) = \log \sum_{c_{1:T}} p(c_1) \prod_t p(c_t|c_{t-1}) \prod_t p(x_t|c_t)`.

    The scaled forward algorithm (Rabiner 1989, sec. V.A): probabilities are
    propagated with one (B, K) x (K, K) product per step (a batched (B, K, K) one when the table
    varies over time) and renormalised,
    :math:`\hat\alpha_t = (\hat\alpha_{t-1} A) \odot e^{\ell_t - s_t} / n_t`, and
    :math:`\log p(X) = \sum_t (\log n_t + s_t)` with :math:`s_t = \max_k \ell_t(k)`.
    Cheaper than log-space ``logsumexp`` over (B, K, K) and differentiable
    (the exact Baum-Welch statistics are its gradients, see :mod:`pyro_dssm.inference.init`).

    Where the product underflows (:math:`n_t` below the dtype's smallest normal
    number, on any step: the data force a transition whose probability is
    smaller, as with transition logits of +-200 in float32), that sequence is
    recomputed in log space by :func:`forward`; so the value (and its gradient)
    is finite wherever :func:`forward`'s is. The check costs one host
    synchronisation per call.

    Args:
        log_init: (K,); log_trans: (K, K) or (B, T, K, K); log_lik: (B, T, K); mask: (B, T) or None.
    Returns:
        (B,) log p(X) of each sequence (padding excluded).
    """
    check_transitions(log_trans, log_lik)
    mask = full_mask(log_lik, mask)
    log_px, smallest = _scaled_forward(log_init, log_trans, log_lik, mask)
    bad = underflowed(log_px, smallest)
    if not bool(bad.any()):
        return log_px
    # Recompute the good sequences apart: the graph of the first pass divides by ~0 in the
    # bad rows, whose zero gradients would turn into NaN in the shared log_trans gradient.
    good = ~bad
    values = torch.cat([
        _scaled_forward(log_init, _rows(log_trans, good), log_lik[good], mask[good])[0],
        forward(log_init, _rows(log_trans, bad), log_lik[bad], mask[bad])[1],
    ])
    order = torch.cat([good.nonzero().squeeze(-1), bad.nonzero().squeeze(-1)])
    return values[order.argsort()]


def underflowed(log_px: torch.Tensor, smallest: torch.Tensor) -> torch.Tensor:
    """Where a scaled forward's product underflowed (a normaliser below the smallest normal number, or a non-finite
    value): those sequences go to the log-space fallback (:func:`log_likelihood`,
    :func:`pyro_dssm.model.expected_counts.grouped_statistics`)."""
    return (smallest < torch.finfo(smallest.dtype).tiny) | ~torch.isfinite(log_px)


def _scaled_forward(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaled forward pass of :func:`log_likelihood`: (B,) log p(X), and (B,) the smallest n_t (padding included).
    With log_trans (G, K, K) and log_lik (G, B, T, K) (:func:`grouped_log_likelihood`): (G, B) both, one batched
    (G, B, K) x (G, K, K) product per step."""
    trans = _per_step(log_trans.exp(), log_lik.shape[-2])
    product = _vecmat if log_trans.dim() == 4 else torch.matmul
    # Any constant shift gives the same value; detached, it also gives the same gradient.
    shift = log_lik.detach().max(-1, keepdim=True).values  # (..., B, T, 1)
    probs = (log_lik - shift).exp()  # (..., B, T, K), max 1 per step
    alpha = log_init.exp() * probs[..., 0, :]
    norm = alpha.sum(-1, keepdim=True)
    alpha = alpha / norm
    log_px = norm.squeeze(-1).log() + shift[..., 0, 0]
    norms = [norm]
    # unbind: one call for all the per-step views instead of three indexing ops per step
    steps = zip(probs.unbind(-2), mask.unbind(1), shift[..., 0].unbind(-1), trans)
    for probs_t, valid, shift_t, trans_t in itertools.islice(steps, 1, None):
        new = product(alpha, trans_t) * probs_t
        norm = new.sum(-1, keepdim=True)
        norms.append(norm)
        alpha = torch.where(valid[:, None], new / norm, alpha)
        log_px = log_px + torch.where(valid, norm.squeeze(-1).log() + shift_t, 0.0)
    return log_px, torch.cat(norms, -1).detach().amin(-1)


def grouped_log_likelihood(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r""":func:`log_likelihood` of G HMMs over the same B sequences at once (EM's candidates,
    :mod:`pyro_dssm.inference.em`): T batched steps for all of them instead of G T small ones.

    Args:
        log_init: (K,); log_trans: (G, K, K), group g's matrix; log_lik: (G, B, T, K); mask: (B, T) or None.
    Returns:
        (G, B) log p(X) of each sequence under each group's HMM. A group whose scaled product underflows on any
        sequence is recomputed by :func:`log_likelihood` (its log-space fallback), the others apart from it, so
        values and gradients are :func:`log_likelihood`'s group by group.
    """
    if log_lik.dim() != 4 or log_trans.shape != (log_lik.shape[0], log_lik.shape[-1], log_lik.shape[-1]):
        raise ValueError(f"expected log_lik (G, B, T, K) and log_trans (G, K, K), actual shapes = "
                         f"{tuple(log_lik.shape)} and {tuple(log_trans.shape)}")
    mask = full_mask(log_lik[0], mask)
    log_px, smallest = _scaled_forward(log_init, log_trans, log_lik, mask)
    bad = underflowed(log_px, smallest).any(-1)  # (G,)
    if not bool(bad.any()):
        return log_px
    good, bad = (~bad).nonzero().squeeze(-1), bad.nonzero().squeeze(-1)
    values = [_scaled_forward(log_init, log_trans[good], log_lik[good], mask)[0]] if good.numel() else []
    values += [log_likelihood(log_init, log_trans[g], log_lik[g], mask)[None] for g in bad.tolist()]
    return torch.cat(values)[torch.cat([good, bad]).argsort()]


def forward(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Forward (filtering) pass: :math:`\log\alpha_t(k) = \log p(x_{1:t}, c_t = k)`.

    Returns:
        log_alpha: (B, T, K); on padded steps it repeats the last valid value.
        log_px: (B,) log p(X).
    """
    check_transitions(log_trans, log_lik)
    mask = full_mask(log_lik, mask)
    trans = _per_step(log_trans, log_lik.shape[1])
    alpha = log_init + log_lik[:, 0]
    alphas = [alpha]
    for t in range(1, log_lik.shape[1]):
        new = torch.logsumexp(alpha.unsqueeze(-1) + trans[t], dim=-2) + log_lik[:, t]
        alpha = torch.where(mask[:, t, None], new, alpha)
        alphas.append(alpha)
    return torch.stack(alphas, 1), alpha.logsumexp(-1)


def backward(log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""Backward pass: :math:`\log\beta_t(k) = \log p(x_{t+1:T} \mid c_t = k)`.

    Returns:
        log_beta: (B, T, K); zero on the last valid step and on padding.
    """
    check_transitions(log_trans, log_lik)
    mask = full_mask(log_lik, mask)
    B, T, K = log_lik.shape
    trans = _per_step(log_trans, T)
    beta = log_lik.new_zeros(B, K)
    betas = [beta]
    for t in range(T - 2, -1, -1):
        # beta_t(i) = log sum_j A_{t+1}(i, j) p(x_{t+1} | j) beta_{t+1}(j): the step into t + 1
        new = torch.logsumexp(trans[t + 1] + (log_lik[:, t + 1] + beta).unsqueeze(-2), dim=-1)
        beta = torch.where(mask[:, t + 1, None], new, beta)
        betas.append(beta)
    return torch.stack(betas[::-1], 1)


def normalised_backward(log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r""":func:`backward`'s :math:`\log\beta_t`, normalised over k, by the scaled recursion (the guide's evidence).

    :math:`\hat\beta_t = A_{t+1}\,(e^{\ell_{t+1} - s_{t+1}} \odot \hat\beta_{t+1}) / n_t`: one (B, K) x (K, K)
    product per step (batched over B when the table varies) instead of a logsumexp over (B, K, K),
    as :func:`log_likelihood` does forwards, and no host synchronisation (it runs in every SVI
    step). Each step's messages are normalised and floored at the dtype's smallest normal number
    (log: about -87 in float32), so the result is always finite; a state whose message underflows
    on the way (transitions of probability below that number, as with logits of +-200) ends at or
    below the floor instead of its exact, as negligible, value. Elsewhere it equals :func:`backward`'s, normalised.

    Returns:
        (B, T, K) normalised log-messages; uniform after each sequence's last valid step.
    """
    check_transitions(log_trans, log_lik)
    mask = full_mask(log_lik, mask)
    B, T, K = log_lik.shape
    tiny = torch.finfo(log_lik.dtype).tiny
    # (K_next, K_prev) per step: beta_t = (probs_{t+1} * beta_{t+1}) @ A_{t+1}^T
    trans = _per_step(log_trans.exp().transpose(-1, -2), T)
    product = torch.matmul if log_trans.dim() == 2 else _vecmat
    probs = (log_lik - log_lik.max(-1, keepdim=True).values).exp()
    beta = log_lik.new_full((B, K), 1.0 / K)
    betas = [beta]
    for t in range(T - 2, -1, -1):
        new = product(probs[:, t + 1] * beta, trans[t + 1])
        new = (new / new.sum(-1, keepdim=True).clamp_min(tiny)).clamp_min(tiny)
        beta = torch.where(mask[:, t + 1, None], new, beta)
        betas.append(beta)
    return torch.stack(betas[::-1], 1).log().log_softmax(-1)


def posterior_marginals(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Smoothed marginals :math:`p(c_t = k \mid x_{1:T}) \propto \alpha_t(k)\beta_t(k)`.

    Returns:
        (B, T, K) probabilities summing to one over K (padded steps are not meaningful).
    """
    log_alpha, log_px = forward(log_init, log_trans, log_lik, mask)
    log_beta = backward(log_trans, log_lik, mask)
    return (log_alpha + log_beta - log_px[:, None, None]).softmax(-1)


def posterior_chain(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    r"""The exact posterior as a Markov chain, :math:`p(c_{1:T} \mid X) = p(c_1 \mid X) \prod_{t>1} p(c_t \mid c_{t-1}, X)`.

    Given :math:`c_{t-1}`, the future observations depend on :math:`c_t` only
    through the backward messages, so

    .. math::
        p(c_t = j \mid c_{t-1} = i, X) \propto A_t(i, j)\, p(x_t \mid c_t = j)\, \beta_t(j),
        \qquad p(c_1 = j \mid X) \propto \pi_j\, p(x_1 \mid c_1 = j)\, \beta_1(j),

    normalised over j (:math:`\beta` from :func:`backward`). On padded steps
    the likelihood is left out: the rows are the prior transition.

    Returns:
        (B, T, K, K) log-probabilities, time 0-based: ``[b, t, i, j]`` is the log-probability
        of state j at step t given state i at step t - 1 (t >= 1), and ``[b, 0, i, :]`` is
        :math:`\log p(c_1 \mid X)` for every i, so that indexing by the previous state works
        at every step (:func:`sample_chain`). A row i whose previous state has posterior
        probability 0 may be NaN.
    """
    check_transitions(log_trans, log_lik)
    mask = full_mask(log_lik, mask)
    log_lik = log_lik.masked_fill(~mask[..., None], 0.0)
    log_beta = backward(log_trans, log_lik, mask)
    evidence = log_lik + log_beta  # (B, T, K): log p(x_t | c_t = j) beta_t(j)
    B, T, K = log_lik.shape
    first = (log_init + evidence[:, :1]).unsqueeze(-2).expand(B, 1, K, K)
    steps = log_trans if log_trans.dim() == 2 else log_trans[:, 1:]  # (K, K) or (B, T-1, K, K): A_t, t >= 1
    rest = steps + evidence[:, 1:].unsqueeze(-2)  # (B, T-1, K_prev, K)
    return torch.cat([first, rest], 1).log_softmax(-1)


def sample_chain(log_chain: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Draw one path per sequence from a Markov chain given by its step conditionals.

    Ancestral sampling forwards in time, by inverse CDF: one uniform per step,
    all drawn at once (``torch.rand`` with ``generator``, on the generator's
    device), then :math:`c_t = \min\{j : F_t(j \mid c_{t-1}) > u_t\}`.

    Args:
        log_chain: (B, T, K, K) as returned by :func:`posterior_chain`.
        generator: the random source; its device may differ from ``log_chain``'s.
    Returns:
        (B, T) int64 states.
    """
    B, T, K, _ = log_chain.shape
    device = log_chain.device if generator is None else generator.device
    uniforms = torch.rand(B, T, 1, generator=generator, dtype=log_chain.dtype, device=device).to(log_chain.device)
    cdf = log_chain.exp().cumsum(-1)  # (B, T, K_prev, K)
    state = torch.zeros(B, 1, 1, dtype=torch.long, device=log_chain.device)  # any row at t = 0
    path = []
    for cdf_t, u_t in zip(cdf.unbind(1), uniforms.unbind(1)):
        row = cdf_t.gather(1, state.expand(B, 1, K)).squeeze(1)  # (B, K): F(. | c_{t-1})
        # clamp: rounding can leave the last cdf value just under u
        state = (row <= u_t).sum(-1).clamp_max(K - 1).view(B, 1, 1)
        path.append(state.view(B))
    return torch.stack(path, 1)


def viterbi(
    log_init: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Most probable path :math:`\arg\max_{c_{1:T}} p(c_{1:T}, x_{1:T})` (max-product).

    Returns:
        path: (B, T) int64 states; padded steps repeat the last valid state.
        log_joint: (B,) log p(path, X).
    """
    check_transitions(log_trans, log_lik)
    mask = full_mask(log_lik, mask)
    B, T, K = log_lik.shape
    trans = _per_step(log_trans, T)
    delta = log_init + log_lik[:, 0]
    identity = torch.arange(K, device=log_lik.device).expand(B, K)
    pointers = []
    for t in range(1, T):
        scores = delta.unsqueeze(-1) + trans[t]  # (B, K_prev, K)
        best, arg = scores.max(dim=-2)
        valid = mask[:, t, None]
        delta = torch.where(valid, best + log_lik[:, t], delta)
        pointers.append(torch.where(valid, arg, identity))
    log_joint, state = delta.max(-1)
    path = [state]
    for arg in reversed(pointers):
        state = arg.gather(-1, state.unsqueeze(-1)).squeeze(-1)
        path.append(state)
    return torch.stack(path[::-1], 1), log_joint
