"""Pictures of a model and its states (matplotlib, no display needed).

Figures are built on :class:`matplotlib.figure.Figure` directly, never through
pyplot's global state, so they render headless (Agg) and do not leak; the
tracker sends them to TensorBoard, :mod:`pyro_dssm.decode` saves them as PNG.
Predicted states are shown after Hungarian matching to the labels, so a
state and the class it was matched to share one colour.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.evaluation.metrics import confusion_matrix, hungarian_match

_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
            "#bcbd22", "#17becf"]


def state_colours(n: int) -> ListedColormap:
    """n distinct colours, state k -> colour k (cycling after 10)."""
    return ListedColormap([_PALETTE[k % len(_PALETTE)] for k in range(max(n, 1))])


def matched_order(cm: np.ndarray) -> np.ndarray:
    """Permutation of the K predicted states (columns of the (C, K) ``cm``): matched states
    in the order of their classes, then the unmatched ones."""
    mapping = hungarian_match(cm)  # (K,) class of each state, -1 if unmatched
    matched = sorted((c, k) for k, c in enumerate(mapping) if c >= 0)
    return np.array([k for _, k in matched] + [k for k, c in enumerate(mapping) if c < 0], dtype=np.int64)


def class_colours(cm: np.ndarray) -> np.ndarray:
    """(K,) colour index of each predicted state of the (C, K) ``cm``: its Hungarian-matched class,
    or C, C+1, ... for unmatched states, so that a state and its class share a colour."""
    mapping = hungarian_match(cm)
    unmatched = mapping < 0
    mapping[unmatched] = cm.shape[0] + np.arange(int(unmatched.sum()))
    return mapping


def relabel(pred: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """States (T,) -> their colour indices (:func:`class_colours`); negative values are kept."""
    pred = np.asarray(pred)
    return np.where(pred >= 0, colours[np.clip(pred, 0, None)], pred)


def confusion_figure(cm: np.ndarray, class_names: list[str] | None = None) -> Figure:
    """(C, K) counts of class i decoded as state j, columns after Hungarian matching; colour = row share."""
    order = matched_order(cm)
    cm = cm[:, order]
    share = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(1.2 + 0.6 * cm.shape[1], 1.0 + 0.5 * cm.shape[0]), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(cm.shape[1]), [str(k) for k in order])
    ax.set_yticks(range(cm.shape[0]), class_names or [str(i) for i in range(cm.shape[0])])
    ax.set_xlabel("predicted state (matched order)")
    ax.set_ylabel("true class")
    return fig


def transition_figure(learned: np.ndarray, true: np.ndarray | None = None, order: np.ndarray | None = None) -> Figure:
    """Learned (K, K) p(c_t = j | c_{t-1} = i), states permuted by ``order``; beside the true matrix if given."""
    if order is not None:
        learned = learned[np.ix_(order, order)]
    panels = [("learned", learned)] + ([("true", true)] if true is not None else [])
    fig = Figure(figsize=(3.2 * len(panels), 3.0), layout="constrained")
    for n, (title, matrix) in enumerate(panels, 1):
        ax = fig.add_subplot(1, len(panels), n)
        image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{title} transition")
        ax.set_xlabel("to state")
        ax.set_ylabel("from state")
    fig.colorbar(image, ax=fig.axes, shrink=0.8)
    return fig


def segmentation_figure(
    sequences: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]], n_states: int, n_classes: int = 0,
    class_names: list[str] | None = None, signal_names: list[str] | None = None,
) -> Figure:
    """Per sequence: the signal (T, D), a band of predicted states (T,), and a band of true classes (T,) if given.

    ``sequences``: (name, x, pred, true) tuples; negative true values (unlabelled) are left white.
    """
    n_rows = sum(3 if true is not None else 2 for *_, true in sequences)
    ratios = [r for *_, true in sequences for r in ([4, 1, 1] if true is not None else [4, 1])]
    fig = Figure(figsize=(10, 0.6 * n_rows + 1.2 * len(sequences)), layout="constrained")
    axes = fig.subplots(n_rows, 1, gridspec_kw={"height_ratios": ratios}, squeeze=False)[:, 0]
    cmap = state_colours(max(n_states, n_classes))
    row = 0
    for name, x, pred, true in sequences:
        ax = axes[row]
        ax.plot(np.arange(len(x)), x, linewidth=0.8, marker="o" if len(x) == 1 else None)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_title(name, fontsize=9, loc="left")
        ax.tick_params(labelbottom=False)
        bands = [("predicted", pred)] + ([("true", true)] if true is not None else [])
        for label, states in bands:
            row += 1
            band = np.ma.masked_less(np.asarray(states, dtype=float)[None, :], 0)
            axes[row].imshow(band, aspect="auto", cmap=cmap, vmin=-0.5, vmax=cmap.N - 0.5,
                             interpolation="nearest", extent=(-0.5, len(x) - 0.5, 0, 1))
            axes[row].set_yticks([0.5], [label])
            axes[row].tick_params(labelbottom=label == bands[-1][0])
        row += 1
    if signal_names:
        axes[0].legend(signal_names, fontsize=7, loc="upper left", ncol=len(signal_names))
    if class_names:
        handles = [Patch(color=cmap(k), label=n) for k, n in enumerate(class_names)]
        fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=len(class_names))
    return fig


@torch.no_grad()
def training_figures(model, val: SequenceData, true_transition: torch.Tensor | None = None,
                     max_steps: int = 500) -> dict[str, Figure]:
    """Figures of ``model`` (a DSSM) on the validation set, keyed by TensorBoard tag.

    ``figures/confusion`` (with labels), ``figures/transition`` (learned, beside
    ``true_transition`` (K, K) if given) and ``figures/segmentation`` (the first
    validation sequence, at most ``max_steps`` steps: guide states vs labels).
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    pred = torch.cat([model.guide_logits(val.x[i: i + 512].to(device), val.mask[i: i + 512].to(device)).argmax(-1).cpu()
                      for i in range(0, len(val), 512)])
    model.train(was_training)
    K, figures, order = model.n_states, {}, None
    n_classes = 0
    if val.states is not None and bool(val.label_mask.any()):
        n_classes = max(K, int(val.states.max()) + 1)
        cm = confusion_matrix(val.states, pred, n_classes, K, val.label_mask)
        cm = cm[: int(val.states.max()) + 1]
        figures["figures/confusion"] = confusion_figure(cm)
        order, colours = matched_order(cm), class_colours(cm)
    learned = model.transition_parameters()[1].exp().cpu().numpy()
    true = None if true_transition is None else true_transition.cpu().numpy()
    figures["figures/transition"] = transition_figure(learned, true, order if true is not None else None)
    T = min(int(val.lengths[0]), max_steps)
    x0, p0 = val.x[0, :T, :model.config.obs_dim].numpy(), pred[0, :T].numpy()  # the features (not known states)
    t0 = None if val.states is None else val.states[0, :T].numpy()
    if order is not None:
        p0 = relabel(p0, colours)
    figures["figures/segmentation"] = segmentation_figure([("validation sequence 0", x0, p0, t0)], K, n_classes)
    return figures
