"""How many intra-op threads a run uses (``trainer.num_threads``).

A training step is hundreds of small tensor operations (a GRU cell per time step, (B, K)
messages). torch splits each across its intra-op threads by default, and those threads wait
for one another at every operation: when another process holds a core, each wait is a
scheduling slice, and a run slows about tenfold. ``auto`` therefore runs the small work of
typical batches on one thread, which loses nothing on an idle machine, and gives larger
batches every core, where the operations are big enough to pay for it (the measurements:
benchmarks/RESULTS.md, "Threads"). Parallelism across runs belongs to the launchers
(joblib, Slurm) and torchrun.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

PARALLEL_WORK = 2**15  # batch size x network width from which intra-op threads pay (B = 1024 at width 32)


def available_cores() -> int:
    """The cores this process may run on (its affinity where the platform tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def model_width(config) -> int:
    """The widest per-step tensor row of a model with ``model`` settings ``config``: its hidden sizes and K."""
    return max(config.rnn_hidden, config.transition_hidden, config.emitter_hidden, config.n_states)


def choose_threads(setting, device: torch.device, batch_size: int, width: int) -> int:
    """The intra-op threads for ``setting`` (``"auto"`` or a positive integer) of a run on ``device`` whose
    steps work on (batch_size, width) tensors: ``auto`` is 1 on a CPU below :data:`PARALLEL_WORK`, every core
    above it, and torch's own choice on a GPU (where the host threads only launch kernels)."""
    if setting != "auto":
        return int(setting)
    if device.type != "cpu":
        return torch.get_num_threads()
    return 1 if batch_size * width < PARALLEL_WORK else available_cores()


@contextlib.contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the caller's number."""
    before = torch.get_num_threads()
    if n != before:
        log.info("torch intra-op threads: %d (was %d)", n, before)
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
