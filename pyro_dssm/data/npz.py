"""Reading your own sequences from a NumPy ``.npz`` archive (no pickle) into :class:`~pyro_dssm.data.readers.Sequences`.

Two layouts (:func:`read_npz`): one ``x_<name>`` array per sequence (any lengths), or one (N, T, D)
array ``x`` with ``lengths``; labels ``z``, exogenous inputs ``u`` beside them. Every malformed input is
a ``ValueError`` naming the file and sequence.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from pyro_dssm.data.readers import Sequences, check_input_file, check_missing, label_codes


def read_npz(path: str | Path, label_names: list[str] | None = None, key: str = "data.path",
             missing: str = "marginalise") -> Sequences:
    """Read sequences from a NumPy ``.npz`` file (no pickle).

    Two layouts: keys ``x_<name>`` (T_i, D) with optional ``z_<name>`` (T_i,),
    one per sequence and of any length; or one array ``x`` (N, T, D) with
    optional ``z`` (N, T) and ``lengths`` (N,) (a file with a single array is
    read as ``x``). Integer labels; negative values are unlabelled steps. NaN cells of x are missing values
    (refused with ``missing="error"``). Exogenous inputs (:mod:`pyro_dssm.model.inputs`): ``u_<name>`` (T_i, U)
    beside each ``x_<name>``, or ``u`` (N, T, U) beside ``x``; finite, named ``u0``, ``u1``, ...
    ``key`` names the setting that gave ``path`` in error messages.
    """
    path = check_input_file(path, key)
    arrays = _load_npz(path, key)
    names, xs, zs = _npz_sequences(path, arrays)
    _check_npz_sequences(path, names, xs, zs, missing)
    xs = [np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1) for x in xs]
    check_missing(names, xs, str(path))
    if len({x.shape[1] for x in xs}) > 1:
        raise ValueError(f"{path}: sequences differ in feature count: {sorted({x.shape[1] for x in xs})}")
    labels, names_out = None, []
    if any(z is not None for z in zs):
        raw = [[str(int(v)) if v >= 0 else "" for v in z] if z is not None else [""] * len(x) for x, z in zip(xs, zs)]
        labels, names_out = label_codes(raw, label_names)
    features = [f"x{j}" for j in range(xs[0].shape[1])]
    inputs = _npz_inputs(path, arrays, names, xs)
    return Sequences(names, xs, [np.arange(len(x)) for x in xs], labels, names_out, features, inputs=inputs,
                     input_names=None if inputs is None else [f"u{j}" for j in range(inputs[0].shape[1])])


def _npz_inputs(path: Path, arrays: dict[str, np.ndarray], names: list[str],
                xs: list[np.ndarray]) -> list[np.ndarray] | None:
    """The inputs of :func:`read_npz`'s sequences ``names`` / ``xs``: (T_i, U) float64 arrays, or None when the file
    has none; ValueError naming an array that is missing, of another length or U, or not finite."""
    if any(k.startswith("u_") for k in arrays):
        absent = [n for n in names if f"u_{n}" not in arrays]
        orphans = [k for k in arrays if k.startswith("u_") and k[2:] not in names]
        if absent or orphans:
            raise ValueError(f"{path}: inputs u_<name> must come with every x_<name>: "
                             + (f"no u_{absent[0]}" if absent else f"{orphans[0]} has no x_{orphans[0][2:]}"))
        raw = {n: arrays[f"u_{n}"] for n in names}
    elif "u" in arrays:
        u = arrays["u"]
        if u.ndim not in (2, 3) or u.shape[0] != len(xs):
            raise ValueError(f"{path}: inputs 'u' must be (N, T, U) with N={len(xs)}, got shape {u.shape}")
        raw = {n: u[i, :len(x)] for i, (n, x) in enumerate(zip(names, xs))}
    else:
        return None
    out = []
    for (name, u), x in zip(raw.items(), xs):
        if not np.issubdtype(u.dtype, np.number) or u.ndim not in (1, 2) or len(u) != len(x):
            raise ValueError(f"{path}: inputs of sequence {name!r} must be {len(x)} numeric rows (T_i, U), got "
                             f"{u.dtype} {u.shape}")
        u = np.asarray(u, dtype=np.float64).reshape(len(u), -1)
        if not np.isfinite(u).all():
            raise ValueError(f"{path}: inputs of sequence {name!r} hold a value that is not a finite number (an input "
                             "is conditioned on, not modelled: a missing one cannot be summed out)")
        out.append(u)
    if len({u.shape[1] for u in out}) > 1:
        raise ValueError(f"{path}: sequences differ in input count: {sorted({u.shape[1] for u in out})}")
    return out




def _load_npz(path: Path, key: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` archive (no pickle); ValueError naming the file when it is unreadable or empty."""
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
    return arrays


def _npz_sequences(path: Path, arrays: dict[str, np.ndarray]):
    """The two layouts of :func:`read_npz` -> sequence names, (T_i, ...) arrays and (T_i,) labels or None."""
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
    return names, xs, zs


def _check_npz_sequences(path: Path, names: list[str], xs: list[np.ndarray], zs: list,
                         missing: str = "marginalise") -> None:
    """Each sequence a non-empty numeric array of finite numbers (or NaN, missing, unless ``missing="error"``),
    its labels as long as it."""
    for name, x, z in zip(names, xs, zs):
        if x.ndim not in (1, 2) or x.size == 0 or not np.issubdtype(x.dtype, np.number):
            raise ValueError(f"{path}: sequence {name!r} must be a non-empty numeric (T, D) array, got shape "
                             f"{x.shape} of {x.dtype}")
        flat = x.reshape(x.shape[0], -1)
        bad = np.argwhere(np.isinf(flat) if missing == "marginalise" else ~np.isfinite(flat))
        if len(bad):
            t, j = bad[0]
            hint = " or NaN for a missing value" if missing == "marginalise" else " (data.missing=marginalise takes NaN)"
            raise ValueError(f"{path}: sequence {name!r} holds {flat[t, j]} at time step {t} "
                             f"(column {j}); expected finite numbers{hint}")
        if z is not None and z.shape != x.shape[:1]:
            raise ValueError(f"{path}: labels of {name!r} must have shape ({x.shape[0]},), got {z.shape}")
