"""SVI training of the DSSM: the relaxed ELBO with temperature annealing, run by the loop of
:mod:`pyro_dssm.inference.loop` with its hooks (evaluation, figures, keep-best, checkpoints, stop requests).

Every epoch writes ``last.pt`` and, when the validation ELBO improves,
``best.pt`` (whose ``model`` is the best evaluation's weights, epoch 0
included; resume from ``last.pt``): the model, the
:class:`~pyro_dssm.inference.state.TrainingState` (optimiser, learning-rate
scheduler, epoch, step (the temperature schedule is a function of it), random
states, best ELBO, history), ``n_epochs`` and ``model_config``.

A step whose loss or gradient norm is not finite is skipped (no optimiser
update) and counted; ``trainer.max_consecutive_skips`` of them in a row stop
training (:class:`~pyro_dssm.inference.faults.TrainingDiverged`) with the last good
checkpoint intact. A stop request (``stop()`` true, e.g. after SIGINT or
SIGTERM, :class:`~pyro_dssm.inference.faults.StopOnSignal`) finishes the current step,
writes ``last.pt`` with the position inside the epoch (the minibatch order and
how many of its batches are done, ``progress``) and raises
:class:`~pyro_dssm.inference.faults.Interrupted`; ``trainer.resume`` then continues
exactly where it stopped (same minibatches, same Gumbel noise, same learning rate).

``trainer.keep_best`` ends training with the weights of the evaluation with
the best validation ELBO (epoch 0, the initialised model, included) and
reports that evaluation's metrics, ``best_epoch`` saying which: early stopping
by a label-free criterion (:func:`~pyro_dssm.evaluation.evaluate.discrete_elbo`, each
step's reconstruction averaged over c_t), which guards against a dip or drift of SVI
below its start (docs/convergence.md).

Streamed training data (rows read from disk when used): the init and guide
warm-up see ``trainer.init_max_sequences`` random sequences. Data-parallel: the
init runs on rank 0 and is broadcast, each process trains on its share of
every minibatch, and validation runs on rank 0 and is broadcast.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pyro
import torch

from pyro_dssm.config import TrainerConfig
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.evaluation.evaluate import evaluate
from pyro_dssm.inference.batches import EpochProgress, device_mask, n_valid
from pyro_dssm.inference.distributed import DataParallel
from pyro_dssm.inference.faults import SkippedSteps, TrainingDiverged
from pyro_dssm.inference.hooks import Checkpoints, EarlyStopping, Figures, KeepBest, StopRequest, Validation
from pyro_dssm.inference.loop import LossFn, SGDStep, train_epochs
from pyro_dssm.inference.objectives import make_elbo, temperature_schedule
from pyro_dssm.inference.init import initialise
from pyro_dssm.inference.random_starts import best_random_start
from pyro_dssm.inference.schedule import exponential_decay
from pyro_dssm.inference.state import TrainingState
from pyro_dssm.inference.warm_start import warm_start_guide
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.model.dssm import DSSM

log = logging.getLogger(__name__)

RECORD_KEYS = ("epoch", "step", "train_seconds")  # the keys of a history record that are not metrics
# what the start reports (best_random_start's; the context fit's log p(X) before / after), kept in checkpoints
STARTS_KEYS = ("random_start_scores", "random_start", "random_start_seeds", "init_context_loglik_before",
               "init_context_loglik_after")


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


def check_resume(resume: dict, cfg: TrainerConfig, n_train: int) -> None:
    """ValueError when checkpoint ``resume`` cannot continue under ``cfg`` with ``n_train`` training sequences."""
    if resume.get("stopped_early") is not None:
        raise ValueError(f"trainer.resume: the run stopped early after epoch {resume['stopped_early']} "
                         "(trainer.patience): it is finished")
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


def guide_lr_factor(model: DSSM, cfg: TrainerConfig) -> float:
    """``trainer.guide_lr_factor``, with ``auto`` resolved: 1 where the guide starts at the exact posterior of a
    data-driven init (init ``em`` / ``kmeans``, and a guide whose evidence holds the model's messages or that the
    guide warm-up fits to that posterior, ``trainer.guide_warmup_steps`` > 0), else 3.

    A guide that starts far from the posterior (a random or no init, no warm-up) must catch up with the model: 3x
    its rate. One that starts at it only has to follow a model that barely moves: at 3x its residual learned the
    objective's noise and its greedy decode drifted (``data=hard`` seed 3: 0.971 x oracle at epoch 10 against 0.989
    at 1x; ``data=switching_ar`` seed 3, a warmed-up guide at 0.998 x oracle after the init: 0.970 against 0.996;
    benchmarks/RESULTS.md, "Early stopping" and "The guide's rate after its warm-up").
    """
    if cfg.guide_lr_factor != "auto":
        return float(cfg.guide_lr_factor)
    at_posterior = model.uses_messages or cfg.guide_warmup_steps > 0
    return 1.0 if cfg.init in ("em", "kmeans") and at_posterior else 3.0


def _parameter_groups(model: DSSM, cfg: TrainerConfig) -> list[dict]:
    """Adam's groups: the generative networks at ``lr``, the guide at ``lr *`` :func:`guide_lr_factor`.

    Two time scales: the guide is the inner problem (inference for the current model), so it
    moves faster and the model learns from a guide that has caught up with it (measured in
    benchmarks/RESULTS.md). In ``model.parameters()`` order, which old checkpoints' optimiser
    states follow (:func:`pyro_dssm.inference.state.regroup`).
    """
    everything = list(model.parameters())
    guide = list(model.posterior.parameters())
    generative = everything[:len(everything) - len(guide)]
    if [id(p) for p in generative + guide] != [id(p) for p in everything]:
        raise RuntimeError("the guide's parameters must come after the generative ones in model.parameters()")
    return [{"params": generative, "lr": cfg.lr}, {"params": guide, "lr": cfg.lr * guide_lr_factor(model, cfg)}]


def fit(model: DSSM, train: SequenceData, val: SequenceData, cfg: TrainerConfig, tracker: Tracker, seed: int = 0,
        checkpoint_dir: Path | None = None, extra_checkpoint: dict | None = None, resume: dict | None = None,
        true_transition: torch.Tensor | None = None, stop: Callable[[], bool] | None = None,
        group: DataParallel | None = None, return_checkpoint: bool = False) -> dict | tuple[dict, dict]:
    """Train ``model`` by SVI on ``train``; evaluate on ``val`` after the init and every ``cfg.val_every`` epochs.

    Returns the last epoch's validation metrics plus ``train_seconds`` (init and
    SVI steps, evaluation excluded), ``epochs``, ``steps``, ``final_loss``
    (negative ELBO per valid time step), ``skipped_steps``, ``best_epoch`` and
    ``history``: one record per evaluation (epoch 0 = after the init, then every ``val_every``-th and the last) with
    ``epoch``, ``step``, ``train_seconds`` and the validation metrics; ``early_stop_epoch`` (the epoch after
    which ``trainer.patience`` ended the run, or None); with ``trainer.init=random``
    the random starts' ``random_start_scores`` and ``random_start`` (the one kept). With
    ``cfg.keep_best`` the model ends with the weights of the best evaluation
    and the metrics are its (module docstring). Checkpoints go to
    ``checkpoint_dir`` (None: none), with ``extra_checkpoint``; ``resume`` (a
    loaded checkpoint) continues one; ``stop`` is asked after every step.
    ``true_transition`` (K, K), if known, is drawn beside the learned one. ``train.x`` may be rows streamed from
    disk (:class:`pyro_dssm.data.streaming.NpyRows`). ``group``: data-parallel (:mod:`pyro_dssm.inference.distributed`),
    ``checkpoint_dir`` on rank 0 only. ``return_checkpoint``: ``(metrics, what last.pt holds at the end)``.
    """
    if resume is not None:
        check_resume(resume, cfg, len(train))
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    clock = time.perf_counter()
    if resume is None:
        started = _starting_point(model, train, val, cfg, gen, group, seed)
    else:  # what the random starts did, as the checkpoint recorded it
        started = {k: resume[k] for k in STARTS_KEYS if k in resume}
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    optim = torch.optim.Adam(_parameter_groups(model, cfg))
    state = TrainingState(optim, gen, SkippedSteps(cfg.max_consecutive_skips),
                          exponential_decay(optim, cfg.lr_final_fraction, cfg.n_epochs * steps_per_epoch))
    sgd = SGDStep(model, _svi_loss(model, cfg, steps_per_epoch, device), train.x.to(device),
                  device_mask(train, device), cfg.grad_clip, tracker, group)
    state.train_seconds = time.perf_counter() - clock
    validation = Validation(_validate(model, val, seed, group), tracker, cfg.n_epochs, every=cfg.val_every)
    best = KeepBest(model)
    checkpoints = Checkpoints(checkpoint_dir, model, cfg.n_epochs, asdict(model.config),
                              {**(extra_checkpoint or {}), **started})
    if resume is None:
        validation.record(state)
        best.mark(state)  # the initialised model is the best so far, whatever its ELBO
    else:
        _resume(model, state, resume, cfg, seed, group, steps_per_epoch)
    last_epoch = _last_epoch(cfg, state.epoch)
    hooks = [validation, Figures(model, val, tracker, cfg.figure_every, cfg.n_epochs, true_transition), best,
             *_early_stopping(cfg, steps_per_epoch), checkpoints]
    if stop is not None:
        hooks.append(StopRequest(stop, checkpoints, last_epoch))
    with pyro.validation_enabled(cfg.validate_args):
        try:
            last = train_epochs(state, sgd, last_epoch, cfg.batch_size, hooks)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{exc}; {checkpoints.kept(resumed=resume is not None)}") from None
    if state.epoch == cfg.stop_after_epoch:
        log.info("stopping after epoch %d (trainer.stop_after_epoch); continue with trainer.resume", state.epoch)
    metrics = {**_final_metrics(state, last, cfg, best), **started}  # the model has its final weights now
    return (metrics, checkpoints.payload(state)) if return_checkpoint else metrics


def _early_stopping(cfg: TrainerConfig, steps_per_epoch: int) -> list[EarlyStopping]:
    """With ``trainer.patience``: the hook, counting from the epoch the temperature annealing ends; else none."""
    if cfg.patience is None:
        return []
    annealed = math.ceil(int(cfg.tau_anneal_fraction * cfg.n_epochs * steps_per_epoch) / steps_per_epoch)
    return [EarlyStopping(cfg.patience, cfg.patience_tolerance, annealed)]


def _starting_point(model: DSSM, train: SequenceData, val: SequenceData, cfg: TrainerConfig, gen: torch.Generator,
                group: DataParallel | None, seed: int) -> dict:
    """Data-driven init (or the best of random starts) and guide warm-up, once: on rank 0, whose parameters and
    minibatch order all ranks take. Returns what the start reports (:data:`STARTS_KEYS`: the context fit's log p(X)
    before and after, the random starts' scores and the one kept), or {}."""
    started = {}
    device = next(model.parameters()).device
    if group is None or group.is_main:
        if isinstance(train.x, torch.Tensor):
            x, mask = train.x.to(device), train.mask.to(device)
        else:  # streamed from disk: the init sees a random sample that fits in memory
            sample = train.subset(torch.randperm(len(train), generator=gen)[: cfg.init_max_sequences])
            x, mask = sample.x.to(device), sample.mask.to(device)
        init = initialise(model, x, mask, cfg, gen)
        started = {k: init[k] for k in STARTS_KEYS if k in init}
        if cfg.init == "random" and cfg.init_restarts > 1:
            started = _random_starts(model, x, mask, val, cfg, gen, seed)
        if cfg.guide_warmup_steps > 0 and model.uses_messages:
            # the guide's logits are the exact conditionals plus a residual that starts at zero: the warm-up's
            # target already, where its gradient is zero (Adam would only turn rounding into steps)
            log.info("guide warm-up skipped: the guide starts at the exact posterior of the initial model (its "
                     "evidence holds the backward messages, model.guide_messages)")
        elif cfg.guide_warmup_steps > 0:
            ce, taken = warm_start_guide(model, x, mask, gen, steps=cfg.guide_warmup_steps, batch_size=cfg.batch_size,
                                         patience=cfg.patience)
            log.info("guide warm-up: cross-entropy to the exact posterior %.4f nats/step after %d of %d steps%s", ce,
                     taken, cfg.guide_warmup_steps, " (stopped: it no longer fell)" if taken < cfg.guide_warmup_steps
                     else "")
    if group is not None:
        group.broadcast_module(model)
        group.broadcast_generator(gen)
        started = group.broadcast_object(started)
    return started


def _random_starts(model: DSSM, x: torch.Tensor, mask: torch.Tensor, val: SequenceData, cfg: TrainerConfig,
                   gen: torch.Generator, seed: int) -> dict:
    """:func:`~pyro_dssm.inference.random_starts.best_random_start` by SVI, scored by the discrete validation ELBO.

    Each start runs the run's objective with its own temperature schedule over ``trainer.random_start_epochs``
    epochs and the run's two parameter groups at ``trainer.random_start_lr``."""
    stage = replace(cfg, n_epochs=cfg.random_start_epochs, stop_after_epoch=None)
    loss = _svi_loss(model, stage, math.ceil(len(x) / cfg.batch_size), x.device)
    return best_random_start(model, cfg, gen, x, None if bool(mask.all()) else mask, loss,
                             lambda lr: torch.optim.Adam(_parameter_groups(model, replace(cfg, lr=lr))),
                             lambda: evaluate(model, val, seed=seed)["val_elbo_per_step"])


def _svi_loss(model: DSSM, cfg: TrainerConfig, steps_per_epoch: int, device: torch.device) -> LossFn:
    """The loss of a step: the relaxed negative ELBO per valid step at that step's temperature."""
    elbo = make_elbo(cfg.objective)
    anneal_steps = int(cfg.tau_anneal_fraction * cfg.n_epochs * steps_per_epoch)
    # the schedule lives on the device: one copy here instead of one per step
    taus = temperature_schedule(cfg.n_epochs * steps_per_epoch, cfg.tau_init, cfg.tau_min, anneal_steps, device)
    logged_taus = taus.tolist()  # the same numbers on the host, for the log

    def svi_loss(x: torch.Tensor, mask: torch.Tensor | None, step: int):
        loss = elbo.differentiable_loss(model.model, model.guide, x, mask, taus[step]) / n_valid(x, mask)
        return loss, {"tau": logged_taus[step]}

    return svi_loss


def _validate(model: DSSM, val: SequenceData, seed: int, group: DataParallel | None) -> Callable[[], dict]:
    def validate() -> dict[str, float]:
        # once, on rank 0, over the whole validation set: the numbers of a single-process run
        metrics = evaluate(model, val, seed=seed) if group is None or group.is_main else None
        return metrics if group is None else group.broadcast_object(metrics)

    return validate


def _resume(model: DSSM, state: TrainingState, resume: dict, cfg: TrainerConfig, seed: int,
            group: DataParallel | None, steps_per_epoch: int) -> None:
    """Continue from checkpoint ``resume``: the model, then the training state, random streams included."""
    model.load_state_dict(resume["model"])
    state.load_state_dict(resume)
    if group is not None and not group.is_main:  # the checkpoint holds rank 0's noise stream; others draw afresh
        torch.manual_seed(seed + group.rank + group.world_size * resume["step"])
    if resume["n_epochs"] != cfg.n_epochs:
        log.warning("resuming a %d-epoch run as a %d-epoch run: the temperature and learning-rate schedules change",
                    resume["n_epochs"], cfg.n_epochs)
    if state.scheduler.base_lrs != [cfg.lr]:
        log.warning("resuming a run started with trainer.lr=%g: its learning-rate schedule continues, "
                    "trainer.lr=%g is not used", state.scheduler.base_lrs[0], cfg.lr)
    log.info("resuming at step %d (epoch %d, batch %d of %d)", state.step, state.epoch + 1,
             0 if state.progress is None else state.progress.done, steps_per_epoch)


def _last_epoch(cfg: TrainerConfig, epoch: int) -> int:
    """The epoch this run ends after: ``trainer.stop_after_epoch`` if it is still ahead, else the last one."""
    stop_after = cfg.stop_after_epoch
    return stop_after if stop_after is not None and epoch < stop_after <= cfg.n_epochs else cfg.n_epochs


def _final_metrics(state: TrainingState, last: EpochProgress, cfg: TrainerConfig, best: KeepBest) -> dict:
    """The last evaluation's metrics, or with ``cfg.keep_best`` the best one's (its weights restored), and totals."""
    chosen = state.history[-1]
    finished = state.epoch == cfg.n_epochs or state.stopped_early is not None
    if cfg.keep_best and finished and state.best_epoch != state.epoch:
        log.info("restoring the weights of epoch %d (best validation ELBO %.4f; last epoch %.4f)",
                 state.best_epoch, state.best_val_elbo, chosen["val_elbo_per_step"])
        best.restore(state)
        chosen = next(record for record in state.history if record["epoch"] == state.best_epoch)
    metrics = {k: v for k, v in chosen.items() if k not in RECORD_KEYS}
    metrics.update(train_seconds=state.train_seconds, epochs=state.epoch, steps=state.step,
                   final_loss=last.mean_loss, tau=last.tau, skipped_steps=state.skips.total,
                   best_epoch=state.best_epoch, early_stop_epoch=state.stopped_early, history=state.history)
    return metrics
