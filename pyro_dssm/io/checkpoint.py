"""Checkpoints: plain state dicts and primitive config, loaded with ``torch.load(weights_only=True)`` only.

Writes are atomic (:func:`pyro_dssm.io.outputs.atomic_write`), so a crash or
``kill -9`` mid-write leaves the previous checkpoint intact. Loading never
unpickles code: a file holding anything but tensors and plain data is refused.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from pyro_dssm.io.outputs import atomic_write

# 2: a checkpoint may stop mid-epoch ("progress"); skipped-step counts. 3: the learning-rate scheduler's state
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
REQUIRED_KEYS = ("model", "model_config", "optimizer", "epoch", "step", "n_epochs", "rng", "best_val_elbo", "history",
                 "train_seconds")


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (tensors, state dicts, primitives) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save({"format_version": FORMAT_VERSION, **payload}, f)
    return path


def _load_error(path: Path, exc: Exception) -> str:
    """What went wrong, in one line, for an exception of ``torch.load(path, weights_only=True)``."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" (it references {found.group(1)})" if found else ""
        return (f"checkpoint {str(path)!r} holds Python objects other than tensors and plain data{what}; "
                "refused, since loading them could run code")
    if isinstance(exc, RuntimeError) and "failed reading zip archive" in text:
        return f"checkpoint {str(path)!r} is truncated or damaged (not a complete torch zip archive)"
    return f"checkpoint {str(path)!r} is not a torch checkpoint file ({type(exc).__name__}: {text.strip()[:200]})"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles code.

    Raises ValueError naming the file when it is missing, empty, truncated,
    not a checkpoint, unsafe to unpickle, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ValueError(f"checkpoint {str(path)!r} {what}; expected a .pt file written by pyro_dssm")
    if path.stat().st_size == 0:
        raise ValueError(f"checkpoint {str(path)!r} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the error below says it all
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        raise ValueError(_load_error(path, exc).replace("\n", " ")) from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ValueError(f"checkpoint {str(path)!r} is not a pyro_dssm checkpoint (no format_version)")
    if payload["format_version"] not in READABLE_VERSIONS:
        raise ValueError(f"checkpoint {str(path)!r} has format version {payload['format_version']!r}, "
                         f"this version of pyro_dssm reads {READABLE_VERSIONS}")
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} lacks {missing}: not a complete pyro_dssm checkpoint")
    if not isinstance(payload["model_config"], dict) or not isinstance(payload["model"], dict):
        raise ValueError(f"checkpoint {str(path)!r}: model and model_config must be dicts")
    return payload


CHECKPOINT_CHOICES = ("best", "last")


def resolve_checkpoint(path_or_run_dir: str | os.PathLike, prefer: str, key: str = "checkpoint") -> Path:
    """A checkpoint file as given, or a run directory -> the checkpoint of that run that ``prefer`` names.

    ``prefer="best"`` (decoding, the Python API): ``checkpoints/best.pt``, the
    weights kept at the best validation ELBO, else ``last.pt``. ``prefer="last"``
    (``trainer.resume``): ``checkpoints/last.pt`` only, where training stopped;
    ``best.pt`` is never taken in its place, since resuming from it would
    silently rewind the run. ``key`` names the setting in the error message.
    """
    if prefer not in CHECKPOINT_CHOICES:
        raise ValueError(f"prefer must be one of {CHECKPOINT_CHOICES}, got {prefer!r}")
    path = Path(path_or_run_dir)
    if not path.is_dir():
        if not path.is_file():
            raise ValueError(f"{key}={str(path)!r} does not exist; expected a .pt file or a run directory")
        return path
    names = ("best.pt", "last.pt") if prefer == "best" else ("last.pt",)
    for name in names:
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise ValueError(f"{key}={str(path)!r} is a directory without {' or '.join(f'checkpoints/{n}' for n in names)}")


def rng_state(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random state training depends on, as tensors: ``generator`` (minibatch order) and torch's
    global generator (Gumbel noise), plus CUDA's when in use."""
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict[str, torch.Tensor], generator: torch.Generator) -> None:
    """Undo :func:`rng_state`: continue both random streams exactly where they were saved."""
    generator.set_state(state["generator"].cpu())
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
