"""Your own sequences as training data: per-step features, standardisation, splits, windows, padding.

The pipeline of :func:`load_file_data`::

    file (:mod:`pyro_dssm.data.readers`) -> ragged sequences (T_i, D0) [+ labels] -> features (raw | diff | absdiff) -> moving average
         -> split by whole sequences
         -> standardise with training-split statistics -> windows (training split) -> pad + mask

The standardisation statistics and feature list form a :class:`Preprocessing`,
stored in the checkpoint so that decoding new sequences applies exactly the
same transform. Labels are optional and may be strings; they are mapped to
integer codes (``-1`` = unlabelled step) and only ever used for scoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from pyro_dssm.config import FileDataConfig
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.data.features import Preprocessing, reads_window
from pyro_dssm.data.npz import read_npz
from pyro_dssm.data.readers import Sequences, read_csv

def read_sequences(cfg: FileDataConfig, path: str | Path, label_names: list[str] | None = None,
                   labels_optional: bool = False, key: str = "data.path",
                   known_names: list[str] | None = None) -> Sequences:
    """Read ``path`` in the format of ``cfg.name`` with ``cfg``'s column settings (a validation file may lack
    the label and known-states columns: ``labels_optional``)."""
    if cfg.name == "csv":
        return read_csv(path, cfg.id_column, cfg.time_column, cfg.feature_columns, cfg.label_column,
                        label_names, labels_optional, key, cfg.missing, cfg.known_states_column, known_names,
                        known_optional=labels_optional, input_columns=cfg.input_columns)
    return read_npz(path, label_names, key, cfg.missing)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split n sequences into (train, val) index lists, whole sequences only, reproducibly from ``seed``.

    ``val_fraction`` 0 validates on the training sequences themselves (the usual
    protocol for unsupervised segmentation, and the only one with one sequence).
    """
    if val_fraction == 0:
        return list(range(n)), list(range(n))
    n_val = max(1, round(val_fraction * n))
    if n_val >= n:
        raise ValueError(f"data.val_fraction={val_fraction} leaves no training sequence out of {n}; "
                         "use 0 (validate on the training sequences) or data.val_path")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts of the windows covering 0..length-1: every ``stride`` steps, plus one flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def pad_sequences(xs: list[np.ndarray], labels: list[np.ndarray] | None = None) -> SequenceData:
    """Ragged (T_i, D) arrays [+ (T_i,) codes] -> :class:`SequenceData` padded to max T_i.

    Padding holds zeros in x (B, T_max, D) and -1 in the states (B, T_max); states are None when no step
    is labelled. NaN (missing) cells stay NaN.
    """
    lengths = torch.tensor([len(x) for x in xs], dtype=torch.long)
    x = pad_sequence([torch.as_tensor(seq, dtype=torch.float32) for seq in xs], batch_first=True)
    if labels is None:
        return SequenceData(x, lengths, None)
    states = pad_sequence([torch.as_tensor(z, dtype=torch.long) for z in labels], batch_first=True,
                          padding_value=-1)
    return SequenceData(x, lengths, states if bool((states >= 0).any()) else None)


@dataclass
class FileData:
    """Train and validation sequences from a file; ``params`` is None (the true HMM is unknown)."""

    train: SequenceData
    val: SequenceData
    preprocessing: Preprocessing
    label_names: list[str]
    val_names: list[str]
    summary: str = ""
    params: None = None
    known_names: list[str] | None = None  # state k is known class k (data.known_states_column), else None
    input_preprocessing: Preprocessing | None = None  # the inputs' standardisation (data.input_columns), else None

    @property
    def input_names(self) -> list[str] | None:
        """The exogenous inputs the observations carry after the features, or None."""
        return None if self.input_preprocessing is None else list(self.input_preprocessing.feature_names)


def load_file_data(cfg: FileDataConfig, seed: int, sequences: Sequences | None = None) -> FileData:
    """Read, split, standardise, window and pad as ``cfg`` says (see the module docstring).

    ``sequences``, when given, stands in for the file at ``cfg.path`` (already read, e.g. arrays
    handed to :func:`pyro_dssm.fit`); ``cfg.path`` then only names them in messages.
    """
    seqs = read_sequences(cfg, cfg.path) if sequences is None else sequences
    if cfg.val_path is not None:
        val_seqs = read_sequences(cfg, cfg.val_path, label_names=seqs.label_names, labels_optional=True,
                                  key="data.val_path", known_names=seqs.known_names)
        if val_seqs.feature_names != seqs.feature_names and cfg.name == "csv":
            raise ValueError(f"data.val_path columns {val_seqs.feature_names} differ from {seqs.feature_names}")
        train_idx, val_idx = list(range(len(seqs))), list(range(len(val_seqs)))
    else:
        val_seqs = seqs
        train_idx, val_idx = split_indices(len(seqs), cfg.val_fraction, seed)
    if val_seqs.x[0].shape[-1] != seqs.x[0].shape[-1]:
        raise ValueError(f"validation sequences have {val_seqs.x[0].shape[-1]} columns, training {seqs.x[0].shape[-1]}")
    prep = Preprocessing.fit([seqs.x[i] for i in train_idx], cfg.features, seqs.feature_names, cfg.smooth,
                             cfg.feature_window)
    if not cfg.standardize:  # the features as they are (counts for a Poisson emission)
        prep.mean, prep.std = np.zeros_like(prep.mean), np.ones_like(prep.std)
    check_known(cfg, seqs)
    has_known = seqs.known is not None
    in_prep = input_scaling(seqs, val_seqs, train_idx)

    def model_rows(s: Sequences, i: int) -> np.ndarray:
        """Sequence i of ``s`` as the model reads it: features [, standardised inputs] [, known state]."""
        return append_known(append_inputs(prep.apply(s.x[i]), s.inputs and s.inputs[i], in_prep),
                            s.known and s.known[i], has_known)

    train_x = [model_rows(seqs, i) for i in train_idx]
    train_z = None if seqs.labels is None else [seqs.labels[i] for i in train_idx]
    if cfg.window is not None:
        stride = cfg.stride or cfg.window
        cut = [(i, s) for i, x in enumerate(train_x) for s in window_starts(len(x), cfg.window, stride)]
        train_x = [train_x[i][s: s + cfg.window] for i, s in cut]
        train_z = None if train_z is None else [train_z[i][s: s + cfg.window] for i, s in cut]
    longest = max(len(x) for x in train_x)
    if longest < 2:
        raise ValueError(f"data.path={cfg.path!r}: every training sequence has fewer than 2 time steps (longest: "
                         f"{longest}); training needs at least one of 2 or more to learn p(c_t | c_(t-1))")
    val_z = None if val_seqs.labels is None else [val_seqs.labels[i] for i in val_idx]
    val = pad_sequences([model_rows(val_seqs, i) for i in val_idx], val_z)
    label_names = val_seqs.label_names if len(val_seqs.label_names) > len(seqs.label_names) else seqs.label_names
    separated = f" ({seqs.delimiter!r}-separated)" if seqs.delimiter not in (None, ",") else ""  # sniffed: say which
    summary = (f"{cfg.path}{separated}: {len(seqs)} sequences ({sum(len(x) for x in seqs.x)} steps), {len(seqs.feature_names)} "
               f"columns {seqs.feature_names}{_missing_note(seqs)} -> features {cfg.features}{_window_note(prep)}; "
               f"{len(train_x)} training {'windows' if cfg.window else 'sequences'}, {len(val)} validation")
    if seqs.known is not None:
        n_known = sum(int((k >= 0).sum()) for k in seqs.known)
        summary += (f"; {n_known} steps with a known state ({100 * n_known / sum(len(k) for k in seqs.known):.1f}%, "
                    f"classes {seqs.known_names} = states 0..{len(seqs.known_names) - 1})")
    if in_prep is not None:
        summary += f"; inputs {seqs.input_names} (standardised with the training split's mean and std)"
    return FileData(pad_sequences(train_x, train_z), val, prep, label_names, [val_seqs.names[i] for i in val_idx],
                    summary, known_names=seqs.known_names if seqs.known is not None else None,
                    input_preprocessing=in_prep)


def input_scaling(seqs: Sequences, val_seqs: Sequences, train_idx: list[int]) -> Preprocessing | None:
    """The exogenous inputs' standardisation (mean and std of the training split's), None without inputs;
    ValueError when the validation sequences have inputs and the training ones not, or the other way."""
    if (seqs.inputs is None) != (val_seqs.inputs is None):
        raise ValueError(f"data.val_path: the validation file {'lacks' if val_seqs.inputs is None else 'has'} the inputs "
                         f"{seqs.input_names or val_seqs.input_names} the training file "
                         f"{'has' if val_seqs.inputs is None else 'lacks'}")
    if seqs.inputs is None:
        return None
    return Preprocessing.fit([seqs.inputs[i] for i in train_idx], ["raw"], seqs.input_names)


def check_known(cfg: FileDataConfig, seqs: Sequences) -> None:
    """ValueError when the known states have more classes than ``data.n_states`` (state k is class k)."""
    if seqs.known is not None and len(seqs.known_names) > cfg.n_states:
        raise ValueError(f"data.known_states_column={cfg.known_states_column!r} has {len(seqs.known_names)} classes "
                         f"{seqs.known_names}, more than data.n_states={cfg.n_states}; raise data.n_states")
    if seqs.known is not None and not any((k >= 0).any() for k in seqs.known):
        raise ValueError(f"data.known_states_column={cfg.known_states_column!r} is empty in every row; give some "
                         "known states or drop the setting")


def append_inputs(x: np.ndarray, inputs: np.ndarray | None, scaling: Preprocessing | None) -> np.ndarray:
    """Features (T, D) -> (T, D + U) with the raw ``inputs`` (T, U) standardised by ``scaling`` (the training
    inputs' :class:`~pyro_dssm.data.features.Preprocessing`) as the next columns (:mod:`pyro_dssm.model.inputs`);
    x itself without ``scaling`` (a model without inputs). ValueError when a model with inputs is given none."""
    if scaling is None:
        return x
    if inputs is None:
        raise ValueError(f"the model reads the inputs {scaling.feature_names} at every step; none were given")
    if len(inputs) != len(x):
        raise ValueError(f"inputs of {len(inputs)} steps for a sequence of {len(x)}; give one row per step")
    return np.concatenate([x, scaling.apply(np.asarray(inputs, dtype=np.float64))], -1)


def append_known(x: np.ndarray, codes: np.ndarray | None, has_known: bool) -> np.ndarray:
    """Model inputs (T, D) -> (T, D + 1) with the known-state ``codes`` (T,) (-1 or None: not known) as the last
    column, NaN where not known (:mod:`pyro_dssm.model.known`); x itself without ``has_known``."""
    if not has_known:
        return x
    codes = np.full(len(x), -1) if codes is None else codes
    return np.concatenate([x, np.where(codes < 0, np.nan, codes).astype(x.dtype)[:, None]], -1)


def _missing_note(seqs: Sequences) -> str:
    """`` (120 of 4000 cells missing, 3.0%: summed out)`` when the file has missing cells, else empty."""
    missing, total = sum(int(np.isnan(x).sum()) for x in seqs.x), sum(x.size for x in seqs.x)
    return f" ({missing} of {total} cells missing, {100 * missing / total:.1f}%: summed out)" if missing else ""


def _window_note(prep: Preprocessing) -> str:
    """`` (window 240 steps)`` when the features read a window, else empty."""
    return f" (window {prep.window} steps)" if reads_window(prep.features) else ""
