"""The Python API: fit a DSSM on arrays in memory, or load one the CLI trained.

    import pyro_dssm
    model = pyro_dssm.fit([x1, x2, x3], n_states=3, overrides=["trainer.n_epochs=5"])  # x_i: (T_i, D)
    states = model.predict(x1)                  # (T_1,) Viterbi path
    probs = model.predict_proba([x1, x2])       # [(T_1, K), (T_2, K)] posterior marginals
    model.save("model.pt")                      # python -m pyro_dssm.decode checkpoint=model.pt ... reads it
    same = pyro_dssm.load("runs/mine")          # a CLI run directory, or a .pt file

The estimator :class:`pyro_dssm.DSSM` (:mod:`pyro_dssm.estimator`) is the same with keyword settings in
scikit-learn's habits; :func:`fit` takes the command line's override strings instead.

:func:`fit` is the CLI with the file replaced by arrays: the real Hydra configs
are composed with ``data=npz`` and the given ``overrides`` (the strings of the
command line), and :func:`pyro_dssm.train.train_model` runs on them with the arrays
standing in for the file, so ``data.features``, ``data.smooth``,
``data.window``, ``data.val_fraction`` (the validation split), the
standardisation, labels and every ``trainer.*`` / ``model.*`` setting behave
exactly as for ``python -m pyro_dssm.train data=npz data.path=FILE``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pyro_dssm.config.location import CONFIG_DIR
from pyro_dssm.config.overrides import check_command_line
from pyro_dssm.data.readers import Sequences
from pyro_dssm.data import readers
from pyro_dssm.data.arrays import check_sequences, input_arrays
from pyro_dssm.fitted import FittedDSSM, load_model
from pyro_dssm.model.dssm import DSSM
from pyro_dssm.train import train_model

IN_MEMORY = "<arrays>"  # data.path of a fit on arrays: names them in messages and in the run's config
RESERVED = ("data", "data.name", "data.path")  # set by fit itself


def compose_config(overrides: list[str]) -> DictConfig:
    """The root config composed from the YAML files with ``overrides`` (Hydra's syntax, as on the CLI).

    A key the schema does not know, a value of the wrong type or a malformed override is a
    ValueError of one line naming it, the CLI's message (:func:`pyro_dssm.config.overrides.check_command_line`).
    """
    check_command_line(CONFIG_DIR, "config", list(overrides))
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def label_codes(labels, xs: list[np.ndarray]) -> tuple[list[np.ndarray] | None, list[str]]:
    """(T_i,) integer labels (negative = unlabelled step) -> class codes 0..C-1 and the class names.

    Classes are the distinct non-negative values in increasing order, named by their text,
    as :func:`pyro_dssm.data.npz.read_npz` maps the labels of a file.
    """
    if labels is None:
        return None, []
    if not isinstance(labels, (list, tuple)) or len(labels) != len(xs):
        raise ValueError(f"labels must be a list of {len(xs)} (T_i,) integer arrays, one per sequence, got "
                         f"{type(labels).__name__} of length {len(labels) if hasattr(labels, '__len__') else '?'}")
    zs = []
    for i, (z, x) in enumerate(zip(labels, xs)):
        z = np.asarray(z)
        if z.shape != (len(x),) or not np.issubdtype(z.dtype, np.integer):
            raise ValueError(f"labels[{i}] must be ({len(x)},) integers (the length of sequences[{i}]), "
                             f"got shape {z.shape} of {z.dtype}")
        zs.append(z.astype(np.int64))
    classes = np.unique(np.concatenate(zs))
    classes = classes[classes >= 0]
    codes = [np.where(z >= 0, np.searchsorted(classes, z), -1) for z in zs]
    return codes, [str(c) for c in classes]


def in_memory_sequences(xs: list[np.ndarray], codes: list[np.ndarray] | None = None,
                        label_names: list[str] | None = None, known: list[np.ndarray] | None = None,
                        known_names: list[str] | None = None, inputs: list[np.ndarray] | None = None) -> Sequences:
    """(T_i, D) arrays as the sequences of an npz file: named ``0``, ``1``, ..., columns ``x0``, ``x1``, ...,
    times 0..T_i-1; ``codes`` / ``label_names`` as :func:`label_codes` gives them, ``known`` / ``known_names``
    as :func:`known_codes` does; ``inputs`` (T_i, U) exogenous inputs (:func:`input_arrays`), named ``u0``, ..."""
    return Sequences([str(i) for i in range(len(xs))], xs, [np.arange(len(x)) for x in xs], codes,
                     list(label_names or []), [f"x{j}" for j in range(xs[0].shape[1])], known=known,
                     known_names=known_names, inputs=inputs,
                     input_names=None if inputs is None else [f"u{j}" for j in range(inputs[0].shape[1])])


def known_codes(known_states, xs: list[np.ndarray], names: list[str] | None = None,
                key: str = "known_states") -> tuple[list[np.ndarray], list[str]]:
    """Known states given as one (T_i,) array-like per sequence of ``xs`` (any labels; None, NaN or "" = not known)
    -> codes (T_i,) int64 (-1: not known) and the class names (their text, sorted; ``names`` first when given,
    the training run's classes at decoding: a class not among them is a ValueError naming it)."""
    if not isinstance(known_states, (list, tuple)) or len(known_states) != len(xs):
        given = f"{type(known_states).__name__} of length {len(known_states)}" \
            if hasattr(known_states, "__len__") else type(known_states).__name__
        raise ValueError(f"{key} must give one (T_i,) array per sequence ({len(xs)}), got {given}")
    raw = []
    for i, (k, x) in enumerate(zip(known_states, xs)):
        k = np.asarray(k, dtype=object).reshape(-1)
        if len(k) != len(x):
            raise ValueError(f"{key}[{i}] has {len(k)} values, sequence {i} has {len(x)} steps")
        raw.append(["" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in k])
    codes, classes = readers.label_codes(raw, names)
    if names is not None and len(classes) > len(names):
        raise ValueError(f"{key} holds {classes[len(names)]!r}, not a class of the training run {names}")
    return codes, classes


def trained_model(run_dir: Path, cfg: DictConfig, metrics: dict) -> tuple[DSSM, dict]:
    """The model :func:`pyro_dssm.train.train` ended with in ``run_dir``, and its checkpoint's payload:
    ``best.pt`` when it restored the best epoch (``trainer.keep_best``, all epochs run or stopped early), else
    ``last.pt``."""
    finished = cfg.trainer.keep_best and (metrics["epochs"] == cfg.trainer.n_epochs
                                          or metrics.get("early_stop_epoch") is not None)
    return load_model(Path(run_dir) / "checkpoints" / ("best.pt" if finished else "last.pt"))


def fit(sequences, n_states: int = 3, labels=None, overrides: list[str] | tuple[str, ...] = (),
        run_dir: str | Path | None = None, inputs=None) -> FittedDSSM:
    """Train a DSSM on ragged sequences in memory, as ``python -m pyro_dssm.train data=npz`` would on a file.

    Args:
        sequences: list of (T_i, D) arrays (one array: one sequence), finite real numbers.
        n_states: K, the number of states to look for (``data.n_states``).
        labels: optional list of (T_i,) integer arrays, true states for scores only (negative = unlabelled).
        overrides: Hydra override strings, e.g. ``["trainer.n_epochs=5", "data.val_fraction=0"]``;
            ``data=``, ``data.name`` and ``data.path`` are set by this function.
        run_dir: where TensorBoard events, checkpoints and ``metrics.json`` go; None: nowhere, the run
            stays in memory (``run_dir`` of the result is then None).
        inputs: optional exogenous inputs u_t, in the form of ``sequences`` ((T_i, U) arrays, finite): conditioned
            on, never modelled (:mod:`pyro_dssm.model.inputs`); read by ``model.transition=inputs`` (or
            ``recurrent``) and the guide. Standardised with their training mean and std.
    Returns:
        The trained model: the checkpoint ``train`` ends with (best validation ELBO with
        ``trainer.keep_best``), its preprocessing, and ``metrics`` (those of ``metrics.json``).
    Raises:
        ValueError naming a bad argument, override, setting or array.
    """
    xs, _ = check_sequences(sequences, "sequences")
    codes, label_names = label_codes(labels, xs)
    us = input_arrays(inputs, xs)
    if isinstance(n_states, bool) or not isinstance(n_states, (int, np.integer)) or n_states < 2:
        raise ValueError(f"n_states must be an integer >= 2, got {n_states!r}")
    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ValueError(f"overrides must be a list of strings such as 'trainer.n_epochs=5', got {overrides!r}")
    taken = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in RESERVED]
    if taken:
        raise ValueError(f"overrides {taken}: fit sets {RESERVED} itself (the arrays go through data=npz)")
    overrides = ["data=npz", f"data.path='{IN_MEMORY}'", f"data.n_states={int(n_states)}", *overrides]
    cfg = compose_config(overrides)
    run = train_model(cfg, run_dir, overrides, sequences=in_memory_sequences(xs, codes, label_names, inputs=us))
    return FittedDSSM(run.model, run.checkpoint, run.metrics, None if run_dir is None else Path(run_dir))


def load(path: str | Path) -> FittedDSSM:
    """A trained model from a run directory (its ``checkpoints/best.pt``, else ``last.pt``) or a ``.pt`` file
    written by the CLI or :meth:`FittedDSSM.save` (read with ``torch.load(weights_only=True)``)."""
    return FittedDSSM.load(path)
