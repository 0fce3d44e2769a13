"""The SVI training loop: minibatches, temperature annealing, evaluation, checkpoints."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyro
import torch

from .checkpoint import save_checkpoint
from .data import HMMParams, SequenceData
from .evaluate import evaluate
from .init import fit_transition_to, kmeans_init, warm_start_guide
from .model import DSSM
from .objectives import OBJECTIVES, make_elbo, temperature
from .tracking import Tracker

log = logging.getLogger(__name__)

INITS = ("kmeans", "random")


@dataclass
class TrainerConfig:
    """Optimisation settings (Hydra group ``trainer``)."""

    n_epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    objective: str = "trace"
    tau_init: float = 1.0
    tau_min: float = 0.1
    tau_anneal_fraction: float = 0.5
    grad_clip: float = 10.0
    init: str = "kmeans"
    init_stay_prob: float = 0.8
    guide_warmup_steps: int = 100
    device: str = "auto"
    validate_args: bool = True

    def __post_init__(self):
        checks = [
            (isinstance(self.n_epochs, int) and self.n_epochs >= 1, f"trainer.n_epochs must be >= 1, got {self.n_epochs}"),
            (isinstance(self.batch_size, int) and self.batch_size >= 1, f"trainer.batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"trainer.lr must be > 0, got {self.lr}"),
            (self.objective in OBJECTIVES, f"trainer.objective must be one of {OBJECTIVES}, got {self.objective!r}"),
            (self.tau_init > 0, f"trainer.tau_init must be > 0, got {self.tau_init}"),
            (0 < self.tau_min <= self.tau_init, f"trainer.tau_min must be in (0, tau_init={self.tau_init}], got {self.tau_min}"),
            (0 <= self.tau_anneal_fraction <= 1, f"trainer.tau_anneal_fraction must be in [0, 1], got {self.tau_anneal_fraction}"),
            (self.grad_clip > 0, f"trainer.grad_clip must be > 0, got {self.grad_clip}"),
            (0 < self.init_stay_prob < 1, f"trainer.init_stay_prob must be in (0, 1), got {self.init_stay_prob}"),
            (self.guide_warmup_steps >= 0, f"trainer.guide_warmup_steps must be >= 0, got {self.guide_warmup_steps}"),
            (self.init in INITS, f"trainer.init must be one of {INITS}, got {self.init!r}"),
            (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:"),
             f"trainer.device must be auto, cpu or cuda, got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} requested but CUDA is not available (use cpu or auto)")
    return torch.device(name)


def fit(
    model: DSSM,
    train: SequenceData,
    val: SequenceData,
    cfg: TrainerConfig,
    tracker: Tracker,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    extra_checkpoint: dict | None = None,
) -> dict[str, float]:
    """Train ``model`` by SVI on ``train``; evaluate on ``val`` every epoch.

    Returns the last epoch's validation metrics plus ``train_seconds``,
    ``epochs``, ``steps`` and ``final_loss`` (negative ELBO per valid time step).
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    if cfg.init == "kmeans":
        x, mask = train.x.to(device), train.mask.to(device)
        kmeans_init(model, x, mask, gen)
        fit_transition_to(model, cfg.init_stay_prob)
        if cfg.guide_warmup_steps > 0:
            ce = warm_start_guide(model, x, mask, gen, steps=cfg.guide_warmup_steps, batch_size=cfg.batch_size)
            log.info("guide warm-up: cross-entropy to the exact posterior %.4f nats/step", ce)
    elbo = make_elbo(cfg.objective)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    anneal_steps = int(cfg.tau_anneal_fraction * cfg.n_epochs * steps_per_epoch)
    x_all, mask_all = train.x.to(device), train.mask.to(device)
    step, metrics, start = 0, {}, time.perf_counter()
    with pyro.validation_enabled(cfg.validate_args):
        for epoch in range(1, cfg.n_epochs + 1):
            epoch_start, losses = time.perf_counter(), []
            for idx in torch.randperm(len(train), generator=gen).split(cfg.batch_size):
                idx = idx.to(device)
                x, mask = x_all[idx], mask_all[idx]
                tau = temperature(step, cfg.tau_init, cfg.tau_min, anneal_steps)
                loss = elbo.differentiable_loss(model.model, model.guide, x, mask, tau) / mask.sum()
                optim.zero_grad()
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optim.step()
                step += 1
                loss_value = loss.item()
                losses.append(loss_value)
                tracker.scalars({"loss": loss_value, "tau": tau, "grad_norm": float(grad_norm)}, step, "train/")
            metrics = evaluate(model, val, seed=seed)
            metrics.update(loss=sum(losses) / len(losses), tau=tau, seconds=time.perf_counter() - epoch_start)
            tracker.scalars(metrics, epoch, "val/")
            tracker.epoch_line(epoch, cfg.n_epochs, metrics)
            if checkpoint_dir is not None:
                save_checkpoint(
                    checkpoint_dir / "last.pt",
                    {"model": model.state_dict(), "optimizer": optim.state_dict(), "epoch": epoch, "step": step,
                     "model_config": asdict(model.config), **(extra_checkpoint or {})},
                )
    metrics.update(train_seconds=time.perf_counter() - start, epochs=cfg.n_epochs, steps=step,
                   final_loss=metrics.pop("loss"))
    metrics.pop("seconds")
    return metrics
