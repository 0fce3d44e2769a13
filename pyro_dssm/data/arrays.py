"""Your arrays in memory, validated: sequences of observations and of exogenous inputs, as the Python API takes them.

:func:`check_sequences` turns one (T, D) array or a list of them into float64 arrays, or a ``ValueError`` of
one line naming the bad element; :func:`input_arrays` does the same for the inputs u_t that go with them
(:mod:`pyro_dssm.model.inputs`).
"""

from __future__ import annotations

import numpy as np
import torch


def input_arrays(inputs, xs: list[np.ndarray], key: str = "inputs", names: list[str] | None = None
                 ) -> list[np.ndarray] | None:
    """Exogenous inputs in the form of ``xs`` (one (T, U) array or a list of (T_i, U)) -> (T_i, U) float64 arrays,
    None for None; ValueError naming the first that is missing a value, has another length, or another U than
    the input ``names`` a model was trained with."""
    if inputs is None:
        return None
    us, _ = check_sequences(inputs, key, names)
    if len(us) != len(xs):
        raise ValueError(f"{key} holds {len(us)} sequences, the data {len(xs)}; give one (T_i, U) array per sequence")
    for i, (u, x) in enumerate(zip(us, xs)):
        if len(u) != len(x):
            raise ValueError(f"{key}[{i}] has {len(u)} rows, sequence {i} has {len(x)} steps; give one row per step")
        if np.isnan(u).any():
            raise ValueError(f"{key}[{i}] has a missing value (NaN) at step {int(np.isnan(u).any(1).argmax())}: an "
                             "input is conditioned on, not modelled, so it cannot be summed out; fill it in")
    return us


def check_sequences(x, name: str = "x", columns: list[str] | None = None) -> tuple[list[np.ndarray], bool]:
    """One (T, D) array or a non-empty list of them -> (list of float64 arrays, whether one array was given).

    NaN cells are missing values (the model sums them out). ValueError naming the bad element: not 2-D, no
    time step, not real numbers, inf, every cell missing, D differing between sequences or from the expected
    ``columns`` (their names).
    """
    single = not isinstance(x, (list, tuple))
    seqs = [x] if single else list(x)
    if not seqs:
        raise ValueError(f"{name} is an empty list; expected (T, D) arrays, one per sequence")
    out = []
    for i, seq in enumerate(seqs):
        where = name if single else f"{name}[{i}]"
        arr = np.asarray(seq.detach().cpu() if isinstance(seq, torch.Tensor) else seq)
        if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
            raise ValueError(f"{where} must be a (T, D) array with T >= 1 and D >= 1, got shape {arr.shape}"
                             + (" (give a list of (T_i, D) arrays for several sequences)" if arr.ndim == 3 else ""))
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise ValueError(f"{where} must hold real numbers, got dtype {arr.dtype}")
        bad = np.argwhere(np.isinf(arr))
        if len(bad):
            t, j = bad[0]
            raise ValueError(f"{where} holds {arr[t, j]} at time step {t} (column {j}); expected finite numbers "
                             "(NaN for a missing value)")
        if np.isnan(arr).all():
            raise ValueError(f"{where} has no observed value (all {arr.size} cells NaN); a sequence needs at least one")
        if columns is not None and arr.shape[1] != len(columns):
            raise ValueError(f"{where} has D={arr.shape[1]} columns; the model expects D={len(columns)} ({columns})")
        if out and arr.shape[1] != out[0].shape[1]:
            raise ValueError(f"{where} has D={arr.shape[1]} columns, the first sequence D={out[0].shape[1]}")
        out.append(arr.astype(np.float64))
    return out, single
