"""Label-permutation-invariant scores from the confusion matrix: Hungarian accuracy, NMI, adjusted Rand index.

The number of true classes may differ from the number of predicted states K:
matrices are (n_true, n_pred), and the Hungarian matching is one-to-one on the
smaller side (unmatched steps count as errors).
"""

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


def _n_true(true, n_states: int, mask) -> int:
    """Rows of the confusion matrix: K, or more when the labels have more classes than K."""
    t, _ = _flat_valid(true, true, mask)
    return max(n_states, int(t.max()) + 1) if t.size else n_states


def hungarian_accuracy(true, pred, n_states: int, mask=None) -> float:
    """Fraction of valid steps correct after the best one-to-one relabelling of predicted labels.

    ``true``, ``pred`` (B, T); ``n_states`` the number of predicted states K
    (the label classes, inferred from ``true``, may be more or fewer).
    """
    cm = confusion_matrix(true, pred, _n_true(true, n_states, mask), n_states, mask)
    total = cm.sum()
    if total == 0:
        raise ValueError("hungarian_accuracy needs at least one valid step")
    rows, cols = linear_sum_assignment(-cm)
    return float(cm[rows, cols].sum() / total)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(cm: np.ndarray) -> float:
    r"""NMI of a confusion matrix: :math:`I(Y; \hat Y) / \tfrac12 (H(Y) + H(\hat Y))` (arithmetic mean).

    1 when neither labelling splits the data (both entropies zero).
    """
    cm = cm[cm.sum(1) > 0][:, cm.sum(0) > 0].astype(np.float64)
    if cm.shape[0] == cm.shape[1] == 1:
        return 1.0
    n = cm.sum()
    h_true, h_pred = _entropy(cm.sum(1)), _entropy(cm.sum(0))
    nz = cm > 0
    outer = np.outer(cm.sum(1), cm.sum(0))
    mi = float((cm[nz] / n * np.log(cm[nz] * n / outer[nz])).sum())
    if mi <= 0:
        return 0.0
    return mi / (0.5 * (h_true + h_pred))


def adjusted_rand_index(cm: np.ndarray) -> float:
    r"""Adjusted Rand index (Hubert and Arabie 1985) of a confusion matrix:

    :math:`(\sum_{ij}\binom{n_{ij}}{2} - E) / (\tfrac12 (A + B) - E)` with
    :math:`A = \sum_i \binom{a_i}{2}`, :math:`B = \sum_j \binom{b_j}{2}`,
    :math:`E = AB / \binom{n}{2}`; 1 for identical partitions (up to relabelling).
    """
    def pairs(counts):
        counts = np.asarray(counts, dtype=object)  # Python ints: no overflow
        return int(sum(c * (c - 1) // 2 for c in counts.ravel()))

    index, a, b, total = pairs(cm), pairs(cm.sum(1)), pairs(cm.sum(0)), pairs([cm.sum()])
    if total == 0 or a + b == 2 * index:  # identical partitions (or fewer than 2 steps)
        return 1.0
    expected = a * b / total
    return float((index - expected) / (0.5 * (a + b) - expected))


def clustering_scores(true, pred, n_states: int, mask=None, prefix: str = "") -> dict[str, float]:
    """``accuracy`` (Hungarian), ``nmi`` and ``ari`` of predicted states against true labels, on valid steps."""
    cm = confusion_matrix(true, pred, _n_true(true, n_states, mask), n_states, mask)
    if cm.sum() == 0:
        raise ValueError("clustering_scores needs at least one valid step")
    rows, cols = linear_sum_assignment(-cm)
    return {f"{prefix}accuracy": float(cm[rows, cols].sum() / cm.sum()),
            f"{prefix}nmi": normalized_mutual_info(cm), f"{prefix}ari": adjusted_rand_index(cm)}
