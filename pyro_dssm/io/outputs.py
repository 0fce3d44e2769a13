"""Where results go: writable-directory checks and atomic file writes.

Every output (checkpoint, metrics, decoded states, plot, run config) is written
to a temporary file beside its target, flushed to disk and renamed over the
target (``os.replace`` is atomic on POSIX). A crash or ``kill -9`` at any moment
leaves the previous file or the new one, never part of one; the temporary file
a killed write leaves behind is named ``.<name>.*.tmp`` and is never read.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs):
    """Open a temporary file beside ``path`` for writing; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write` calls left in ``directory``."""
    directory = Path(directory)
    stale = sorted(directory.glob(f".*{TMP_SUFFIX}")) if directory.is_dir() else []
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


def check_writable_dir(path: str | os.PathLike, key: str) -> Path:
    """``path`` as an absolute Path if it is, or can be created as, a writable directory; else ValueError naming ``key``."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists():  # the nearest ancestor that exists decides
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is under {str(existing)!r}, which is a file"
        raise ValueError(f"{key}={str(path)!r} {where}; expected a writable directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{key}={str(path)!r} is not writable (no write permission on {str(existing)!r})")
    if existing != path:
        _probe_mkdir(existing, path, key)
    return path


def _probe_mkdir(parent: Path, path: Path, key: str) -> None:
    """Create and remove an empty directory in ``parent``: ``os.access`` says yes to root on /proc or /sys,
    where only creating something tells. ValueError naming ``key`` if it cannot be created."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".probe.", dir=parent))
    except OSError as exc:
        raise ValueError(f"{key}={str(path)!r} cannot be created ({exc.strerror} in {str(parent)!r}); "
                         "expected a writable directory") from None


def check_run_dir(path: str | os.PathLike, resume: bool, overwrite: object) -> Path:
    """:func:`check_writable_dir` for a training run, which must not replace another run's results.

    A directory holding ``checkpoints/`` or ``metrics.json`` is a finished or
    interrupted run: training into it is a ValueError unless it resumes a run
    (``resume``) or ``overwrite`` is true.
    """
    if not isinstance(overwrite, bool):
        raise ValueError(f"overwrite must be true or false, got {overwrite!r}")
    path = check_writable_dir(path, "run directory")
    results = [name for name in ("checkpoints", "metrics.json") if (path / name).exists()]
    if results and not resume and not overwrite:
        raise ValueError(f"run directory {str(path)!r} already holds a run ({' and '.join(results)}); continue it "
                         f"with trainer.resume={path}, or replace it with overwrite=true (or choose another "
                         "hydra.run.dir)")
    return path


class RunDirCheck(Callback):
    """Hydra callback: stop with one line and exit code 2 when the run directory cannot be written.

    Runs before Hydra creates the directory, which would otherwise fail with a
    traceback (``configs/config.yaml`` registers it under ``hydra.callbacks``).
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self._check(config, "hydra.sweep.dir")

    @staticmethod
    def _check(config: DictConfig, key: str) -> None:
        HydraConfig.instance().set_config(config)  # resolves ${hydra:...} in the directory name
        try:
            check_writable_dir(str(OmegaConf.select(config, key)), key)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
