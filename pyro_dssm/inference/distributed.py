r"""Data-parallel training over processes started by ``torchrun`` (``trainer.distributed=true``).

Every process holds the whole model and draws the same minibatch order (one
generator seeded with ``seed``); process r takes the r-th contiguous share of
every global minibatch of ``trainer.batch_size`` sequences. So the minibatches
are exactly those of a single-process run, and the gradient is exactly its
gradient, whatever the number of processes. The single-process loss of a
minibatch is the negative ELBO per valid step,

.. math:: L = \frac{1}{n} \sum_i \ell_i, \qquad n = \sum_r n_r,

(:math:`\ell_i` the loss of sequence i, :math:`n_r` the valid steps of share r),
and process r computes :math:`L_r = \frac{1}{n_r} \sum_{i \in r} \ell_i` on its
share, so :math:`\nabla L = \sum_r \frac{n_r}{n} \nabla L_r`: one all-reduce
(sum) of :math:`[n_r \nabla L_r, n_r L_r, n_r]` per step. ``DistributedDataParallel``
averages with equal weights 1/R, which equals this only when every share has
the same number of valid steps (not with ragged sequences, nor for a last
minibatch that does not split evenly), hence the explicit all-reduce.

The rest of the contract (:func:`pyro_dssm.inference.trainer.fit`, :func:`pyro_dssm.train.train`):

* the data-driven init and guide warm-up run once, on rank 0, and its
  parameters and minibatch generator are broadcast, so all ranks start
  identical (and rank 0 starts exactly as a single-process run);
* each rank seeds torch's global generator with ``seed + rank``, so the
  Gumbel noise differs between shares;
* the learning-rate schedule is stepped by the loop after every step on every
  rank, also on a rank whose share of the step is empty, so all ranks apply the
  same rate to the same gradient and stay identical;
* validation runs on rank 0 over the whole validation set (the numbers a
  single-process run would report) and is broadcast;
* rank 0 alone writes checkpoints, TensorBoard and ``metrics.json``; Hydra
  runs the other ranks in a private temporary directory without ``.hydra/``
  or a log file (:class:`RankZeroOutputs`), so one run directory exists.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from pyro_dssm.inference.batches import n_valid

log = logging.getLogger(__name__)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class DataParallel:
    """This process's place in the process group: ``rank`` of ``world_size``, on ``device``."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global minibatch idx (B,); shares differ in size by at most one."""
        return idx.tensor_split(self.world_size)[self.rank]

    def backward(self, module: nn.Module, loss_fn, x_all, mask_all, idx: torch.Tensor, step: int):
        r"""Loss and gradient of the global minibatch ``idx`` (B,), this rank computing only its share.

        ``loss_fn(x, mask, step) -> (loss per valid step, extras)`` as in
        :class:`pyro_dssm.inference.loop.SGDStep`. Leaves :math:`\nabla L` (module
        docstring) in every parameter's ``.grad`` on every rank and returns
        (L, extras); a rank with an empty share contributes nothing.
        """
        params = [p for p in module.parameters() if p.requires_grad]
        mine = self.share(idx)
        loss, extras, n_mine = None, {}, 0.0
        if len(mine) > 0:
            x, mask = x_all[mine], None if mask_all is None else mask_all[mine]
            loss, extras = loss_fn(x, mask, step)
            n_mine = n_valid(x, mask)
            (loss * n_mine).backward()  # gradient of the share's summed loss
        # one flat buffer: summed gradients, which parameters have one, summed loss, valid steps
        flat = torch.cat([torch.zeros_like(p).reshape(-1) if p.grad is None else p.grad.reshape(-1) for p in params])
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=flat.dtype, device=self.device)
        total = flat.new_zeros(2)
        if loss is not None:
            total[0], total[1] = loss.detach() * n_mine, n_mine
        buffer = torch.cat([flat, has_grad, total])
        dist.all_reduce(buffer)
        flat, has_grad, (loss_sum, n) = buffer[: flat.numel()], buffer[flat.numel(): -2], buffer[-2:]
        for p, g, used in zip(params, flat.split([p.numel() for p in params]), has_grad):
            # a parameter no share used keeps grad None, as in a single process (Adam then skips it)
            p.grad = g.view_as(p).div(n) if used > 0 else None
        return loss_sum / n, extras

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into ``module`` on every rank."""
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def broadcast_generator(self, generator: torch.Generator) -> None:
        """Give every rank rank 0's state of ``generator`` (a CPU generator)."""
        state = generator.get_state()
        if dist.get_backend() == "nccl":
            moved = state.to(self.device)
            dist.broadcast(moved, src=0)
            state = moved.cpu()
        else:
            dist.broadcast(state, src=0)
        generator.set_state(state)

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` (anything picklable) on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]


def torchrun_env() -> dict[str, str] | None:
    """The rendezvous variables torchrun sets, or None when this process was not started by it."""
    if not all(v in os.environ for v in TORCHRUN_VARS):
        return None
    return {v: os.environ[v] for v in TORCHRUN_VARS}


def init_data_parallel(device: torch.device) -> DataParallel:
    """Join the process group described by torchrun's environment: gloo on CPU, nccl on CUDA.

    On CUDA each process takes GPU ``LOCAL_RANK``. Raises ValueError when the
    torchrun variables are missing.
    """
    env = torchrun_env()
    if env is None:
        missing = [v for v in TORCHRUN_VARS if v not in os.environ]
        raise ValueError(f"trainer.distributed=true needs the environment torchrun sets ({missing} missing): "
                         "start with torchrun --nproc_per_node=N -m pyro_dssm.train trainer.distributed=true ...")
    if device.type == "cuda":
        device = torch.device("cuda", int(env["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    group = DataParallel(dist.get_rank(), dist.get_world_size(), device)
    log.info("data-parallel: rank %d of %d (%s, %s)", group.rank, group.world_size, backend, device)
    return group


def shutdown() -> None:
    """Leave the process group (no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


try:
    from hydra.experimental.callback import Callback
except ImportError:  # hydra is a dependency; this only keeps the module importable without it
    Callback = object


class RankZeroOutputs(Callback):
    """Hydra callback: under torchrun with ``trainer.distributed=true``, ranks > 0 leave no files behind.

    Each rank runs Hydra itself, and each would otherwise create its own run
    directory (``outputs/DATE/TIME`` may differ by a second between ranks),
    ``.hydra/`` and log file. Before the job starts, a rank > 0 is moved to a
    private temporary directory (removed at the end), without ``.hydra/`` and
    with console logging of warnings only. Rank 0 keeps the configured run
    directory, which is therefore the run's only one.
    """

    def __init__(self) -> None:
        self.tmp: str | None = None

    def on_run_start(self, config, **kwargs) -> None:
        from omegaconf import open_dict, read_write

        rank = int(os.environ.get("RANK", "0"))
        if rank == 0 or not config.trainer.get("distributed", False) or torchrun_env() is None:
            return
        self.tmp = tempfile.mkdtemp(prefix=f"pyro_dssm_rank{rank}_")
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.run.dir = self.tmp
            config.hydra.output_subdir = None
            config.hydra.job_logging = {
                "version": 1, "disable_existing_loggers": False,
                "formatters": {"simple": {"format": f"[rank {rank}][%(name)s][%(levelname)s] - %(message)s"}},
                "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "simple"}},
                "root": {"level": "WARNING", "handlers": ["console"]},
            }

    def on_run_end(self, config, **kwargs) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
