"""Minibatches: the shuffled order of an epoch, how far it got, and how many valid steps a batch holds.

Imported by the training loop, the losses and data parallelism alike; it
imports nothing from :mod:`pyro_dssm.inference`, so none of them import each
other for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pyro_dssm.data.sequences import SequenceData


def n_valid(x: torch.Tensor, mask: torch.Tensor | None):
    """Number of valid steps of a batch x (B, T, D): ``mask.sum()`` of mask (B, T), or B * T without a mask."""
    return x.shape[0] * x.shape[1] if mask is None else mask.sum()


@dataclass
class EpochProgress:
    """One epoch's minibatches: the order (N,) of the sequence indices, split into batches of ``batch_size``.

    ``done`` batches are done; ``losses`` holds their finite losses and ``tau``
    the last temperature logged (None without one). ``seconds`` (time spent in
    this process's steps) is not checkpointed: a resumed epoch counts afresh.
    """

    order: torch.Tensor
    batch_size: int
    done: int = 0
    losses: list[float] = field(default_factory=list)
    tau: float | None = None
    seconds: float = 0.0

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.order) / self.batch_size)

    @property
    def finished(self) -> bool:
        return self.done == self.n_batches

    @property
    def mean_loss(self) -> float:
        """The mean of the finite losses (NaN when every step was skipped)."""
        return sum(self.losses) / len(self.losses) if self.losses else math.nan

    def remaining(self, device: torch.device) -> list[torch.Tensor]:
        """The batches (B,) not done yet, as index tensors on ``device``."""
        # one host-to-device copy of the order per epoch, not one per step
        return list(self.order.to(device).split(self.batch_size))[self.done:]

    def where(self) -> str:
        return f"batch {self.done} of {self.n_batches}"

    def state_dict(self) -> dict:
        return {"order": self.order.cpu(), "done": self.done, "losses": list(self.losses), "tau": self.tau,
                "batch_size": self.batch_size}

    @classmethod
    def from_state_dict(cls, state: dict) -> "EpochProgress":
        return cls(state["order"], state["batch_size"], state["done"], list(state["losses"]), state["tau"])


def device_mask(data: SequenceData, device: torch.device) -> torch.Tensor | None:
    """(N, T) mask on ``device``, or None when no sequence is padded (decided once, on the CPU).

    None lets the model and guide skip per-batch length checks, which would
    force a host sync every step on a GPU.
    """
    return None if bool((data.lengths == data.x.shape[1]).all()) else data.mask.to(device)
