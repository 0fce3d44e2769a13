"""Entry point: ``python -m pyro_dssm.train [overrides]``.

:func:`train` is a plain function of a composed config and returns the final
metrics; :func:`main` is the thin Hydra wrapper around it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .checkpoint import load_checkpoint, resolve_checkpoint
from .data import make_synthetic
from .datasets import SOURCES, FileDataConfig, load_file_data
from .distributed import DataParallel, init_data_parallel, shutdown
from .evaluate import oracle_metrics
from .model import DSSM, ModelConfig
from .streaming import NpyDataConfig, load_npy_data
from .tracking import Tracker
from .trainer import TrainerConfig, fit, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(data_cfg: DictConfig, seed: int):
    """Build the dataset named by ``data.name``: ``synthetic``, sequences from a ``csv`` / ``npz`` file, or
    an ``npy`` file streamed from disk."""
    if data_cfg.name in SOURCES:
        fields = {f.name for f in dataclasses.fields(FileDataConfig)}
        given = OmegaConf.to_container(data_cfg, resolve=True)
        return load_file_data(FileDataConfig(**{k: v for k, v in given.items() if k in fields}), seed)
    if data_cfg.name == "npy":  # streamed from disk
        fields = {f.name for f in dataclasses.fields(NpyDataConfig)}
        given = OmegaConf.to_container(data_cfg, resolve=True)
        return load_npy_data(NpyDataConfig(**{k: v for k, v in given.items() if k in fields}))
    if data_cfg.name != "synthetic":
        raise ValueError(f"data.name must be one of {('synthetic', *SOURCES, 'npy')}, got {data_cfg.name!r}")
    fields = ("n_states", "obs_dim", "seq_len", "n_train", "n_val", "transition_bias", "noise_std")
    return make_synthetic(**{k: data_cfg[k] for k in fields}, seed=seed)


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train one DSSM as configured; write TensorBoard events, a checkpoint and metrics.json to ``run_dir``.

    Returns the metrics written to ``metrics.json``. With ``trainer.distributed``
    (under torchrun) every process calls this; rank 0 alone writes to ``run_dir``
    (:mod:`pyro_dssm.distributed`).
    """
    run_dir = Path(run_dir)
    trainer_cfg = TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))
    device = resolve_device(trainer_cfg.device)
    group = init_data_parallel(device) if trainer_cfg.distributed else None
    try:
        return _train(cfg, run_dir, trainer_cfg, device if group is None else group.device, group)
    finally:
        if group is not None:
            shutdown()


def _train(cfg: DictConfig, run_dir: Path, trainer_cfg: TrainerConfig, device: torch.device,
           group: DataParallel | None) -> dict[str, float]:
    main = group is None or group.is_main
    model_fields = OmegaConf.to_container(cfg.model, resolve=True)
    # the data (own generators) and the minibatch order use `seed` on every rank; the Gumbel noise seed + rank
    seed_everything(cfg.seed + (0 if group is None else group.rank))
    data = load_data(cfg.data, cfg.seed)
    # D of a csv / npz file is known only now: model.obs_dim null follows the data
    D = data.train.x.shape[-1]
    if model_fields["obs_dim"] is None:
        model_fields["obs_dim"] = D
    model_cfg = ModelConfig(**model_fields)
    if model_cfg.obs_dim != D:
        raise ValueError(f"model.obs_dim={model_cfg.obs_dim} does not match the data's D={D} (data.obs_dim)")
    resume = None
    if trainer_cfg.resume is not None:
        resume = load_checkpoint(resolve_checkpoint(trainer_cfg.resume), map_location=device)
        if resume["model_config"] != asdict(model_cfg):
            raise ValueError(f"trainer.resume={trainer_cfg.resume!r}: the checkpoint's model "
                             f"{resume['model_config']} differs from this run's {asdict(model_cfg)}")
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
        resolved = OmegaConf.to_container(cfg, resolve=True)
        resolved["model"]["obs_dim"] = resolved["data"]["obs_dim"] = D
        extra = {"config": resolved}
        if hasattr(data, "preprocessing"):  # decode applies the same features and standardisation
            extra.update(preprocessing=data.preprocessing.state_dict(), label_names=data.label_names)
        metrics = fit(model, data.train, data.val, trainer_cfg, tracker, seed=cfg.seed,
                      checkpoint_dir=run_dir / "checkpoints" if main else None, extra_checkpoint=extra,
                      resume=resume, true_transition=None if params is None else params.transition, group=group)
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


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train in Hydra's run dir; returns the validation metric sweepers maximise (``val_accuracy``, else the ELBO)."""
    run_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    try:
        metrics = train(cfg, run_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return float(metrics.get("val_accuracy", metrics["val_elbo_per_step"]))


if __name__ == "__main__":
    main()
