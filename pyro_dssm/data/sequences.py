"""Padded batches of ragged sequences: the container every part of the package passes around."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SequenceData:
    """A batch of (possibly ragged) sequences, padded to a common length.

    Attributes:
        x: (N, T, D) observations; padded steps hold zeros.
        lengths: (N,) int64 number of valid steps of each sequence.
        states: (N, T) int64 true states, or None when unlabelled; -1 on padding and unlabelled steps.
    """

    x: torch.Tensor
    lengths: torch.Tensor
    states: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def mask(self) -> torch.Tensor:
        """(N, T) bool, True on valid (non-padded) steps."""
        return lengths_to_mask(self.lengths, self.x.shape[1])

    @property
    def label_mask(self) -> torch.Tensor:
        """(N, T) bool, True on valid steps that carry a label (``states >= 0``); the steps scores count."""
        if self.states is None:
            return torch.zeros_like(self.mask)
        return self.mask & (self.states >= 0)

    def subset(self, index: torch.Tensor) -> "SequenceData":
        """The sequences at ``index`` (a (B,) index tensor)."""
        states = None if self.states is None else self.states[index]
        return SequenceData(self.x[index], self.lengths[index], states)


def lengths_to_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask of valid steps."""
    return torch.arange(seq_len, device=lengths.device) < lengths[:, None]
