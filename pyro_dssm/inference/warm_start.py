"""The guide's warm start: its conditionals trained towards the exact posterior of the initialised model.

An amortised guide that starts far from the posterior drags the model towards what it can
represent (often a merged state); starting it near the posterior of the initial model
(:func:`warm_start_guide`) avoids that.
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM

WINDOW = 10  # warm-up steps per window: the minibatch cross-entropy is compared window by window
MIN_FALL = 0.01  # a window improves when its mean is below the best window's by more than this (relative)


def warm_start_guide(
    model: DSSM, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
    steps: int = 100, batch_size: int = 64, lr: float = 1e-2, targets: str | None = None,
    patience: int | None = None,
) -> tuple[float, int]:
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
      Without the messages ``"marginals"`` stays the default: on ``data=switching_ar`` ``"chain"`` left a lower
      cross-entropy but a lower final greedy accuracy (benchmarks/RESULTS.md, "Numbers moved out of docstrings").

    * ``targets=None`` (the default): ``"chain"`` when the guide's evidence holds the backward
      messages (``model.guide_messages``; its conditionals, not its marginals, are then the exact
      answer, and the residual the networks learn is zero there), else ``"marginals"``.

    ``patience``: stop early once that many windows of :data:`WINDOW` steps in a row have not lowered the best
    window's mean cross-entropy by :data:`MIN_FALL` (relative); None: all ``steps``.

    x (N, T, D), mask (N, T). Returns the last window's mean cross-entropy per valid step and the steps taken.
    """
    targets, posterior = _exact_posterior(model, x, mask, targets)
    opt = torch.optim.Adam(model.posterior.parameters(), lr=lr)
    net = model.posterior
    stall = Stall(patience)
    for step in range(steps):
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
        if stall.add(float(loss.detach())):
            return stall.last, step + 1
    return stall.last, steps


def _exact_posterior(model: DSSM, x: torch.Tensor, mask: torch.Tensor, targets: str | None) -> tuple[str, torch.Tensor]:
    """The targets' kind (None: by the guide, :func:`warm_start_guide`) and the exact posterior they are drawn from:
    the chain (N, T, K, K) or the marginals (N, T, K); ValueError naming an unknown kind."""
    if targets is None:
        targets = "chain" if model.uses_messages else "marginals"
    if targets not in ("marginals", "chain"):
        raise ValueError(f"warm-start targets must be 'marginals' or 'chain', got {targets!r}")
    with torch.no_grad():
        log_init, log_trans, ll = model.exact_hmm(x)
        if targets == "chain":
            return targets, hmm.posterior_chain(log_init, log_trans, ll, mask)
        return targets, hmm.posterior_marginals(log_init, log_trans, ll, mask)


class Stall:
    """Whether a noisy falling loss has stopped falling: window means of :data:`WINDOW` values, stalled after
    ``patience`` windows in a row without a fall of :data:`MIN_FALL` (relative) below the best (None: never)."""

    def __init__(self, patience: int | None):
        self.patience, self.values, self.best, self.stale = patience, [], float("inf"), 0
        self.last = float("nan")  # the mean of the last whole window (or of the values so far)

    def add(self, value: float) -> bool:
        """Record one value; True once the loss has stalled."""
        self.values.append(value)
        self.last = sum(self.values[-WINDOW:]) / len(self.values[-WINDOW:])
        if len(self.values) % WINDOW:
            return False
        if self.last < self.best * (1 - MIN_FALL):  # a cross-entropy is >= 0
            self.best, self.stale = self.last, 0
        else:
            self.stale += 1
        return self.patience is not None and self.stale >= self.patience


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
