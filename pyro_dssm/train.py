"""Entry point: ``python -m pyro_dssm.train [overrides]``.

:func:`train` is a plain function of a composed config and returns the final
metrics; :func:`main` is the thin Hydra wrapper around it. A run that cannot
finish ends with one line on stderr and an exit code (``HYDRA_FULL_ERROR=1``
shows the traceback instead):

- 2: a bad setting, data file or checkpoint (``ValueError`` / ``TypeError``);
  checked before anything is written, so an existing run directory is left as it was;
- 1: training diverged (too many non-finite steps in a row), or the system
  refused a write (disk full, ...);
- 130 (SIGINT) / 143 (SIGTERM): a checkpoint was written; the line gives the
  command that resumes the run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shlex
import signal
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pyro_dssm.io.checkpoint import load_checkpoint, resolve_checkpoint
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.data.files import SOURCES, FileDataConfig, load_file_data
from pyro_dssm.inference.distributed import DataParallel, init_data_parallel, shutdown
from pyro_dssm.evaluation.evaluate import oracle_metrics
from pyro_dssm.inference.faults import Interrupted, StopOnSignal, TrainingDiverged
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.io.outputs import atomic_write, check_writable_dir
from pyro_dssm.data.streaming import NpyDataConfig, load_npy_data
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.inference.trainer import TrainerConfig, check_resume, fit, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(data_cfg: DictConfig, seed: int):
    """Build the dataset named by ``data.name``: ``synthetic``, sequences from a ``csv`` / ``npz`` file, or
    an ``npy`` file streamed from disk."""
    def own_fields(cls):  # the settings of data_cfg that dataclass cls has (the group also holds others)
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k in fields})

    if data_cfg.name in SOURCES:
        return load_file_data(own_fields(FileDataConfig), seed)
    if data_cfg.name == "npy":  # streamed from disk
        return load_npy_data(own_fields(NpyDataConfig))
    if data_cfg.name != "synthetic":
        raise ValueError(f"data.name must be one of {('synthetic', *SOURCES, 'npy')}, got {data_cfg.name!r}")
    fields = ("n_states", "obs_dim", "seq_len", "n_train", "n_val", "transition_bias", "noise_std")
    return make_synthetic(**{k: data_cfg[k] for k in fields}, seed=seed)


def settings(cls, values: dict, group: str):
    """``cls(**values)`` for a settings dataclass; a key it does not have is a ValueError naming it."""
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ValueError(f"{group}.{unknown[0]} is not a {group} setting (expected one of {known})")
    return cls(**values)


def train(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict[str, float]:
    """Train one DSSM as configured; write TensorBoard events, checkpoints and metrics.json to ``run_dir``.

    Everything is checked first (settings, data, the checkpoint to resume,
    that ``run_dir`` can be written): a bad input raises ``ValueError`` naming
    it and leaves ``run_dir`` as it was. Then the resolved config goes to
    ``run_dir/.hydra/config.yaml`` (and ``overrides``, the command line, to
    ``overrides.yaml``). The first SIGINT or SIGTERM during training ends it
    after the current step with a checkpoint (:class:`~pyro_dssm.inference.faults.Interrupted`,
    its ``signum`` set). Returns the metrics written to ``metrics.json``.

    With ``trainer.distributed`` (under torchrun) every process calls this;
    rank 0 alone writes to ``run_dir`` (:mod:`pyro_dssm.inference.distributed`).
    """
    trainer_cfg = settings(TrainerConfig, OmegaConf.to_container(cfg.trainer, resolve=True), "trainer")
    device = resolve_device(trainer_cfg.device)
    group = init_data_parallel(device) if trainer_cfg.distributed else None
    try:
        return _train(cfg, Path(run_dir), overrides, trainer_cfg, device if group is None else group.device, group)
    finally:
        if group is not None:
            shutdown()


def _train(cfg: DictConfig, run_dir: Path, overrides: list[str] | None, trainer_cfg: TrainerConfig,
           device: torch.device, group: DataParallel | None) -> dict[str, float]:
    main = group is None or group.is_main
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}")
    model_fields = OmegaConf.to_container(cfg.model, resolve=True)
    resume = None
    if trainer_cfg.resume is not None:
        resume = load_checkpoint(resolve_checkpoint(trainer_cfg.resume), map_location=device)
    # the data (own generators) and the minibatch order use `seed` on every rank; the Gumbel noise seed + rank
    seed_everything(cfg.seed + (0 if group is None else group.rank))
    data = load_data(cfg.data, cfg.seed)
    # D of a csv / npz file is known only now: model.obs_dim null follows the data
    D = data.train.x.shape[-1]
    if model_fields.get("obs_dim") is None:
        model_fields["obs_dim"] = D
    model_cfg = settings(ModelConfig, model_fields, "model")
    if model_cfg.obs_dim != D:
        raise ValueError(f"model.obs_dim={model_cfg.obs_dim} does not match the data's D={D} (data.obs_dim)")
    if resume is not None:
        ours, theirs = asdict(model_cfg), resume["model_config"]
        differ = [k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
        if differ:
            raise ValueError(f"trainer.resume={trainer_cfg.resume!r}: the checkpoint's model has "
                             + ", ".join(f"{k}={theirs.get(k)!r}" for k in differ) + ", this run's "
                             + ", ".join(f"model.{k}={ours.get(k)!r}" for k in differ))
        check_resume(resume, trainer_cfg, len(data.train))
    run_dir = check_writable_dir(run_dir, "run directory")
    # checked: from here on the run writes (rank 0 alone, when data-parallel)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["model"]["obs_dim"] = resolved["data"]["obs_dim"] = D
    if main:
        (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
        with atomic_write(run_dir / ".hydra" / "config.yaml", "w") as f:
            f.write(OmegaConf.to_yaml(resolved))
        if overrides is not None:
            with atomic_write(run_dir / ".hydra" / "overrides.yaml", "w") as f:
                f.write(OmegaConf.to_yaml(list(overrides)))
    if getattr(data, "summary", ""):
        log.info("%s", data.summary)
    model = DSSM(model_cfg).to(device)
    log.info("data: %d train / %d val sequences, T=%d, D=%d; model K=%d on %s; run dir %s",
             len(data.train), len(data.val), data.train.x.shape[1], model_cfg.obs_dim, model_cfg.n_states,
             device, run_dir)
    params = getattr(data, "params", None)  # the true HMM, known for synthetic data only
    oracle = {} if params is None else oracle_metrics(params, data.val)
    if oracle:
        log.info("oracle (true HMM) validation accuracy %.4f", oracle["oracle_accuracy"])
    tracker = Tracker(run_dir, enabled=main)
    try:
        extra = {"config": resolved}
        if hasattr(data, "preprocessing"):  # decode applies the same features and standardisation
            extra.update(preprocessing=data.preprocessing.state_dict(), label_names=data.label_names)
        with StopOnSignal() as stop:
            try:
                metrics = fit(model, data.train, data.val, trainer_cfg, tracker, seed=cfg.seed,
                              checkpoint_dir=run_dir / "checkpoints" if main else None, extra_checkpoint=extra,
                              resume=resume, true_transition=None if params is None else params.transition,
                              stop=stop, group=group)
            except Interrupted as exc:
                exc.signum = stop.signum
                raise
        metrics.update(oracle)
        if oracle and "val_accuracy" in metrics:
            metrics["accuracy_over_oracle"] = metrics["val_accuracy"] / oracle["oracle_accuracy"]
        tracker.scalars(oracle, trainer_cfg.n_epochs, "val/")
        hparams = {**{f"trainer.{k}": v for k, v in asdict(trainer_cfg).items()},
                   **{f"data.{k}": v for k, v in resolved["data"].items()}, "seed": cfg.seed}
        hparams = {k: str(v) if isinstance(v, (list, dict)) else v for k, v in hparams.items()}
        tracker.finish(hparams, metrics)
    finally:
        tracker.close()
    shown = ("val_accuracy", "oracle_accuracy", "accuracy_over_oracle", "viterbi_accuracy", "val_nmi", "val_ari",
             "val_elbo_per_step", "val_loglik_per_step", "train_seconds")
    log.info("final: %s", ", ".join(f"{k} {metrics[k]:.4f}" for k in shown if k in metrics))
    return metrics


def resume_command(run_dir: str | Path, overrides: list[str]) -> str:
    """The shell command that continues the run in ``run_dir``: the same overrides, resuming from its last.pt."""
    kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in ("hydra.run.dir", "trainer.resume")]
    return shlex.join(["python", "-m", "pyro_dssm.train", *kept, f"hydra.run.dir={run_dir}",
                       f"trainer.resume={run_dir}"])


def failure_line(exc: BaseException, run_dir: str | Path, overrides: list[str]) -> tuple[str, int] | None:
    """The one stderr line and exit code for a run that ended with ``exc``; None for a bug (let it raise)."""
    if isinstance(exc, Interrupted):
        name = signal.Signals(exc.signum).name if exc.signum else "a stop request"
        where = f"checkpoint {exc.checkpoint}" if exc.checkpoint else "no checkpoint directory"
        line = (f"interrupted by {name} at step {exc.step} ({exc.where}); {where}; resume with: "
                f"{resume_command(run_dir, overrides)}")
        return line, 128 + exc.signum if exc.signum else 1
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted: stopped at once, without writing a checkpoint", 128 + signal.SIGINT
    if isinstance(exc, TrainingDiverged):
        return f"error: {exc}", 1
    if isinstance(exc, (ValueError, TypeError)):
        return f"error: {exc}", 2
    if isinstance(exc, OSError):
        return f"error: {exc}", 1
    return None


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train in Hydra's run dir; returns the validation metric sweepers maximise (``val_accuracy``, else the ELBO)."""
    logging.captureWarnings(True)  # library warnings go to the log (stdout, train.log); stderr keeps the error line
    hydra_cfg = hydra.core.hydra_config.HydraConfig.get()
    run_dir, overrides = hydra_cfg.runtime.output_dir, list(hydra_cfg.overrides.task)
    try:
        metrics = train(cfg, run_dir, overrides)
    except (Exception, KeyboardInterrupt) as exc:
        failure = failure_line(exc, run_dir, overrides)
        if failure is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        line, code = failure
        print(" ".join(line.split("\n")), file=sys.stderr)
        sys.exit(code)
    return float(metrics.get("val_accuracy", metrics["val_elbo_per_step"]))


if __name__ == "__main__":
    main()
