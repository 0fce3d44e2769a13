"""Entry point: ``python -m pyro_dssm.train [overrides]``.

:func:`train` is a plain function of a composed config and returns the final
metrics; :func:`main` is the thin Hydra wrapper around it, and :func:`cli`
(``python -m``) checks the command line against the schema before Hydra runs
:func:`main`. A run that cannot finish ends with one line on stderr and an
exit code (``HYDRA_FULL_ERROR=1`` shows the traceback instead):

- 2: a bad setting (an unknown key, a wrong type, a missing group option, a value
  out of range), data file or checkpoint (``ValueError`` / ``TypeError``);
  checked before anything is written, so an existing run directory is left as it was;
- 1: training diverged (too many non-finite steps in a row), or the system
  refused a write (disk full, ...);
- 130 (SIGINT) / 143 (SIGTERM): a checkpoint was written; the line gives the
  command that resumes the run.
"""

from __future__ import annotations

import logging
import os
import random
import shlex
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from pyro_dssm.config import (CountsDataConfig, DataConfig, DrivenDataConfig, FileDataConfig, ModelConfig,
                              NpyDataConfig, PeriodicDataConfig, RecurrentDataConfig, SwitchingARDataConfig,
                              TrainerConfig, data_settings, settings)
from pyro_dssm.config.checks import raise_first, seed_checks
from pyro_dssm.config.location import CONFIG_DIR
from pyro_dssm.config.overrides import check_command_line
from pyro_dssm.io.checkpoint import load_checkpoint, resolve_checkpoint
from pyro_dssm.data.counts import make_counts
from pyro_dssm.data.periodic import make_periodic
from pyro_dssm.data.driven import make_driven
from pyro_dssm.data.recurrent import make_recurrent
from pyro_dssm.data.switching_ar import make_switching_ar
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.data.files import load_file_data
from pyro_dssm.data.readers import Sequences
from pyro_dssm.inference.distributed import DataParallel, init_data_parallel, shutdown
from pyro_dssm.evaluation.evaluate import oracle_metrics
from pyro_dssm.inference.faults import Interrupted, StopOnSignal, TrainingDiverged
from pyro_dssm.model.dssm import DSSM
from pyro_dssm.io.outputs import atomic_write, check_run_dir
from pyro_dssm.data.streaming import load_npy_data
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.inference.threads import choose_threads, intra_op_threads, model_width
from pyro_dssm.inference.trainer import check_resume, fit, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(data_cfg: DataConfig | DictConfig, seed: int, sequences: Sequences | None = None):
    """Build the dataset of ``data_cfg`` (the data group's dataclass, or the composed group itself): drawn from a
    known HMM (``synthetic``, ``switching_ar``, ``counts``, ``periodic``), sequences from a ``csv`` / ``npz`` file,
    or an ``npy`` file streamed from disk."""
    if isinstance(data_cfg, DictConfig):
        data_cfg = data_settings(OmegaConf.to_container(data_cfg, resolve=True))
    if isinstance(data_cfg, FileDataConfig):
        return load_file_data(data_cfg, seed, sequences)
    if sequences is not None:  # arrays in memory go through the csv / npz pipeline (pyro_dssm.api.fit)
        raise ValueError(f"sequences given in memory need data=npz, got data.name={data_cfg.name!r}")
    if isinstance(data_cfg, NpyDataConfig):  # streamed from disk
        return load_npy_data(data_cfg)
    c = data_cfg
    if isinstance(c, SwitchingARDataConfig):
        return make_switching_ar(c.n_states, c.obs_dim, c.seq_len, c.n_train, c.n_val, c.transition_bias, c.noise_std,
                                 c.damping, c.max_angle, c.noise_spread, seed=seed)
    if isinstance(c, CountsDataConfig):
        return make_counts(c.n_states, c.obs_dim, c.seq_len, c.n_train, c.n_val, c.transition_bias, c.mean_rate,
                           c.rate_spread, seed=seed)
    if isinstance(c, RecurrentDataConfig):
        return make_recurrent(c, seed=seed)
    if isinstance(c, DrivenDataConfig):
        return make_driven(c, seed=seed)
    if isinstance(c, PeriodicDataConfig):
        return make_periodic(c.n_states, c.obs_dim, c.seq_len, c.n_train, c.n_val, c.mean_duration, c.damping,
                             c.min_period, c.max_period, c.amplitude_spread, seed=seed)
    return make_synthetic(c.n_states, c.obs_dim, c.seq_len, c.n_train, c.n_val, c.transition_bias, c.noise_std,
                          seed=seed, missing_fraction=c.missing_fraction)


@dataclass
class TrainedRun:
    """What :func:`train_model` ends with: ``model`` (on the CPU, eval mode: the weights ``train`` ends with,
    those of ``checkpoints/best.pt`` with ``trainer.keep_best``), ``checkpoint`` (the payload of ``last.pt``
    with those weights; :class:`~pyro_dssm.fitted.FittedDSSM` reads it) and ``metrics`` (``metrics.json``'s)."""

    model: DSSM
    checkpoint: dict
    metrics: dict


def train(cfg: DictConfig, run_dir: str | Path | None, overrides: list[str] | None = None,
          sequences: Sequences | None = None) -> dict[str, float]:
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

    ``sequences`` (read already, e.g. arrays given to :func:`pyro_dssm.api.fit`) stand in for the
    file of ``data=npz`` / ``data=csv`` and go through the same features, split and standardisation.

    ``run_dir`` None: nothing on disk (no TensorBoard, figures, checkpoints, config or metrics files);
    :func:`train_model` then hands back the model it ends with.
    """
    return train_model(cfg, run_dir, overrides, sequences).metrics


def train_model(cfg: DictConfig, run_dir: str | Path | None = None, overrides: list[str] | None = None,
                sequences: Sequences | None = None) -> TrainedRun:
    """:func:`train`, returning the trained model and its checkpoint payload beside the metrics.

    ``run_dir`` None (the Python estimator's default, :class:`pyro_dssm.estimator.DSSM`): the run
    lives in memory only; the best epoch's weights are kept in memory as ever (``trainer.keep_best``).
    """
    # the composed config as the dataclasses the library takes (each checks its ranges); the model group
    # waits for the data, whose features may set model.obs_dim
    raise_first(seed_checks(cfg.seed))
    trainer_cfg = settings(TrainerConfig, OmegaConf.to_container(cfg.trainer, resolve=True), "trainer")
    data_cfg = data_settings(OmegaConf.to_container(cfg.data, resolve=True))
    device = resolve_device(trainer_cfg.device)
    group = init_data_parallel(device) if trainer_cfg.distributed else None
    try:
        return _train(cfg, None if run_dir is None else Path(run_dir), overrides, trainer_cfg, data_cfg,
                      device if group is None else group.device, group, sequences)
    finally:
        if group is not None:
            shutdown()


def _train(cfg: DictConfig, run_dir: Path | None, overrides: list[str] | None, trainer_cfg: TrainerConfig,
           data_cfg: DataConfig, device: torch.device, group: DataParallel | None,
           sequences: Sequences | None = None) -> TrainedRun:
    main = group is None or group.is_main
    resume = None
    if trainer_cfg.resume is not None:
        resume = load_checkpoint(resolve_checkpoint(trainer_cfg.resume, prefer="last", key="trainer.resume"),
                                 map_location=device)
    # the data (own generators) and the minibatch order use `seed` on every rank; the Gumbel noise seed + rank
    seed_everything(cfg.seed + (0 if group is None else group.rank))
    data = load_data(data_cfg, cfg.seed, sequences)
    known_names = getattr(data, "known_names", None)  # data.known_states_column: x carries them as a last column
    input_names = list(getattr(data, "input_names", None) or [])  # exogenous inputs: the columns after the features
    D = data.train.x.shape[-1] - len(input_names) - (known_names is not None)
    missing = {split: missing_cells(numbers.x, D) for split, numbers in (("train", data.train), ("val", data.val))}
    model_cfg = _model_settings(cfg, D, missing["train"] > 0, known_names is not None, len(input_names))
    model = DSSM(model_cfg).to(device)  # before anything is written: a family that cannot be built stops the run here
    if resume is not None:
        _check_resumable(resume, model_cfg, trainer_cfg, len(data.train))
    if run_dir is not None:
        run_dir = check_run_dir(run_dir, resume=resume is not None, overwrite=cfg.get("overwrite", False))
    # checked: from here on the run writes (rank 0 alone, when data-parallel; nothing without a run_dir)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["model"]["obs_dim"] = resolved["data"]["obs_dim"] = model_cfg.obs_dim
    resolved["model"]["missing_input"] = model_cfg.missing_input
    resolved["model"]["known_states"] = model_cfg.known_states
    resolved["model"]["input_dim"] = model_cfg.input_dim
    if main and run_dir is not None:
        _write_config(run_dir, resolved, overrides)
    if getattr(data, "summary", ""):
        log.info("%s", data.summary)
    if input_names:
        readers = [*(["the transition"] if model.transition.reads_inputs else []),
                   *(["the emission"] if model.emitter.input_dim else []), "the guide"]
        log.info("inputs %s (U=%d): conditioned on, not modelled; read by %s", input_names, len(input_names),
                 " and ".join(readers) if len(readers) > 1 else
                 f"the guide only (model.transition={model_cfg.transition!r} does not read inputs, "
                 f"model.emission_inputs=false)")
    log.info("data: %d train / %d val sequences, T=%d, D=%d; model K=%d on %s; run dir %s",
             len(data.train), len(data.val), data.train.x.shape[1], model_cfg.obs_dim, model_cfg.n_states,
             device, "none (in memory)" if run_dir is None else run_dir)
    tracker = Tracker(run_dir, enabled=main)
    threads = choose_threads(trainer_cfg.num_threads, device, trainer_cfg.batch_size, model_width(model_cfg))
    try:
        with intra_op_threads(threads):
            metrics, checkpoint = _fit_and_report(cfg, trainer_cfg, data, model, tracker, run_dir, resolved, resume,
                                                  group, missing)
    finally:
        tracker.close()
    shown = ("val_accuracy", "oracle_accuracy", "accuracy_over_oracle", "viterbi_accuracy", "val_nmi", "val_ari",
             "val_elbo_per_step", "val_loglik_per_step", "train_seconds")
    log.info("final: %s", ", ".join(f"{k} {metrics[k]:.4f}" for k in shown if k in metrics))
    model = model.cpu().eval()
    return TrainedRun(model, {**checkpoint, "model": model.state_dict()}, metrics)


def missing_cells(x, D: int | None = None) -> int:
    """The NaN (missing) cells of the first D columns (the features; all by default) of data x (N, T, D [+ 1]);
    0 for rows streamed from an ``.npy`` file."""
    return int(torch.isnan(x[..., :D]).sum()) if isinstance(x, torch.Tensor) else 0


def missing_metrics(data, D: int, missing: dict[str, int]) -> dict[str, float]:
    """``missing_cells`` (of the D training and validation features: ``missing``, per split) and
    ``missing_fraction`` of the cells on valid steps, for metrics.json."""
    cells = sum(missing.values())
    total = sum(int(split.lengths.sum()) * D for split in (data.train, data.val) if isinstance(split.x, torch.Tensor))
    return {"missing_cells": float(cells), "missing_fraction": cells / total if total else 0.0}


def _model_settings(cfg: DictConfig, D: int, has_missing: bool = False, has_known: bool = False,
                    n_inputs: int = 0) -> ModelConfig:
    """The model group's dataclass; D of a csv / npz file is known only once read: ``model.obs_dim`` null follows it,
    ``model.missing_input`` null whether the training data have a missing cell, ``model.known_states`` whether
    they have known states, ``model.input_dim`` the number of their exogenous inputs."""
    model_fields = OmegaConf.to_container(cfg.model, resolve=True)
    model_fields["known_states"] = has_known
    model_fields["input_dim"] = n_inputs
    if model_fields.get("obs_dim") is None:
        model_fields["obs_dim"] = D
    if model_fields.get("missing_input") is None:
        model_fields["missing_input"] = has_missing
    model_cfg = settings(ModelConfig, model_fields, "model")
    if model_cfg.obs_dim != D:
        raise ValueError(f"model.obs_dim={model_cfg.obs_dim} does not match the data's D={D} (data.obs_dim)")
    return model_cfg


def _check_resumable(resume: dict, model_cfg: ModelConfig, trainer_cfg: TrainerConfig, n_train: int) -> None:
    """ValueError naming what differs when checkpoint ``resume`` is of another model, or cannot continue."""
    ours, theirs = asdict(model_cfg), resume["model_config"]
    differ = [k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k)]
    if differ:
        raise ValueError(f"trainer.resume={trainer_cfg.resume!r}: the checkpoint's model has "
                         + ", ".join(f"{k}={theirs.get(k)!r}" for k in differ) + ", this run's "
                         + ", ".join(f"model.{k}={ours.get(k)!r}" for k in differ))
    check_resume(resume, trainer_cfg, n_train)


def _write_config(run_dir: Path, resolved: dict, overrides: list[str] | None) -> None:
    """``.hydra/config.yaml`` (the resolved config) and ``.hydra/overrides.yaml`` (the command line)."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    with atomic_write(run_dir / ".hydra" / "config.yaml", "w") as f:
        f.write(OmegaConf.to_yaml(resolved))
    if overrides is not None:
        with atomic_write(run_dir / ".hydra" / "overrides.yaml", "w") as f:
            f.write(OmegaConf.to_yaml(list(overrides)))


def _fit_and_report(cfg: DictConfig, trainer_cfg: TrainerConfig, data, model: DSSM, tracker: Tracker,
                    run_dir: Path | None, resolved: dict, resume: dict | None,
                    group: DataParallel | None, missing: dict[str, int]) -> tuple[dict, dict]:
    """Train (stopping cleanly on SIGINT / SIGTERM), add the oracle's numbers, write hparams and metrics.json
    (with a ``run_dir``). ``missing``: the missing feature cells of each split (:func:`missing_cells`). Returns the
    metrics and the checkpoint payload the run ends with."""
    params = getattr(data, "params", None)  # the true HMM, known for synthetic data only
    oracle = {} if params is None else oracle_metrics(params, data.val)
    D = model.config.obs_dim
    for split, numbers in (("train", data.train), ("val", data.val)):
        if missing[split]:
            log.info("missing values: %d of the %s features' cells (%.1f%%), summed out by the model (data.missing)",
                     missing[split], split, 100 * missing[split] / (numbers.x.shape[0] * numbers.x.shape[1] * D))
    if oracle:
        log.info("oracle (true HMM) validation accuracy %.4f", oracle["oracle_accuracy"])
    extra = {"config": resolved}
    if hasattr(data, "preprocessing"):  # decode applies the same features and standardisation
        extra.update(preprocessing=data.preprocessing.state_dict(), label_names=data.label_names)
        if getattr(data, "known_names", None) is not None:  # state k is this class: decode writes the names
            extra["known_names"] = list(data.known_names)
        if getattr(data, "input_preprocessing", None) is not None:  # decode standardises the inputs the same way
            extra["input_preprocessing"] = data.input_preprocessing.state_dict()
    writes = run_dir is not None and (group is None or group.is_main)
    with StopOnSignal() as stop:
        try:
            metrics, checkpoint = fit(model, data.train, data.val, trainer_cfg, tracker, seed=cfg.seed,
                                      checkpoint_dir=run_dir / "checkpoints" if writes else None,
                                      extra_checkpoint=extra, resume=resume,
                                      true_transition=getattr(params, "transition", None),
                                      stop=stop, group=group, return_checkpoint=True)
        except Interrupted as exc:
            exc.signum = stop.signum
            raise
    metrics.update(oracle)
    metrics.update(missing_metrics(data, D, missing))
    if oracle and "val_accuracy" in metrics:
        metrics["accuracy_over_oracle"] = metrics["val_accuracy"] / oracle["oracle_accuracy"]
    tracker.scalars(oracle, trainer_cfg.n_epochs, "val/")
    hparams = {**{f"trainer.{k}": v for k, v in asdict(trainer_cfg).items()},
               **{f"data.{k}": v for k, v in resolved["data"].items()}, "seed": cfg.seed}
    hparams = {k: str(v) if isinstance(v, (list, dict)) else v for k, v in hparams.items()}
    tracker.finish(hparams, metrics)
    return metrics, checkpoint


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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")  # configs/ or the installed copy
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


def cli() -> None:
    """``python -m pyro_dssm.train``: :func:`main`, after the command line has passed the schema.

    Hydra would report an unknown key, a value of the wrong type or a missing
    group option in several lines of its own (exit 1) before :func:`main` runs;
    the same overrides are composed first here, so each is one ``error:`` line
    and exit code 2, like any other bad setting. ``HYDRA_FULL_ERROR=1`` leaves
    them to Hydra, with the traceback.
    """
    if os.environ.get("HYDRA_FULL_ERROR") != "1":
        try:
            check_command_line(CONFIG_DIR, "config", sys.argv[1:])
        except ValueError as exc:
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
            sys.exit(2)
    main()


if __name__ == "__main__":
    cli()
