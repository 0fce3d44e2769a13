"""``trainer.init=random``: learning from scratch, from the best of several random starts.

From random weights a gradient-trained HMM (SVI or exact maximum likelihood) first
spends a long time near saddles where two true states share one emission and another
state is wasted; how long depends on the start, and at the refining rate of the main
run (``trainer.lr``) 20 epochs were not enough on the default data (benchmarks/RESULTS.md, "Numbers moved
out of docstrings"). So, before the main run, ``trainer.init_restarts`` random starts
(the given weights, then fresh ones) are each trained by the run's own learning method
(its own loss, the same minibatch loop) for ``trainer.random_start_epochs`` epochs at the
faster constant rate ``trainer.random_start_lr``, and scored by a label-free criterion
on the validation set (the DSSM: discrete validation ELBO; the exact baseline: exact
log p(X)). The best continues as the run's start (its epoch 0).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn

from pyro_dssm.inference.faults import SkippedSteps
from pyro_dssm.inference.loop import LossFn, SGDStep, train_epochs
from pyro_dssm.inference.state import TrainingState
from pyro_dssm.io.tracking import Tracker

log = logging.getLogger(__name__)


def best_random_start(
    net: nn.Module, cfg, gen: torch.Generator, x: torch.Tensor, mask: torch.Tensor | None, loss_fn: LossFn,
    optimizer: Callable[[float], torch.optim.Optimizer], score: Callable[[], float],
) -> dict:
    """Train ``cfg.init_restarts`` random starts briefly and leave ``net`` at the best; returns what happened.

    Args:
        net: the model, at its first random start (the others are ``type(net)(net.config)``
            built under seeds drawn from ``gen``).
        cfg: the trainer settings (``init_restarts``, ``random_start_epochs``, ``random_start_lr``,
            ``batch_size``, ``grad_clip``, ``max_consecutive_skips``).
        x: (N, T, D) training sequences; mask (N, T) or None (none padded).
        loss_fn: the run's loss (:data:`~pyro_dssm.inference.loop.LossFn`).
        optimizer: ``lr -> optimiser`` over ``net``'s parameters (the run's parameter groups at that rate).
        score: the label-free validation score of ``net`` now, higher is better.
    Returns:
        ``random_start_scores`` (one per start), ``random_start`` (the index kept) and
        ``random_start_seeds`` (the torch seeds of starts 2, 3, ...).
    """
    quiet = Tracker(".", enabled=False)  # the stage's steps are not the run's: no curves
    step = SGDStep(net, loss_fn, x, mask, cfg.grad_clip, quiet)
    # drawn first, so the starts depend on gen's state only: a DSSM and an exact baseline (NeuralHMM
    # subclasses, whose generative networks are built first) of one seed get the same generative starts
    seeds = torch.randint(2**31 - 1, (cfg.init_restarts - 1,), generator=gen).tolist()
    scores, best = [], None
    for start in range(cfg.init_restarts):
        if start > 0:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds[start - 1])
                fresh = type(net)(net.config)
            net.load_state_dict(fresh.state_dict())
        state = TrainingState(optimizer(cfg.random_start_lr), gen, SkippedSteps(cfg.max_consecutive_skips))
        train_epochs(state, step, cfg.random_start_epochs, cfg.batch_size)
        scores.append(float(score()))
        log.info("random start %d/%d: validation score %.4f after %d epochs at lr %g", start + 1, cfg.init_restarts,
                 scores[-1], cfg.random_start_epochs, cfg.random_start_lr)
        if best is None or scores[-1] > scores[best[0]]:
            best = (start, copy.deepcopy(net.state_dict()))
    net.load_state_dict(best[1])
    log.info("random starts: kept start %d (validation score %.4f)", best[0] + 1, scores[best[0]])
    return {"random_start_scores": scores, "random_start": best[0], "random_start_seeds": seeds}
