"""The one place metrics leave the process: TensorBoard, ``metrics.json`` and the progress line."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from pyro_dssm.io.outputs import atomic_write

log = logging.getLogger(__name__)


def finite_or_none(value):
    """``value`` with every non-finite float (NaN, +-inf), also inside lists and dicts, replaced by None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def strict_json(metrics: dict) -> str:
    """``metrics`` as standard JSON (RFC 8259 has no NaN or Infinity): a non-finite number becomes ``null``."""
    return json.dumps(finite_or_none(metrics), indent=2, sort_keys=True, allow_nan=False)


class Tracker:
    """Writes scalars to TensorBoard under ``run_dir/tb`` and the final metrics to ``run_dir/metrics.json``.

    ``run_dir`` None, or ``enabled`` false: nothing is written (the progress line is still logged).
    """

    def __init__(self, run_dir: str | Path | None, enabled: bool = True):
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.enabled = enabled and run_dir is not None
        self.writer = SummaryWriter(str(self.run_dir / "tb")) if self.enabled else None

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self.writer is None:
            return
        for key, value in values.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(f"{prefix}{key}", value, step)

    def figure(self, tag: str, fig, step: int) -> None:
        if self.writer is not None:
            self.writer.add_figure(tag, fig, step)

    def epoch_line(self, epoch: int, n_epochs: int, values: dict[str, float]) -> None:
        """One progress line per epoch."""
        parts = [f"epoch {epoch:3d}/{n_epochs}"]
        for key in ("loss", "tau", "val_accuracy", "viterbi_accuracy", "val_elbo_per_step", "seconds"):
            if key in values:
                parts.append(f"{key}={values[key]:.4g}")
        log.info("  ".join(parts))

    def finish(self, hparams: dict, metrics: dict[str, float]) -> None:
        """Write hparams with the final metrics, flush, and write metrics.json."""
        if self.writer is not None:
            numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in numeric.items()}, run_name="hparams")
            self.writer.flush()
            self.writer.close()
            self.writer = None
        if self.enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(self.run_dir / "metrics.json", "w") as f:
                f.write(strict_json(metrics))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None
