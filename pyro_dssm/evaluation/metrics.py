"""Label-permutation-invariant scores: Hungarian accuracy (ours, from the confusion matrix), NMI and
adjusted Rand index (scikit-learn's).

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


def clustering_scores(true, pred, n_states: int, mask=None, prefix: str = "") -> dict[str, float]:
    r"""``accuracy`` (Hungarian), ``nmi`` and ``ari`` of predicted states against true labels, on valid steps.

    ``true``, ``pred`` (B, T) or flat; ``mask`` (B, T) bool keeps valid steps. ``nmi`` is
    :math:`I(Y; \hat Y) / \tfrac12 (H(Y) + H(\hat Y))` (scikit-learn's
    ``normalized_mutual_info_score``, arithmetic mean), ``ari`` the adjusted Rand index of
    Hubert and Arabie (``adjusted_rand_score``); both are 1 for identical partitions up to relabelling.
    """
    # imported here: sklearn.metrics adds most of a second to every command's start-up
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    cm = confusion_matrix(true, pred, _n_true(true, n_states, mask), n_states, mask)
    if cm.sum() == 0:
        raise ValueError("clustering_scores needs at least one valid step")
    rows, cols = linear_sum_assignment(-cm)
    t, p = _flat_valid(true, pred, mask)
    return {f"{prefix}accuracy": float(cm[rows, cols].sum() / cm.sum()),
            f"{prefix}nmi": float(normalized_mutual_info_score(t, p)), f"{prefix}ari": float(adjusted_rand_score(t, p))}
