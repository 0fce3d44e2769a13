"""What can stop a training run early, and how it stops: non-finite steps and stop requests (signals).

Both end a run without losing work: a skipped step changes nothing, and a stop
request is honoured between steps, after which the trainer writes a
checkpoint that ``trainer.resume`` continues from exactly.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from pyro_dssm.io.tracking import Tracker

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """Too many steps in a row had a non-finite loss or gradient norm."""


class Interrupted(Exception):
    """Training stopped on request after ``step``, at ``where`` (e.g. "epoch 3, batch 5 of 16");
    ``checkpoint`` (None without a checkpoint directory) continues it.

    ``signum`` is the signal that asked, when one did (set by :func:`pyro_dssm.train.train`).
    """

    def __init__(self, checkpoint: Path | None, step: int, where: str):
        super().__init__(f"training stopped at step {step} ({where})")
        self.checkpoint, self.step, self.where = checkpoint, step, where
        self.signum: int | None = None


class StopOnSignal:
    """``with StopOnSignal() as stop: fit(..., stop=stop)``: the first SIGINT or SIGTERM makes ``stop()`` true.

    Training then ends cleanly after its current step (checkpoint written); a
    second signal acts as it would without this (KeyboardInterrupt, or
    termination). The handler only sets a flag: printing or logging from a
    signal handler can collide with the interrupted write. Python delivers
    signals to the main thread only, so elsewhere nothing is installed.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        signal.signal(signum, self._previous_handler(signum))  # a second signal is not deferred

    def _previous_handler(self, signum: int):
        previous = self._previous.get(signum)
        return signal.SIG_DFL if previous is None else previous

    def __call__(self) -> bool:
        return self.signum is not None

    def __exit__(self, *exc) -> None:
        for signum in self._previous:
            signal.signal(signum, self._previous_handler(signum))


@dataclass
class SkippedSteps:
    """Steps skipped because their loss or gradient norm was not finite: ``total`` in the run, ``in_a_row`` now.

    ``limit`` in a row raise :class:`TrainingDiverged`.
    """

    limit: int
    total: int = 0
    in_a_row: int = 0

    def record(self, finite: bool, step: int, loss: float, grad_norm: float, tracker: Tracker) -> None:
        if finite:
            self.in_a_row = 0
            return
        self.total += 1
        self.in_a_row += 1
        log.warning("step %d: loss %s, gradient norm %s: not finite, step skipped (%d in a row, %d in all)",
                    step, loss, grad_norm, self.in_a_row, self.total)
        tracker.scalars({"skipped_steps": self.total}, step, "train/")
        if self.in_a_row >= self.limit:
            first = step - self.in_a_row + 1
            raise TrainingDiverged(f"training stopped: {self.in_a_row} steps in a row (steps {first}-{step}) had a "
                                   f"non-finite loss or gradient (trainer.max_consecutive_skips={self.limit}); "
                                   "try a lower trainer.lr")
