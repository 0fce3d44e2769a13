"""What a training run carries from one step to the next: one object, saved and restored whole."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.optim.lr_scheduler import LRScheduler

from pyro_dssm.inference.batches import EpochProgress
from pyro_dssm.inference.faults import SkippedSteps
from pyro_dssm.inference.schedule import restore_schedule
from pyro_dssm.io.checkpoint import restore_rng_state, rng_state


@dataclass
class TrainingState:
    """The state of a run between two steps; :meth:`state_dict` is all a checkpoint needs to continue it.

    ``step`` steps and ``epoch`` whole epochs are done; ``progress`` is the
    epoch under way (None between epochs). ``gen`` draws the minibatch order.
    ``history`` holds one record per evaluation (epoch 0: after the init);
    ``best_val_elbo`` is the best validation ELBO per step so far, reached after
    epoch ``best_epoch`` with weights ``best_weights`` (on the CPU).
    ``train_seconds`` counts the init and the steps, not evaluation. ``stopped_early``: the epoch
    after which early stopping ended the run (None: it did not).
    """

    optim: torch.optim.Optimizer
    gen: torch.Generator
    skips: SkippedSteps
    scheduler: LRScheduler | None = None
    step: int = 0
    epoch: int = 0
    train_seconds: float = 0.0
    history: list[dict] = field(default_factory=list)
    best_val_elbo: float = -math.inf
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    progress: EpochProgress | None = None
    stopped_early: int | None = None  # the epoch after which early stopping ended the run

    def start_epoch(self, n: int, batch_size: int) -> EpochProgress:
        """The epoch under way (a resumed one), else a new one: a fresh order of ``n`` sequences from ``gen``."""
        if self.progress is None:
            self.progress = EpochProgress(torch.randperm(n, generator=self.gen), batch_size)
        return self.progress

    def end_epoch(self) -> EpochProgress:
        """Count the finished epoch and return its progress."""
        finished, self.progress = self.progress, None
        self.epoch += 1
        return finished

    def state_dict(self) -> dict:
        """Plain tensors and data (``torch.load(weights_only=True)`` reads them), under the checkpoint's keys."""
        state = {"optimizer": self.optim.state_dict(), "epoch": self.epoch, "step": self.step,
                 "rng": rng_state(self.gen), "best_val_elbo": self.best_val_elbo, "best_epoch": self.best_epoch,
                 "best_model": self.best_weights, "history": self.history, "train_seconds": self.train_seconds,
                 "skipped_steps": self.skips.total, "skips_in_a_row": self.skips.in_a_row,
                 "stopped_early": self.stopped_early}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.progress is not None:
            state["progress"] = self.progress.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict`'s output (or an older checkpoint's): every random stream included."""
        saved, schedule = state["optimizer"], state.get("scheduler")
        if len(saved["param_groups"]) != len(self.optim.param_groups):
            saved, schedule = regroup(saved, self.optim), None  # the rates: rebuilt from the step
        self.optim.load_state_dict(saved)
        if self.scheduler is not None:  # after the optimiser, whose state holds the rates
            self.scheduler = restore_schedule(self.scheduler, schedule, state["step"])
        restore_rng_state(state["rng"], self.gen)
        self.step, self.epoch, self.train_seconds = state["step"], state["epoch"], state["train_seconds"]
        self.history = list(state["history"])
        self.best_val_elbo, self.best_epoch = state["best_val_elbo"], state["best_epoch"]
        self.best_weights = state["best_model"]
        # format 1 kept no skip counts, format 2 no scheduler (None: rebuilt from the step)
        self.skips.total, self.skips.in_a_row = state.get("skipped_steps", 0), state.get("skips_in_a_row", 0)
        self.progress = EpochProgress.from_state_dict(state["progress"]) if "progress" in state else None
        self.stopped_early = state.get("stopped_early")


def regroup(saved: dict, optim: torch.optim.Optimizer) -> dict:
    """An optimiser state saved with other parameter groups, in the groups of ``optim``.

    Checkpoints before ``trainer.guide_lr_factor`` held one group of every parameter in
    ``model.parameters()`` order; the DSSM now has two (generative, guide) in that same order,
    so each parameter's Adam moments keep their index and only the groups change. The groups'
    settings are ``optim``'s own (their rates are then set from the step by the schedule).
    """
    n_saved = sum(len(group["params"]) for group in saved["param_groups"])
    n_now = sum(len(group["params"]) for group in optim.param_groups)
    if n_saved != n_now:
        raise ValueError(f"the checkpoint's optimiser holds {n_saved} parameters, this model {n_now}")
    groups, start = [], 0
    for group in optim.state_dict()["param_groups"]:
        groups.append({**group, "params": list(range(start, start + len(group["params"])))})
        start += len(group["params"])
    return {"state": saved["state"], "param_groups": groups}
