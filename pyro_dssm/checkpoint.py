"""Checkpoints: plain state dicts and primitive config, loadable with ``weights_only=True``.

Writes are atomic (temporary file in the same directory, fsync, rename), so a
crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Atomically write ``payload`` (tensors, state dicts, primitives) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **payload}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; never unpickles code.

    Raises ValueError naming the file when it is missing, not a checkpoint,
    truncated, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {str(path)!r} does not exist or is not a file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"checkpoint {str(path)!r} cannot be loaded safely: {first}") from exc
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise ValueError(f"checkpoint {str(path)!r} is not a pyro_dssm checkpoint")
    if payload["format_version"] != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {payload['format_version']}, expected {FORMAT_VERSION}"
        )
    return payload


def resolve_checkpoint(path_or_run_dir: str | os.PathLike) -> Path:
    """A checkpoint file, or a run directory -> its ``checkpoints/last.pt``."""
    path = Path(path_or_run_dir)
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise ValueError(f"trainer.resume={str(path_or_run_dir)!r}: no checkpoint at {str(path)!r}")
    return path


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
