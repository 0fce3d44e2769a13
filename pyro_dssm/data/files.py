"""Your own sequences: CSV and NPZ readers, per-step features, standardisation, splits, windows.

The pipeline of :func:`load_file_data`::

    file -> ragged sequences (T_i, D0) [+ labels] -> features (raw | diff | absdiff) -> moving average
         -> split by whole sequences
         -> standardise with training-split statistics -> windows (training split) -> pad + mask

The standardisation statistics and feature list form a :class:`Preprocessing`,
stored in the checkpoint so that decoding new sequences applies exactly the
same transform. Labels are optional and may be strings; they are mapped to
integer codes (``-1`` = unlabelled step) and only ever used for scoring.
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pyro_dssm.config.checks import is_number
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.data.features import FEATURES, Preprocessing

SOURCES = ("csv", "npz")


@dataclass
class FileDataConfig:
    """How to read and prepare sequences from a file (Hydra groups ``data=csv`` and ``data=npz``)."""

    name: str = "csv"
    path: str | None = None
    id_column: str = "sequence"
    time_column: str | None = None
    feature_columns: list[str] | None = None
    label_column: str | None = None
    features: list[str] = field(default_factory=lambda: ["raw"])
    smooth: int = 1
    window: int | None = None
    stride: int | None = None
    val_fraction: float = 0.2
    val_path: str | None = None

    def __post_init__(self):
        self.features = list(self.features)
        checks = [
            (self.name in SOURCES, f"data.name must be one of {SOURCES}, got {self.name!r}"),
            (self.path is not None, f"data.path is required for data={self.name} (the file to read)"),
            (isinstance(self.path, str), f"data.path must be a file path, got {self.path!r}"),
            (self.val_path is None or isinstance(self.val_path, str),
             f"data.val_path must be null or a file path, got {self.val_path!r}"),
            (len(self.features) >= 1 and all(f in FEATURES for f in self.features) and
             len(set(self.features)) == len(self.features),
             f"data.features must be a non-empty list of distinct {FEATURES}, got {self.features}"),
            (isinstance(self.smooth, int) and self.smooth >= 1, f"data.smooth must be an integer >= 1, got {self.smooth!r}"),
            (self.window is None or (isinstance(self.window, int) and self.window >= 2),
             f"data.window must be null or an integer >= 2, got {self.window!r}"),
            (self.stride is None or (isinstance(self.stride, int) and self.stride >= 1),
             f"data.stride must be null or an integer >= 1, got {self.stride!r}"),
            (self.stride is None or self.window is not None, f"data.stride={self.stride} needs data.window"),
            (is_number(self.val_fraction) and 0.0 <= self.val_fraction < 1.0,
             f"data.val_fraction must be in [0, 1), got {self.val_fraction!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclass
class Sequences:
    """Ragged sequences as read from a file.

    Attributes:
        names: one id per sequence.
        x: (T_i, D) float64 arrays.
        times: (T_i,) arrays, the time column (numbers or strings) or 0..T_i-1.
        labels: (T_i,) int64 class codes (-1 = unlabelled step), or None when the file has no labels.
        label_names: class code -> original label, as text.
        feature_names: the D column names.
    """

    names: list[str]
    x: list[np.ndarray]
    times: list[np.ndarray]
    labels: list[np.ndarray] | None
    label_names: list[str]
    feature_names: list[str]

    def __len__(self) -> int:
        return len(self.x)


def _label_codes(raw: list[list[str]], known: list[str] | None) -> tuple[list[np.ndarray], list[str]]:
    """Map text labels (empty = unlabelled) to codes; new classes extend ``known`` in sorted order."""
    names = list(known or [])
    new = {v for seq in raw for v in seq if v != "" and v not in names}
    try:
        new = sorted(new, key=float)  # integer-like labels sort numerically: "2" before "10"
    except ValueError:
        new = sorted(new)
    names += new
    index = {name: k for k, name in enumerate(names)}
    return [np.array([index.get(v, -1) for v in seq], dtype=np.int64) for seq in raw], names


def check_input_file(path: str | Path, key: str) -> Path:
    """``path`` as a Path if it is a file with something in it; else ValueError naming ``key`` (e.g. ``data.path``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{key}={str(path)!r} is a directory; expected a .csv or .npz file")
    if not path.is_file():
        raise ValueError(f"{key}={str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{key}={str(path)!r} is an empty file (0 bytes)")
    return path


def _where(rows: list[dict], i: int, id_column: str, time_column: str | None) -> str:
    """Row ``i`` as a place in the data: its sequence and time step (the time column's value if there is one)."""
    name = rows[i][id_column]
    if time_column is not None:
        return f"sequence {name!r} at {time_column}={rows[i][time_column]!r}"
    return f"sequence {name!r} at time step {sum(1 for r in rows[:i] if r[id_column] == name)}"


def read_csv(
    path: str | Path, id_column: str, time_column: str | None = None, feature_columns: list[str] | None = None,
    label_column: str | None = None, label_names: list[str] | None = None, labels_optional: bool = False,
    key: str = "data.path",
) -> Sequences:
    """Read a long-format CSV: one row per time step, a header row, sequences told apart by ``id_column``.

    Rows are grouped by id (in order of first appearance) and, within a sequence,
    ordered by ``time_column`` (numeric if every value parses, else as text)
    or kept in file order. ``feature_columns`` None takes every other column
    whose values are all numbers (a column of numbers and text is an error).
    Empty label cells are unlabelled steps. ``key`` names the setting that gave
    ``path`` in error messages.
    """
    path = check_input_file(path, key)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{key}={str(path)!r} is not a CSV text file ({exc})") from None
    if not columns:
        raise ValueError(f"{key}={str(path)!r} has no header row; expected column names on the first line")
    if not rows:
        raise ValueError(f"{key}={str(path)!r} has a header but no data rows; expected one row per time step")
    if label_column is not None and label_column not in columns and labels_optional:
        label_column = None
    for what, name in (("id_column", id_column), ("time_column", time_column), ("label_column", label_column)):
        if name is not None and name not in columns:
            raise ValueError(f"data.{what}={name!r} is not a column of {path} (columns: {columns})")
    special = {id_column, time_column, label_column}
    if feature_columns is None:
        feature_columns = []
        for c in (c for c in columns if c not in special):
            numeric = [_is_number(r[c]) for r in rows]
            if all(numeric):
                feature_columns.append(c)
            elif any(numeric):  # numbers with a stray cell: a damaged feature, not a text column
                i = numeric.index(False)
                raise ValueError(f"{path} line {i + 2}, {_where(rows, i, id_column, time_column)}: column {c!r} "
                                 f"holds numbers and {rows[i][c]!r}; expected a number (or list the numeric "
                                 "columns in data.feature_columns)")
        if not feature_columns:
            raise ValueError(f"{path}: no numeric feature column besides {sorted(c for c in special if c)}")
    else:
        feature_columns = list(feature_columns)
        missing = [c for c in feature_columns if c not in columns]
        if missing:
            raise ValueError(f"{key}={str(path)!r} lacks the feature column(s) {missing} (data.feature_columns); "
                             f"its columns: {columns}")
    values = np.empty((len(rows), len(feature_columns)))
    for i, row in enumerate(rows):
        for j, c in enumerate(feature_columns):
            cell = row[c]
            if not _is_number(cell) or not math.isfinite(float(cell)):
                raise ValueError(f"{path} line {i + 2}, {_where(rows, i, id_column, time_column)}: column {c!r} "
                                 f"must hold a finite number, got {cell!r}")
            values[i, j] = float(cell)
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row[id_column], []).append(i)
    numeric_time = time_column is not None and all(_is_number(r[time_column]) for r in rows)
    names, xs, times, raw_labels = [], [], [], []
    for name, idx in groups.items():
        if time_column is not None:
            t = [float(rows[i][time_column]) if numeric_time else rows[i][time_column] for i in idx]
            order = sorted(range(len(idx)), key=t.__getitem__)
            idx, t = [idx[k] for k in order], [t[k] for k in order]
            dup = next((a for a, b in zip(t, t[1:]) if a == b), None)
            if dup is not None:
                raise ValueError(f"{path}: sequence {name!r} has two rows at {time_column}={dup!r}")
            t = np.array(t)
            if numeric_time and np.all(t == np.round(t)):
                t = t.astype(np.int64)
        else:
            t = np.arange(len(idx))
        names.append(name)
        xs.append(values[idx])
        times.append(t)
        if label_column is not None:
            raw_labels.append([rows[i][label_column].strip() for i in idx])
    labels, label_names = _label_codes(raw_labels, label_names) if label_column is not None else (None, [])
    return Sequences(names, xs, times, labels, label_names, feature_columns)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def read_npz(path: str | Path, label_names: list[str] | None = None, key: str = "data.path") -> Sequences:
    """Read sequences from a NumPy ``.npz`` file (no pickle).

    Two layouts: keys ``x_<name>`` (T_i, D) with optional ``z_<name>`` (T_i,),
    one per sequence and of any length; or one array ``x`` (N, T, D) with
    optional ``z`` (N, T) and ``lengths`` (N,) (a file with a single array is
    read as ``x``). Integer labels; negative values are unlabelled steps.
    ``key`` names the setting that gave ``path`` in error messages.
    """
    path = check_input_file(path, key)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"a single .npy array of shape {loaded.shape}, not a .npz archive")
        with loaded as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{key}={str(path)!r} is not a readable .npz file ({reason})") from None
    if not arrays:
        raise ValueError(f"{key}={str(path)!r} holds no arrays; expected x_<name> (T, D) arrays or x (N, T, D)")
    per_seq = [k[2:] for k in arrays if k.startswith("x_")]
    if per_seq:
        orphans = [k for k in arrays if k.startswith("z_") and k[2:] not in per_seq]
        if orphans:
            raise ValueError(f"{path}: labels {orphans} have no matching x_<name> array")
        xs = [arrays[f"x_{n}"] for n in per_seq]
        zs = [arrays.get(f"z_{n}") for n in per_seq]
        names = per_seq
    else:
        name = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
        if name is None:
            raise ValueError(f"{path}: expected keys x_<name> or an array 'x' (N, T, D), got {sorted(arrays)}")
        full = arrays[name]
        if full.ndim == 2:
            full = full[..., None]
        if full.ndim != 3:
            raise ValueError(f"{path}: array {name!r} must be (N, T, D), got shape {full.shape}")
        if full.shape[0] == 0 or full.shape[1] == 0:
            raise ValueError(f"{path}: array {name!r} of shape {full.shape} holds no time steps; expected N >= 1, T >= 1")
        lengths = arrays.get("lengths", np.full(full.shape[0], full.shape[1]))
        if (lengths.shape != full.shape[:1] or not np.issubdtype(lengths.dtype, np.integer)
                or not ((lengths >= 1) & (lengths <= full.shape[1])).all()):
            raise ValueError(f"{path}: 'lengths' must be N={full.shape[0]} integers in [1, T={full.shape[1]}], "
                             f"got {lengths.dtype} {lengths.shape} {lengths.ravel()[:5].tolist()}")
        z = arrays.get("z")
        if z is not None and z.shape != full.shape[:2]:
            raise ValueError(f"{path}: labels 'z' must be (N, T) = {full.shape[:2]}, got {z.shape}")
        xs = [full[i, : int(n)] for i, n in enumerate(lengths)]
        zs = [None if z is None else z[i, : int(n)] for i, n in enumerate(lengths)]
        names = [str(i) for i in range(full.shape[0])]
    for name, x, z in zip(names, xs, zs):
        if x.ndim not in (1, 2) or x.size == 0 or not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"{path}: sequence {name!r} must be a non-empty numeric (T, D) array, got shape "
                             f"{x.shape} of {x.dtype}")
        bad = np.argwhere(~np.isfinite(x.reshape(x.shape[0], -1)))
        if len(bad):
            t, j = bad[0]
            raise ValueError(f"{path}: sequence {name!r} holds {x.reshape(x.shape[0], -1)[t, j]} at time step {t} "
                             f"(column {j}); expected finite numbers")
        if z is not None and z.shape != x.shape[:1]:
            raise ValueError(f"{path}: labels of {name!r} must have shape ({x.shape[0]},), got {z.shape}")
    xs = [np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1) for x in xs]
    if len({x.shape[1] for x in xs}) > 1:
        raise ValueError(f"{path}: sequences differ in feature count: {sorted({x.shape[1] for x in xs})}")
    labels, names_out = None, []
    if any(z is not None for z in zs):
        raw = [[str(int(v)) if v >= 0 else "" for v in z] if z is not None else [""] * len(x) for x, z in zip(xs, zs)]
        labels, names_out = _label_codes(raw, label_names)
    features = [f"x{j}" for j in range(xs[0].shape[1])]
    return Sequences(names, xs, [np.arange(len(x)) for x in xs], labels, names_out, features)


def read_sequences(cfg: FileDataConfig, path: str | Path, label_names: list[str] | None = None,
                   labels_optional: bool = False, key: str = "data.path") -> Sequences:
    """Read ``path`` in the format of ``cfg.name`` with ``cfg``'s column settings."""
    if cfg.name == "csv":
        return read_csv(path, cfg.id_column, cfg.time_column, cfg.feature_columns, cfg.label_column,
                        label_names, labels_optional, key)
    return read_npz(path, label_names, key)


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

    Padding holds zeros in x and -1 in the states; states are None when no step is labelled.
    """
    lengths = torch.tensor([len(x) for x in xs], dtype=torch.long)
    x = torch.zeros(len(xs), int(lengths.max()), xs[0].shape[-1])
    states = torch.full(x.shape[:2], -1, dtype=torch.long)
    for i, seq in enumerate(xs):
        x[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.float32)
        if labels is not None:
            states[i, : len(seq)] = torch.as_tensor(labels[i])
    has_labels = labels is not None and bool((states >= 0).any())
    return SequenceData(x, lengths, states if has_labels else None)


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


def load_file_data(cfg: FileDataConfig, seed: int) -> FileData:
    """Read, split, standardise, window and pad as ``cfg`` says (see the module docstring)."""
    seqs = read_sequences(cfg, cfg.path)
    if cfg.val_path is not None:
        val_seqs = read_sequences(cfg, cfg.val_path, label_names=seqs.label_names, labels_optional=True,
                                  key="data.val_path")
        if val_seqs.feature_names != seqs.feature_names and cfg.name == "csv":
            raise ValueError(f"data.val_path columns {val_seqs.feature_names} differ from {seqs.feature_names}")
        train_idx, val_idx = list(range(len(seqs))), list(range(len(val_seqs)))
    else:
        val_seqs = seqs
        train_idx, val_idx = split_indices(len(seqs), cfg.val_fraction, seed)
    if val_seqs.x[0].shape[-1] != seqs.x[0].shape[-1]:
        raise ValueError(f"validation sequences have {val_seqs.x[0].shape[-1]} columns, training {seqs.x[0].shape[-1]}")
    prep = Preprocessing.fit([seqs.x[i] for i in train_idx], cfg.features, seqs.feature_names, cfg.smooth)
    train_x = [prep.apply(seqs.x[i]) for i in train_idx]
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
    val = pad_sequences([prep.apply(val_seqs.x[i]) for i in val_idx], val_z)
    label_names = val_seqs.label_names if len(val_seqs.label_names) > len(seqs.label_names) else seqs.label_names
    summary = (f"{cfg.path}: {len(seqs)} sequences ({sum(len(x) for x in seqs.x)} steps), {len(seqs.feature_names)} "
               f"columns {seqs.feature_names} -> features {cfg.features}; {len(train_x)} training "
               f"{'windows' if cfg.window else 'sequences'}, {len(val)} validation")
    return FileData(pad_sequences(train_x, train_z), val, prep, label_names, [val_seqs.names[i] for i in val_idx],
                    summary)
