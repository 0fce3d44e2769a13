"""The SVI training loop: minibatches, temperature annealing, evaluation, checkpoints, and its faults.

A step whose loss or gradient norm is not finite is skipped (no optimiser
update) and counted; ``trainer.max_consecutive_skips`` of them in a row stop
training (:class:`~pyro_dssm.inference.faults.TrainingDiverged`) with the last good
checkpoint intact. A stop request (``stop()`` true, e.g. after SIGINT or
SIGTERM, :class:`~pyro_dssm.inference.faults.StopOnSignal`) finishes the current step,
writes ``last.pt`` with the position inside the epoch and raises
:class:`~pyro_dssm.inference.faults.Interrupted`; ``trainer.resume`` then continues
exactly where it stopped (same minibatches, same noise).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyro
import torch

from pyro_dssm.io.checkpoint import restore_rng_state, rng_state, save_checkpoint
from pyro_dssm.config.checks import is_int, is_number, raise_first
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.evaluation.evaluate import evaluate
from pyro_dssm.inference.faults import Interrupted, SkippedSteps, TrainingDiverged
from pyro_dssm.io.figures import training_figures
from pyro_dssm.inference.init import data_driven_init, warm_start_guide
from pyro_dssm.model.dssm import DSSM
from pyro_dssm.inference.objectives import OBJECTIVES, make_elbo, temperature_schedule
from pyro_dssm.io.outputs import remove_temporaries
from pyro_dssm.io.tracking import Tracker

if TYPE_CHECKING:
    from pyro_dssm.inference.distributed import DataParallel

log = logging.getLogger(__name__)

INITS = ("em", "kmeans", "random")


@dataclass
class TrainerConfig:
    """Optimisation settings (Hydra group ``trainer``)."""

    n_epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    lr_final_fraction: float = 0.1
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
    keep_best: bool = True
    resume: str | None = None
    stop_after_epoch: int | None = None
    max_consecutive_skips: int = 10
    distributed: bool = False

    def __post_init__(self):
        raise_first([
            (is_int(self.n_epochs, 1), f"trainer.n_epochs must be an integer >= 1, got {self.n_epochs!r}"),
            (is_int(self.batch_size, 1), f"trainer.batch_size must be an integer >= 1, got {self.batch_size!r}"),
            (is_number(self.lr) and self.lr > 0, f"trainer.lr must be a number > 0, got {self.lr!r}"),
            (is_number(self.lr_final_fraction) and 0 < self.lr_final_fraction <= 1,
             f"trainer.lr_final_fraction must be a number in (0, 1], got {self.lr_final_fraction!r}"),
            (self.objective in OBJECTIVES, f"trainer.objective must be one of {OBJECTIVES}, got {self.objective!r}"),
            (is_number(self.tau_init) and self.tau_init > 0, f"trainer.tau_init must be a number > 0, got {self.tau_init!r}"),
            (is_number(self.tau_min) and 0 < self.tau_min <= self.tau_init,
             f"trainer.tau_min must be in (0, tau_init={self.tau_init}], got {self.tau_min!r}"),
            (is_number(self.tau_anneal_fraction) and 0 <= self.tau_anneal_fraction <= 1,
             f"trainer.tau_anneal_fraction must be in [0, 1], got {self.tau_anneal_fraction!r}"),
            (is_number(self.grad_clip) and self.grad_clip > 0, f"trainer.grad_clip must be a number > 0, got {self.grad_clip!r}"),
            (is_number(self.init_stay_prob) and 0 < self.init_stay_prob < 1,
             f"trainer.init_stay_prob must be in (0, 1), got {self.init_stay_prob!r}"),
            (is_int(self.guide_warmup_steps, 0),
             f"trainer.guide_warmup_steps must be an integer >= 0, got {self.guide_warmup_steps!r}"),
            (is_int(self.init_restarts, 1), f"trainer.init_restarts must be an integer >= 1, got {self.init_restarts!r}"),
            (is_int(self.init_max_sequences, 1),
             f"trainer.init_max_sequences must be an integer >= 1, got {self.init_max_sequences!r}"),
            (is_int(self.init_em_iters, 0), f"trainer.init_em_iters must be an integer >= 0, got {self.init_em_iters!r}"),
            (self.init in INITS, f"trainer.init must be one of {INITS}, got {self.init!r}"),
            (is_int(self.figure_every, 0), f"trainer.figure_every must be an integer >= 0, got {self.figure_every!r}"),
            (isinstance(self.keep_best, bool), f"trainer.keep_best must be true or false, got {self.keep_best!r}"),
            (isinstance(self.distributed, bool), f"trainer.distributed must be true or false, got {self.distributed!r}"),
            (self.stop_after_epoch is None or is_int(self.stop_after_epoch, 1),
             f"trainer.stop_after_epoch must be null or an integer >= 1, got {self.stop_after_epoch!r}"),
            (is_int(self.max_consecutive_skips, 1),
             f"trainer.max_consecutive_skips must be an integer >= 1, got {self.max_consecutive_skips!r}"),
            (self.resume is None or isinstance(self.resume, str),
             f"trainer.resume must be null or a path, got {self.resume!r}"),
            (isinstance(self.validate_args, bool), f"trainer.validate_args must be true or false, got {self.validate_args!r}"),
            (self.device in ("auto", "cpu", "cuda") or (isinstance(self.device, str) and self.device.startswith("cuda:")),
             f"trainer.device must be auto, cpu, cuda or cuda:N, got {self.device!r}"),
        ])


@dataclass
class EpochProgress:
    """How far an epoch got: its minibatch order (N,) (sequence indices), batches done, and their finite losses."""

    order: torch.Tensor
    done: int = 0
    losses: list[float] = field(default_factory=list)
    tau: float | None = None

    def state_dict(self, batch_size: int) -> dict:
        return {"order": self.order.cpu(), "done": self.done, "losses": list(self.losses), "tau": self.tau,
                "batch_size": batch_size}

    @classmethod
    def from_state_dict(cls, state: dict) -> "EpochProgress":
        return cls(state["order"], state["done"], list(state["losses"]), state["tau"])


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
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"trainer.device={name!r}: there are only {torch.cuda.device_count()} CUDA devices")
    return device


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
              step: int, progress: EpochProgress | None = None, skips: SkippedSteps | None = None,
              stop: Callable[[], bool] | None = None, group: DataParallel | None = None,
              ) -> tuple[int, list[float], float | None]:
    """One pass over shuffled minibatches of x_all (N, T, D) / mask_all (N, T) (None: no padding).

    ``loss_fn(x, mask, step) -> (loss per valid step, extra scalars to log)``.
    Clips the gradient norm at ``cfg.grad_clip``; logs ``train/loss``,
    ``train/grad_norm`` and the extras per step. A step whose loss or gradient
    norm is not finite makes no update and is counted in ``skips`` (a fresh
    counter if None), which raises :class:`TrainingDiverged` after
    ``cfg.max_consecutive_skips`` in a row. ``progress`` continues a partly done
    epoch and is updated in place (None: a new order drawn from ``gen``);
    ``stop``, asked after every step, ends the epoch early when it returns
    true, leaving ``progress.done`` short of the number of batches. Returns the
    new step count, the epoch's finite losses and the last ``tau`` extra (None
    if the loss has none).
    With ``group`` (data-parallel, :mod:`pyro_dssm.inference.distributed`) this process
    computes its share of every minibatch; loss and gradient are those of the
    whole minibatch, on every process (so every process skips the same steps).
    """
    if progress is None:
        progress = EpochProgress(torch.randperm(x_all.shape[0], generator=gen))
    skips = SkippedSteps(cfg.max_consecutive_skips) if skips is None else skips
    # one host-to-device copy of the permutation per epoch, not one per step
    batches = progress.order.to(x_all.device).split(cfg.batch_size)
    for idx in batches[progress.done:]:
        optim.zero_grad()
        if group is None:
            loss, extras = loss_fn(x_all[idx], None if mask_all is None else mask_all[idx], step)
            loss.backward()
        else:
            loss, extras = group.backward(module, loss_fn, x_all, mask_all, idx, step)
        grad_norm = torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        # one host sync per step, for the log and the finiteness test together
        loss_value, norm_value = torch.stack([loss.detach(), grad_norm.to(loss.dtype)]).tolist()
        finite = math.isfinite(loss_value) and math.isfinite(norm_value)
        if finite:
            optim.step()
            progress.losses.append(loss_value)
        step += 1
        progress.done += 1
        progress.tau = extras.get("tau", progress.tau)
        tracker.scalars({"loss": loss_value, "grad_norm": norm_value, **extras}, step, "train/")
        skips.record(finite, step, loss_value, norm_value, tracker)
        if stop is not None and stop():
            break
    return step, progress.losses, progress.tau


def check_resume(resume: dict, cfg: TrainerConfig, n_train: int) -> None:
    """ValueError when checkpoint ``resume`` cannot continue under ``cfg`` with ``n_train`` training sequences."""
    if resume["epoch"] + 1 > cfg.n_epochs:
        raise ValueError(f"trainer.resume: the checkpoint is at epoch {resume['epoch']}, "
                         f"trainer.n_epochs={cfg.n_epochs} leaves nothing to train")
    progress = resume.get("progress")
    if progress is not None and progress["batch_size"] != cfg.batch_size:
        raise ValueError(f"trainer.resume: the checkpoint stopped inside an epoch with trainer.batch_size="
                         f"{progress['batch_size']}, this run has {cfg.batch_size}; resume with the same batch size")
    if progress is not None and len(progress["order"]) != n_train:
        raise ValueError(f"trainer.resume: the checkpoint stopped inside an epoch over {len(progress['order'])} "
                         f"training sequences, this run has {n_train}; resume with the same data")


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
    stop: Callable[[], bool] | None = None,
    group: DataParallel | None = None,
) -> dict[str, float]:
    """Train ``model`` by SVI on ``train``; evaluate on ``val`` after the init and every epoch.

    Returns the last epoch's validation metrics plus ``train_seconds`` (init and
    SVI steps, evaluation excluded), ``epochs``, ``steps``, ``final_loss``
    (negative ELBO per valid time step), ``skipped_steps`` (non-finite steps,
    see :func:`sgd_epoch`) and ``history``: one record per evaluation (epoch 0 =
    after the init) with ``epoch``, ``step``, ``train_seconds`` and the
    validation metrics.

    Every epoch writes ``checkpoint_dir/last.pt`` and, when the validation ELBO
    improves, ``best.pt`` (whose ``model`` is the best evaluation's weights,
    epoch 0 included; resume from ``last.pt``): model, optimiser, epoch, step (the temperature
    schedule is a function of it), random states, best ELBO and history, plus
    ``extra_checkpoint``. ``stop``, asked after every step, ends training early:
    ``last.pt`` then also holds the epoch's minibatch order and how many of its
    batches are done (``progress``), and :class:`Interrupted` is raised.
    ``resume``, such a checkpoint loaded, continues exactly where it stopped
    (same minibatches, same Gumbel noise), also from inside an epoch.

    With ``cfg.keep_best`` the model ends with the weights of the evaluation
    with the best validation ELBO (epoch 0, the initialised model, included) and
    the returned metrics are that evaluation's, ``best_epoch`` says which: early
    stopping by a label-free criterion, which guards against a late drift of the
    relaxed objective (README, Convergence).
    ``true_transition`` (K, K), if known, is drawn beside the learned one.

    ``train.x`` may also be rows streamed from disk
    (:class:`pyro_dssm.data.streaming.NpyRows`): minibatches are read when used, and
    the init and guide warm-up see ``cfg.init_max_sequences`` random sequences.
    With ``group`` (data-parallel), the init runs on rank 0 and is broadcast,
    each process trains on its share of every minibatch, and validation runs on
    rank 0 and is broadcast (see :mod:`pyro_dssm.inference.distributed`); pass
    ``checkpoint_dir`` on rank 0 only.
    """
    if resume is not None:
        check_resume(resume, cfg, len(train))
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
    step, metrics, first_epoch = 0, {}, 1
    skips, progress = SkippedSteps(cfg.max_consecutive_skips), None

    def validate() -> dict[str, float]:
        # once, on rank 0, over the whole validation set: the numbers of a single-process run
        metrics = evaluate(model, val, seed=seed) if main else None
        return metrics if group is None else group.broadcast_object(metrics)

    if resume is None:
        history = [{"epoch": 0, "step": 0, "train_seconds": train_seconds, **validate()}]
        best, best_epoch = history[0]["val_elbo_per_step"], 0
        best_state = _cpu_copy(model.state_dict())
    else:
        model.load_state_dict(resume["model"])
        optim.load_state_dict(resume["optimizer"])
        restore_rng_state(resume["rng"], gen)
        if group is not None and not main:  # the checkpoint holds rank 0's noise stream; others draw afresh
            torch.manual_seed(seed + group.rank + group.world_size * resume["step"])
        step, first_epoch, best = resume["step"], resume["epoch"] + 1, resume["best_val_elbo"]
        best_epoch, best_state = resume["best_epoch"], resume["best_model"]
        history, train_seconds = list(resume["history"]), resume["train_seconds"]
        skips.total, skips.in_a_row = resume.get("skipped_steps", 0), resume.get("skips_in_a_row", 0)
        if "progress" in resume:
            progress = EpochProgress.from_state_dict(resume["progress"])
        if resume["n_epochs"] != cfg.n_epochs:
            log.warning("resuming a %d-epoch run as a %d-epoch run: the temperature schedule changes",
                        resume["n_epochs"], cfg.n_epochs)
        log.info("resuming at step %d (epoch %d, batch %d of %d)", step, first_epoch,
                 0 if progress is None else progress.done, steps_per_epoch)
    total_steps = cfg.n_epochs * steps_per_epoch
    # the schedule lives on the device: one copy here instead of one per step
    taus = temperature_schedule(total_steps, cfg.tau_init, cfg.tau_min, anneal_steps, device)
    logged_taus = taus.tolist()  # the same numbers on the host, for the log

    def svi_loss(x, mask, step):
        # exponential learning-rate decay to lr * lr_final_fraction at the last step; a function
        # of the step alone, so resuming needs no scheduler state (optim.step follows this call)
        for param_group in optim.param_groups:
            param_group["lr"] = cfg.lr * cfg.lr_final_fraction ** (step / total_steps)
        loss = elbo.differentiable_loss(model.model, model.guide, x, mask, taus[step]) / n_valid(x, mask)
        return loss, {"tau": logged_taus[step]}

    last = None if checkpoint_dir is None else checkpoint_dir / "last.pt"
    saved_step = None  # the step last.pt holds, once this run has written it

    def save(epoch: int, progress: EpochProgress | None = None, also_best: bool = False) -> None:
        nonlocal saved_step
        if checkpoint_dir is None:
            return
        payload = {"model": model.state_dict(), "optimizer": optim.state_dict(), "epoch": epoch, "step": step,
                   "n_epochs": cfg.n_epochs, "rng": rng_state(gen), "best_val_elbo": best, "best_epoch": best_epoch,
                   "best_model": best_state, "history": history,
                   "train_seconds": train_seconds, "skipped_steps": skips.total, "skips_in_a_row": skips.in_a_row,
                   "model_config": asdict(model.config), **(extra_checkpoint or {})}
        if progress is not None:
            payload["progress"] = progress.state_dict(cfg.batch_size)
        save_checkpoint(last, payload)
        if also_best:
            save_checkpoint(checkpoint_dir / "best.pt", {**payload, "model": best_state, "epoch": best_epoch})
        saved_step = step

    if checkpoint_dir is not None:
        for path in remove_temporaries(checkpoint_dir):
            log.info("removed %s, left by an interrupted checkpoint write", path)
    with pyro.validation_enabled(cfg.validate_args):
        for epoch in range(first_epoch, cfg.n_epochs + 1):
            progress = progress or EpochProgress(torch.randperm(len(train), generator=gen))
            epoch_start = time.perf_counter()
            try:
                step, losses, tau = sgd_epoch(model, optim, x_all, mask_all, svi_loss, cfg, gen, tracker, step,
                                              progress, skips, stop, group)
            except TrainingDiverged as exc:
                kept = (f"{last} holds step {saved_step}" if saved_step is not None else
                        "the checkpoint it resumed from is unchanged" if resume is not None else
                        "no checkpoint was written yet")
                raise TrainingDiverged(f"{exc}; {kept}") from None
            seconds = time.perf_counter() - epoch_start
            train_seconds += seconds
            if progress.done < steps_per_epoch:  # stopped inside the epoch
                save(epoch - 1, progress)
                raise Interrupted(last, step, f"epoch {epoch}, batch {progress.done} of {steps_per_epoch}")
            progress = None
            metrics = validate()
            history.append({"epoch": epoch, "step": step, "train_seconds": train_seconds, **metrics})
            metrics.update(loss=sum(losses) / len(losses) if losses else math.nan, tau=tau, seconds=seconds)
            tracker.scalars(metrics, epoch, "val/")
            tracker.epoch_line(epoch, cfg.n_epochs, metrics)
            if tracker.enabled and cfg.figure_every and (epoch % cfg.figure_every == 0 or epoch == cfg.n_epochs):
                for tag, fig in training_figures(model, val, true_transition).items():
                    tracker.figure(tag, fig, epoch)
            improved = metrics["val_elbo_per_step"] > best
            if improved:
                best, best_epoch, best_state = metrics["val_elbo_per_step"], epoch, _cpu_copy(model.state_dict())
            save(epoch, also_best=improved or epoch == 1)  # at epoch 1 the best may still be the init
            if epoch == cfg.stop_after_epoch:
                log.info("stopping after epoch %d (trainer.stop_after_epoch); continue with trainer.resume", epoch)
                break
            if stop is not None and stop() and epoch < cfg.n_epochs:
                raise Interrupted(last, step, f"end of epoch {epoch}")
    final_loss, tau = metrics.pop("loss"), metrics.pop("tau")
    metrics.pop("seconds")
    if cfg.keep_best and epoch == cfg.n_epochs and best_epoch != epoch:
        log.info("restoring the weights of epoch %d (best validation ELBO %.4f; last epoch %.4f)",
                 best_epoch, best, metrics["val_elbo_per_step"])
        model.load_state_dict(best_state)
        metrics = {k: v for k, v in history[best_epoch].items() if k not in ("epoch", "step", "train_seconds")}
    metrics.update(train_seconds=train_seconds, epochs=epoch, steps=step, final_loss=final_loss, tau=tau,
                   skipped_steps=skips.total, best_epoch=best_epoch, history=history)
    return metrics


def _cpu_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
