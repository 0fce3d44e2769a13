"""Label-permutation-invariant scores: confusion matrix + Hungarian matching."""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


def _flat_valid(true, pred, mask):
    true = torch.as_tensor(true).reshape(-1)
    pred = torch.as_tensor(pred).reshape(-1)
    if true.shape != pred.shape:
        raise ValueError(f"true and predicted states differ in size: {true.numel()} vs {pred.numel()}")
    if mask is not None:
        keep = torch.as_tensor(mask).reshape(-1).bool()
        true, pred = true[keep], pred[keep]
    return true.cpu().numpy().astype(np.int64), pred.cpu().numpy().astype(np.int64)


def confusion_matrix(true, pred, n_true: int, n_pred: int, mask=None) -> np.ndarray:
    """(n_true, n_pred) counts, ``[i, j]`` = steps with true state i predicted as j.

    ``true``, ``pred``: (B, T) integer states; ``mask`` (B, T) bool keeps valid steps.
    """
    t, p = _flat_valid(true, pred, mask)
    if t.size and (t.min() < 0 or t.max() >= n_true):
        raise ValueError(f"true states must lie in [0, {n_true}), got range [{t.min()}, {t.max()}]")
    if p.size and (p.min() < 0 or p.max() >= n_pred):
        raise ValueError(f"predicted states must lie in [0, {n_pred}), got range [{p.min()}, {p.max()}]")
    cm = np.zeros((n_true, n_pred), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def hungarian_match(cm: np.ndarray) -> np.ndarray:
    """Best one-to-one relabelling of a confusion matrix.

    Returns (n_pred,) int array ``mapping`` with ``mapping[j]`` the true label
    matched to predicted label j (-1 if unmatched, when n_pred > n_true).
    """
    rows, cols = linear_sum_assignment(-cm)
    mapping = np.full(cm.shape[1], -1, dtype=np.int64)
    mapping[cols] = rows
    return mapping


def hungarian_accuracy(true, pred, n_states: int, mask=None) -> float:
    """Fraction of valid steps correct after the best permutation of predicted labels."""
    cm = confusion_matrix(true, pred, n_states, n_states, mask)
    total = cm.sum()
    if total == 0:
        raise ValueError("hungarian_accuracy needs at least one valid step")
    rows, cols = linear_sum_assignment(-cm)
    return float(cm[rows, cols].sum() / total)
