"""Hooks of the training loop (:mod:`pyro_dssm.inference.loop`): evaluation and logging, figures, keep-best,
checkpoints, stop requests. Each is small and talks to the others only through the
:class:`~pyro_dssm.inference.state.TrainingState`; the order of the list the loop is given is
the order they run in: evaluate, draw, keep the best, stop early, save, then stop if asked.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from pyro_dssm.inference.batches import EpochProgress
from pyro_dssm.inference.faults import Interrupted
from pyro_dssm.inference.loop import Hook
from pyro_dssm.inference.state import TrainingState
from pyro_dssm.io.checkpoint import save_checkpoint
from pyro_dssm.io.figures import training_figures
from pyro_dssm.io.outputs import remove_temporaries
from pyro_dssm.io.tracking import Tracker

log = logging.getLogger(__name__)


class Validation(Hook):
    """After every ``every``-th epoch and the last: ``evaluate()`` appended to ``state.history``, logged under
    ``val/`` with a progress line (the epochs between get a progress line of their training loss only).

    ``log_training``: also log the epoch's mean training ``loss``, last ``tau``
    and ``seconds`` under ``val/`` (the exact baseline logs its metrics only).
    The hooks after it see a new record only when ``state.history[-1]["epoch"] == state.epoch``.
    """

    def __init__(self, evaluate: Callable[[], dict[str, float]], tracker: Tracker, n_epochs: int,
                 log_training: bool = True, every: int = 1):
        self.evaluate, self.tracker, self.n_epochs, self.log_training = evaluate, tracker, n_epochs, log_training
        self.every = every

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1..n_epochs) is evaluated: every ``every``-th and the last."""
        return epoch % self.every == 0 or epoch == self.n_epochs

    def record(self, state: TrainingState) -> dict[str, float]:
        """Evaluate now and append the record (``epoch``, ``step``, ``train_seconds``, metrics) to the history."""
        metrics = self.evaluate()
        state.history.append({"epoch": state.epoch, "step": state.step, "train_seconds": state.train_seconds,
                              **metrics})
        return metrics

    def epoch_end(self, state: TrainingState, epoch: EpochProgress) -> None:
        metrics = self.record(state) if self.due(state.epoch) else {}
        if self.log_training:
            metrics.update(loss=epoch.mean_loss, tau=epoch.tau, seconds=epoch.seconds)
        self.tracker.scalars(metrics, state.epoch, "val/")
        self.tracker.epoch_line(state.epoch, self.n_epochs, {"loss": epoch.mean_loss, **metrics})


class Figures(Hook):
    """Every ``every`` epochs and after the last one (``every`` 0: never), the model's figures to TensorBoard.

    ``true_transition`` (K, K), if known, is drawn beside the learned one.
    """

    def __init__(self, model: nn.Module, val, tracker: Tracker, every: int, n_epochs: int,
                 true_transition: torch.Tensor | None = None):
        self.model, self.val, self.tracker, self.every, self.n_epochs = model, val, tracker, every, n_epochs
        self.true_transition = true_transition

    def epoch_end(self, state: TrainingState, epoch: EpochProgress) -> None:
        if not (self.tracker.enabled and self.every):
            return
        if state.epoch % self.every == 0 or state.epoch == self.n_epochs:
            for tag, fig in training_figures(self.model, self.val, self.true_transition).items():
                self.tracker.figure(tag, fig, state.epoch)


class KeepBest(Hook):
    """Remembers the evaluation with the best validation ELBO (the last history record's ``val_elbo_per_step``;
    after an epoch without evaluation that record is the best's or below it, so nothing changes)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def mark(self, state: TrainingState) -> None:
        """The last evaluation is the best so far: keep its ELBO, epoch and a CPU copy of the weights."""
        state.best_val_elbo, state.best_epoch = state.history[-1]["val_elbo_per_step"], state.epoch
        state.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}

    def epoch_end(self, state: TrainingState, epoch: EpochProgress) -> None:
        if state.history[-1]["val_elbo_per_step"] > state.best_val_elbo:
            self.mark(state)

    def restore(self, state: TrainingState) -> None:
        """Load the best weights into the model."""
        self.model.load_state_dict(state.best_weights)


def epochs_without_improvement(history: list[dict], tolerance: float) -> int:
    """Evaluations since the last one whose ``val_elbo_per_step`` beat the best before it by more than
    ``tolerance`` x its magnitude (relative); epoch 0 (the start) counts as an improvement."""
    best, last = -math.inf, history[0]["epoch"]
    for record in history:
        value = record["val_elbo_per_step"]
        if value > best + tolerance * abs(best) if math.isfinite(best) else value > best:
            best, last = value, record["epoch"]
    return history[-1]["epoch"] - last


class EarlyStopping(Hook):
    """Ends training after an epoch from ``first_epoch`` on once the validation ELBO has not improved by
    ``tolerance`` (relative) for ``patience`` epochs (:func:`epochs_without_improvement`), by setting
    ``state.stopped_early``. Decided from the history alone, so a resumed run stops where it would have.
    ``first_epoch``: the end of the temperature annealing, before which the ELBO is still moving with tau.
    Decided at evaluated epochs only (``trainer.val_every``).
    """

    def __init__(self, patience: int, tolerance: float, first_epoch: int):
        self.patience, self.tolerance, self.first_epoch = patience, tolerance, first_epoch

    def epoch_end(self, state: TrainingState, epoch: EpochProgress) -> None:
        if state.epoch < self.first_epoch or state.history[-1]["epoch"] != state.epoch:  # not evaluated now
            return
        stale = epochs_without_improvement(state.history, self.tolerance)
        if stale >= self.patience:
            state.stopped_early = state.epoch
            log.info("early stopping after epoch %d: the validation ELBO has not improved by %g for %d epochs "
                     "(trainer.patience=%d)", state.epoch, self.tolerance, stale, self.patience)


class Checkpoints(Hook):
    """``directory/last.pt`` after every epoch, ``best.pt`` when the best evaluation changed (None: no files).

    A checkpoint holds ``model`` (its weights), ``state.state_dict()``,
    ``n_epochs`` and ``model_config``, plus ``extra``; ``best.pt`` has the best
    evaluation's weights and epoch instead.
    """

    def __init__(self, directory: Path | None, model: nn.Module, n_epochs: int, model_config: dict,
                 extra: dict | None = None):
        self.directory, self.model, self.n_epochs = directory, model, n_epochs
        self.fixed = {"n_epochs": n_epochs, "model_config": model_config, **(extra or {})}
        self.last = None if directory is None else directory / "last.pt"
        self.saved_step: int | None = None  # the step last.pt holds, once this run has written it
        if directory is not None:
            for path in remove_temporaries(directory):
                log.info("removed %s, left by an interrupted checkpoint write", path)

    def payload(self, state: TrainingState) -> dict:
        """What ``last.pt`` holds now: the model's weights, ``state.state_dict()`` and the fixed keys (tensors
        shared with the model and the optimiser, not copies)."""
        return {"model": self.model.state_dict(), **state.state_dict(), **self.fixed}

    def save(self, state: TrainingState, also_best: bool = False) -> None:
        if self.directory is None:
            return
        payload = self.payload(state)
        save_checkpoint(self.last, payload)
        if also_best:
            save_checkpoint(self.directory / "best.pt",
                            {**payload, "model": state.best_weights, "epoch": state.best_epoch})
        self.saved_step = state.step

    def epoch_end(self, state: TrainingState, epoch: EpochProgress) -> None:
        # at epoch 1 best.pt is written even if the best is still the initialised model (epoch 0)
        self.save(state, also_best=state.best_epoch == state.epoch or state.epoch == 1)

    def kept(self, resumed: bool) -> str:
        """What a run that fails now leaves behind, for its error message."""
        if self.saved_step is not None:
            return f"{self.last} holds step {self.saved_step}"
        return "the checkpoint it resumed from is unchanged" if resumed else "no checkpoint was written yet"


class StopRequest(Hook):
    """Ends training when ``stop()`` turns true (e.g. :class:`~pyro_dssm.inference.faults.StopOnSignal`).

    Asked after every step: inside an epoch, ``checkpoints`` saves the position
    in it and :class:`Interrupted` is raised; at the end of an epoch before
    ``last_epoch``, after that epoch's checkpoint.
    """

    def __init__(self, stop: Callable[[], bool], checkpoints: Checkpoints, last_epoch: int):
        self.stop, self.checkpoints, self.last_epoch = stop, checkpoints, last_epoch

    def step_end(self, state: TrainingState) -> None:
        if not state.progress.finished and self.stop():
            self.checkpoints.save(state)
            raise Interrupted(self.checkpoints.last, state.step, f"epoch {state.epoch + 1}, {state.progress.where()}")

    def epoch_end(self, state: TrainingState, epoch: EpochProgress) -> None:
        if state.epoch < self.last_epoch and self.stop():
            raise Interrupted(self.checkpoints.last, state.step, f"end of epoch {state.epoch}")
