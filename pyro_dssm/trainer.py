"""The SVI training loop: minibatches, temperature annealing, evaluation, checkpoints."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyro
import torch

from .checkpoint import restore_rng_state, rng_state, save_checkpoint
from .data import HMMParams, SequenceData
from .evaluate import evaluate
from .figures import training_figures
from .init import data_driven_init, warm_start_guide
from .model import DSSM
from .objectives import OBJECTIVES, make_elbo, temperature
from .tracking import Tracker

if TYPE_CHECKING:
    from .distributed import DataParallel

log = logging.getLogger(__name__)

INITS = ("em", "kmeans", "random")


@dataclass
class TrainerConfig:
    """Optimisation settings (Hydra group ``trainer``)."""

    n_epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    objective: str = "analytic"
    tau_init: float = 1.0
    tau_min: float = 0.1
    tau_anneal_fraction: float = 0.5
    grad_clip: float = 10.0
    init: str = "em"
    init_restarts: int = 4
    init_em_iters: int = 20
    init_max_sequences: int = 100
    init_stay_prob: float = 0.8
    guide_warmup_steps: int = 100
    device: str = "auto"
    validate_args: bool = True
    figure_every: int = 5
    resume: str | None = None
    stop_after_epoch: int | None = None
    distributed: bool = False

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
            (isinstance(self.init_restarts, int) and self.init_restarts >= 1,
             f"trainer.init_restarts must be an integer >= 1, got {self.init_restarts!r}"),
            (isinstance(self.init_max_sequences, int) and self.init_max_sequences >= 1,
             f"trainer.init_max_sequences must be an integer >= 1, got {self.init_max_sequences!r}"),
            (isinstance(self.init_em_iters, int) and self.init_em_iters >= 0,
             f"trainer.init_em_iters must be an integer >= 0, got {self.init_em_iters!r}"),
            (self.init in INITS, f"trainer.init must be one of {INITS}, got {self.init!r}"),
            (isinstance(self.figure_every, int) and self.figure_every >= 0,
             f"trainer.figure_every must be an integer >= 0, got {self.figure_every!r}"),
            (self.stop_after_epoch is None or (isinstance(self.stop_after_epoch, int) and self.stop_after_epoch >= 1),
             f"trainer.stop_after_epoch must be null or an integer >= 1, got {self.stop_after_epoch!r}"),
            (self.device in ("auto", "cpu", "cuda") or str(self.device).startswith("cuda:"),
             f"trainer.device must be auto, cpu or cuda, got {self.device!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


def initialise(net, x: torch.Tensor, mask: torch.Tensor, cfg: TrainerConfig, gen: torch.Generator) -> None:
    """Data-driven init of ``net``'s generative networks as ``cfg.init`` says (nothing for ``random``)."""
    if cfg.init == "random":
        return
    info = data_driven_init(net, x, mask, gen, method=cfg.init, restarts=cfg.init_restarts,
                            em_iters=cfg.init_em_iters, stay_prob=cfg.init_stay_prob,
                            max_sequences=cfg.init_max_sequences)
    log.info("init (%s, %d restarts): best log p(X)/step %.4f from restart %d", cfg.init, cfg.init_restarts,
             info["init_loglik_per_step"], info["init_restart"])


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"trainer.device={name!r} requested but CUDA is not available (use cpu or auto)")
    return torch.device(name)


def device_mask(data: SequenceData, device: torch.device) -> torch.Tensor | None:
    """(N, T) mask on ``device``, or None when no sequence is padded (decided once, on the CPU).

    None lets the model and guide skip per-batch length checks, which would
    force a host sync every step on a GPU.
    """
    return None if bool((data.lengths == data.x.shape[1]).all()) else data.mask.to(device)


def n_valid(x: torch.Tensor, mask: torch.Tensor | None):
    """Number of valid steps of a batch x (B, T, D): ``mask.sum()``, or B * T without a mask."""
    return x.shape[0] * x.shape[1] if mask is None else mask.sum()


def sgd_epoch(module, optim, x_all, mask_all, loss_fn, cfg: TrainerConfig, gen: torch.Generator, tracker: Tracker,
              step: int, group: DataParallel | None = None) -> tuple[int, list[float], float | None]:
    """One pass over shuffled minibatches of x_all (N, T, D) / mask_all (N, T) (None: no padding).

    ``loss_fn(x, mask, step) -> (loss per valid step, extra scalars to log)``.
    Clips the gradient norm at ``cfg.grad_clip``; logs ``train/loss``,
    ``train/grad_norm`` and the extras per step. Returns the new step count,
    the losses and the last ``tau`` extra (None if the loss has none).
    With ``group`` (data-parallel, :mod:`pyro_dssm.distributed`) this process
    computes its share of every minibatch; loss and gradient are those of the
    whole minibatch, on every process.
    """
    losses, tau = [], None
    # one host-to-device copy of the permutation per epoch, not one per step
    for idx in torch.randperm(x_all.shape[0], generator=gen).to(x_all.device).split(cfg.batch_size):
        if group is None:
            loss, extras = loss_fn(x_all[idx], None if mask_all is None else mask_all[idx], step)
            optim.zero_grad()
            loss.backward()
        else:
            optim.zero_grad()
            loss, extras = group.backward(module, loss_fn, x_all, mask_all, idx, step)
        grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        optim.step()
        step += 1
        losses.append(loss.item())
        tau = extras.get("tau", tau)
        tracker.scalars({"loss": losses[-1], "grad_norm": float(grad_norm), **extras}, step, "train/")
    return step, losses, tau


def fit(
    model: DSSM,
    train: SequenceData,
    val: SequenceData,
    cfg: TrainerConfig,
    tracker: Tracker,
    seed: int = 0,
    checkpoint_dir: Path | None = None,
    extra_checkpoint: dict | None = None,
    resume: dict | None = None,
    true_transition: torch.Tensor | None = None,
    group: DataParallel | None = None,
) -> dict[str, float]:
    """Train ``model`` by SVI on ``train``; evaluate on ``val`` after the init and every epoch.

    Returns the last epoch's validation metrics plus ``train_seconds`` (init and
    SVI steps, evaluation excluded), ``epochs``, ``steps``, ``final_loss``
    (negative ELBO per valid time step) and ``history``: one record per
    evaluation (epoch 0 = after the init) with ``epoch``, ``step``,
    ``train_seconds`` and the validation metrics.

    Every epoch writes ``checkpoint_dir/last.pt`` and, when the validation ELBO
    improves, ``best.pt``: model, optimiser, epoch, step (the temperature
    schedule is a function of it), random states, best ELBO and history, plus
    ``extra_checkpoint``. ``resume``, such a checkpoint loaded, continues
    exactly where it stopped (same minibatches, same Gumbel noise).
    ``true_transition`` (K, K), if known, is drawn beside the learned one.

    ``train.x`` may also be rows streamed from disk
    (:class:`pyro_dssm.streaming.NpyRows`): minibatches are read when used, and
    the init and guide warm-up see ``cfg.init_max_sequences`` random sequences.
    With ``group`` (data-parallel), the init runs on rank 0 and is broadcast,
    each process trains on its share of every minibatch, and validation runs on
    rank 0 and is broadcast (see :mod:`pyro_dssm.distributed`); pass
    ``checkpoint_dir`` on rank 0 only.
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    clock = time.perf_counter()
    main = group is None or group.is_main
    if resume is None:
        if main:
            if isinstance(train.x, torch.Tensor):
                x, mask = train.x.to(device), train.mask.to(device)
            else:  # streamed from disk: the init sees a random sample that fits in memory
                sample = train.subset(torch.randperm(len(train), generator=gen)[: cfg.init_max_sequences])
                x, mask = sample.x.to(device), sample.mask.to(device)
            initialise(model, x, mask, cfg, gen)
            if cfg.guide_warmup_steps > 0:
                ce = warm_start_guide(model, x, mask, gen, steps=cfg.guide_warmup_steps, batch_size=cfg.batch_size)
                log.info("guide warm-up: cross-entropy to the exact posterior %.4f nats/step", ce)
        if group is not None:  # one init, on rank 0: every rank starts from its parameters and minibatch order
            group.broadcast_module(model)
            group.broadcast_generator(gen)
    elbo = make_elbo(cfg.objective)
    optim = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    anneal_steps = int(cfg.tau_anneal_fraction * cfg.n_epochs * steps_per_epoch)
    x_all, mask_all = train.x.to(device), device_mask(train, device)
    train_seconds = time.perf_counter() - clock
    step, metrics, first_epoch, best = 0, {}, 1, -math.inf

    def validate() -> dict[str, float]:
        # once, on rank 0, over the whole validation set: the numbers of a single-process run
        metrics = evaluate(model, val, seed=seed) if main else None
        return metrics if group is None else group.broadcast_object(metrics)

    if resume is None:
        history = [{"epoch": 0, "step": 0, "train_seconds": train_seconds, **validate()}]
    else:
        model.load_state_dict(resume["model"])
        optim.load_state_dict(resume["optimizer"])
        restore_rng_state(resume["rng"], gen)
        if group is not None and not main:  # the checkpoint holds rank 0's noise stream; others draw afresh
            torch.manual_seed(seed + group.rank + group.world_size * resume["step"])
        step, first_epoch, best = resume["step"], resume["epoch"] + 1, resume["best_val_elbo"]
        history, train_seconds = list(resume["history"]), resume["train_seconds"]
        if first_epoch > cfg.n_epochs:
            raise ValueError(f"trainer.resume: the checkpoint is at epoch {resume['epoch']}, "
                             f"trainer.n_epochs={cfg.n_epochs} leaves nothing to train")
        if resume["n_epochs"] != cfg.n_epochs:
            log.warning("resuming a %d-epoch run as a %d-epoch run: the temperature schedule changes",
                        resume["n_epochs"], cfg.n_epochs)
        log.info("resuming after epoch %d (step %d)", resume["epoch"], step)
    def svi_loss(x, mask, step):
        tau = temperature(step, cfg.tau_init, cfg.tau_min, anneal_steps)
        return elbo.differentiable_loss(model.model, model.guide, x, mask, tau) / n_valid(x, mask), {"tau": tau}

    with pyro.validation_enabled(cfg.validate_args):
        for epoch in range(first_epoch, cfg.n_epochs + 1):
            epoch_start = time.perf_counter()
            step, losses, tau = sgd_epoch(model, optim, x_all, mask_all, svi_loss, cfg, gen, tracker, step, group)
            seconds = time.perf_counter() - epoch_start
            train_seconds += seconds
            metrics = validate()
            history.append({"epoch": epoch, "step": step, "train_seconds": train_seconds, **metrics})
            metrics.update(loss=sum(losses) / len(losses), tau=tau, seconds=seconds)
            tracker.scalars(metrics, epoch, "val/")
            tracker.epoch_line(epoch, cfg.n_epochs, metrics)
            if tracker.enabled and cfg.figure_every and (epoch % cfg.figure_every == 0 or epoch == cfg.n_epochs):
                for tag, fig in training_figures(model, val, true_transition).items():
                    tracker.figure(tag, fig, epoch)
            improved = metrics["val_elbo_per_step"] > best
            best = max(best, metrics["val_elbo_per_step"])
            if checkpoint_dir is not None:
                payload = {"model": model.state_dict(), "optimizer": optim.state_dict(), "epoch": epoch, "step": step,
                           "n_epochs": cfg.n_epochs, "rng": rng_state(gen), "best_val_elbo": best,
                           "history": history, "train_seconds": train_seconds,
                           "model_config": asdict(model.config), **(extra_checkpoint or {})}
                save_checkpoint(checkpoint_dir / "last.pt", payload)
                if improved:
                    save_checkpoint(checkpoint_dir / "best.pt", payload)
            if epoch == cfg.stop_after_epoch:
                log.info("stopping after epoch %d (trainer.stop_after_epoch); continue with trainer.resume", epoch)
                break
    metrics.update(train_seconds=train_seconds, epochs=epoch, steps=step, final_loss=metrics.pop("loss"),
                   history=history)
    metrics.pop("seconds")
    return metrics
