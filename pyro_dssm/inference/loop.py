"""The training loop, as in Pyro's examples: for each epoch, a shuffled pass of minibatch steps, then the hooks.

Everything the loop changes lives in one :class:`~pyro_dssm.inference.state.TrainingState`;
everything else (evaluation, logging, figures, keep-best, checkpoints, stop
requests) is a hook (:mod:`pyro_dssm.inference.hooks`) called after every step
and every epoch. The SVI trainer (:func:`pyro_dssm.inference.trainer.fit`) and
the exact baseline (:func:`pyro_dssm.inference.mle.fit_baseline`) differ only
in their loss and their hooks.

A step whose loss or gradient norm is not finite makes no update and is
counted (:class:`~pyro_dssm.inference.faults.SkippedSteps`); too many in a row
raise :class:`~pyro_dssm.inference.faults.TrainingDiverged`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from pyro_dssm.inference.batches import EpochProgress
from pyro_dssm.inference.state import TrainingState
from pyro_dssm.io.tracking import Tracker

# loss_fn(x (B, T, D), mask (B, T) or None, step) -> (loss per valid step, extra scalars to log)
LossFn = Callable[[torch.Tensor, "torch.Tensor | None", int], "tuple[torch.Tensor, dict[str, float]]"]


class Hook:
    """Work done between steps: ``step_end`` after every step, ``epoch_end`` after every whole epoch.

    Either may raise to end training (e.g. :class:`~pyro_dssm.inference.faults.Interrupted`); an ``epoch_end``
    that sets ``state.stopped_early`` ends it after that epoch's hooks (early stopping).
    """

    def step_end(self, state: TrainingState) -> None:
        pass

    def epoch_end(self, state: TrainingState, epoch: EpochProgress) -> None:
        pass


class SGDStep:
    """One optimiser step on a minibatch, like Pyro's ``SVI.step``, on the training set x (N, T, D), mask (N, T).

    ``mask`` None: no sequence is padded. The gradient norm is clipped at
    ``grad_clip``; ``train/loss``, ``train/grad_norm`` and the loss's extras are
    logged every step. With ``group`` (data-parallel, any object with
    :meth:`pyro_dssm.inference.distributed.DataParallel.backward`) this process
    computes its share of every minibatch; loss and gradient are those of the
    whole minibatch on every process, so every process skips the same steps.
    """

    def __init__(self, module: nn.Module, loss_fn: LossFn, x: torch.Tensor, mask: torch.Tensor | None,
                 grad_clip: float, tracker: Tracker, group=None):
        self.module, self.loss_fn, self.x, self.mask = module, loss_fn, x, mask
        self.grad_clip, self.tracker, self.group = grad_clip, tracker, group

    def __call__(self, state: TrainingState, idx: torch.Tensor) -> None:
        """Step on the minibatch of sequences ``idx`` (B,): update the parameters, ``state`` and its progress."""
        state.optim.zero_grad()
        if self.group is None:
            loss, extras = self.loss_fn(self.x[idx], None if self.mask is None else self.mask[idx], state.step)
            loss.backward()
        else:
            loss, extras = self.group.backward(self.module, self.loss_fn, self.x, self.mask, idx, state.step)
        grad_norm = nn.utils.clip_grad_norm_(self.module.parameters(), self.grad_clip)
        # one host sync per step, for the log and the finiteness test together
        loss_value, norm_value = torch.stack([loss.detach(), grad_norm.to(loss.dtype)]).tolist()
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        if finite:
            state.optim.step()
            state.progress.losses.append(loss_value)
        if state.scheduler is not None:
            # every step, skipped or not, on every rank (a rank whose share is empty included)
            state.scheduler.step()
        state.step += 1
        state.progress.done += 1
        state.progress.tau = extras.get("tau", state.progress.tau)
        self.tracker.scalars({"loss": loss_value, "grad_norm": norm_value, **extras}, state.step, "train/")
        state.skips.record(finite, state.step, loss_value, norm_value, self.tracker)


def train_epochs(state: TrainingState, step: SGDStep, last_epoch: int, batch_size: int,
                 hooks: Sequence[Hook] = ()) -> EpochProgress | None:
    """Epochs ``state.epoch + 1`` to ``last_epoch`` of minibatches of ``batch_size``; returns the last one's progress.

    An epoch interrupted in a previous run (``state.progress``) continues
    where it stopped: same order, same remaining batches.
    """
    finished = None
    for _ in range(state.epoch + 1, last_epoch + 1):
        progress = state.start_epoch(len(step.x), batch_size)
        for idx in progress.remaining(step.x.device):
            started = time.perf_counter()
            step(state, idx)
            seconds = time.perf_counter() - started
            state.train_seconds += seconds
            progress.seconds += seconds
            for hook in hooks:
                hook.step_end(state)
        finished = state.end_epoch()
        for hook in hooks:
            hook.epoch_end(state, finished)
        if state.stopped_early is not None:  # a hook ended the run (early stopping)
            break
    return finished
