"""Entry point: ``python -m pyro_dssm.train [overrides]``.

:func:`train` is a plain function of a composed config and returns the final
metrics; :func:`main` is the thin Hydra wrapper around it.
"""

from __future__ import annotations

import logging
import random
import sys
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from .data import make_synthetic
from .evaluate import oracle_accuracy, oracle_log_likelihood_per_step
from .model import DSSM, ModelConfig
from .tracking import Tracker
from .trainer import TrainerConfig, fit, resolve_device

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_data(data_cfg: DictConfig, seed: int):
    """Build the dataset named by ``data.name`` (synthetic for now)."""
    if data_cfg.name != "synthetic":
        raise ValueError(f"data.name must be 'synthetic', got {data_cfg.name!r}")
    fields = ("n_states", "obs_dim", "seq_len", "n_train", "n_val", "transition_bias", "noise_std")
    return make_synthetic(**{k: data_cfg[k] for k in fields}, seed=seed)


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, float]:
    """Train one DSSM as configured; write TensorBoard events, a checkpoint and metrics.json to ``run_dir``.

    Returns the metrics written to ``metrics.json``.
    """
    run_dir = Path(run_dir)
    trainer_cfg = TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True))
    model_cfg = ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))
    if model_cfg.obs_dim != cfg.data.obs_dim:
        raise ValueError(f"model.obs_dim={model_cfg.obs_dim} does not match data.obs_dim={cfg.data.obs_dim}")
    device = resolve_device(trainer_cfg.device)
    seed_everything(cfg.seed)
    data = load_data(cfg.data, cfg.seed)
    model = DSSM(model_cfg).to(device)
    log.info("data: %d train / %d val sequences, T=%d, D=%d; model K=%d on %s; run dir %s",
             len(data.train), len(data.val), data.train.x.shape[1], model_cfg.obs_dim, model_cfg.n_states,
             device, run_dir)
    oracle = {
        "oracle_accuracy": oracle_accuracy(data.params, data.val),
        "oracle_loglik_per_step": oracle_log_likelihood_per_step(data.params, data.val),
    }
    log.info("oracle (true HMM) validation accuracy %.4f", oracle["oracle_accuracy"])
    tracker = Tracker(run_dir)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        metrics = fit(model, data.train, data.val, trainer_cfg, tracker, seed=cfg.seed,
                      checkpoint_dir=run_dir / "checkpoints", extra_checkpoint={"config": resolved})
        metrics.update(oracle)
        metrics["accuracy_over_oracle"] = metrics["val_accuracy"] / oracle["oracle_accuracy"]
        tracker.scalars(oracle, trainer_cfg.n_epochs, "val/")
        hparams = {**{f"trainer.{k}": v for k, v in asdict(trainer_cfg).items()},
                   **{f"data.{k}": v for k, v in resolved["data"].items()}, "seed": cfg.seed}
        tracker.finish(hparams, metrics)
    finally:
        tracker.close()
    log.info("final: val_accuracy %.4f (oracle %.4f, ratio %.3f), viterbi_accuracy %.4f, val ELBO/step %.4f, "
             "log p(X)/step %.4f, %.1f s", metrics["val_accuracy"], metrics["oracle_accuracy"],
             metrics["accuracy_over_oracle"], metrics["viterbi_accuracy"], metrics["val_elbo_per_step"],
             metrics["val_loglik_per_step"], metrics["train_seconds"])
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> float:
    run_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    try:
        metrics = train(cfg, run_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    return metrics["val_accuracy"]


if __name__ == "__main__":
    main()
