"""Maximum-likelihood training of the exact baseline: minibatch Adam on -log p(X)."""

from __future__ import annotations

import math
import time

import torch

from pyro_dssm.model.exact import ExactBaseline
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.evaluation.evaluate import evaluate_hmm
from pyro_dssm.inference.faults import SkippedSteps
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.inference.trainer import TrainerConfig, device_mask, initialise, n_valid, sgd_epoch


def fit_baseline(
    net: ExactBaseline, train: SequenceData, val: SequenceData, cfg: TrainerConfig, tracker: Tracker, seed: int = 0
) -> dict:
    """Maximum-likelihood training of ``net`` by minibatch Adam on -log p(X) per valid step.

    Uses the trainer's settings (``n_epochs``, ``batch_size``, ``lr``,
    ``grad_clip``, the ``init*`` ones; the temperature and guide ones do not
    apply). Returns the last epoch's :func:`~pyro_dssm.evaluation.evaluate.evaluate_hmm`
    metrics plus ``train_seconds`` (evaluation excluded), ``epochs``, ``steps``
    and ``history`` (one record per evaluation; epoch 0 = after the init).
    """
    device = next(net.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    clock = time.perf_counter()
    initialise(net, train.x.to(device), train.mask.to(device), cfg, gen)
    x_all, mask_all = train.x.to(device), device_mask(train, device)
    elbo = net.elbo()
    optim = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    def nll(x, mask, step):
        return elbo.differentiable_loss(net.model, net.guide, x, mask) / n_valid(x, mask), {}

    train_seconds = time.perf_counter() - clock
    history = [{"epoch": 0, "step": 0, "train_seconds": train_seconds, **evaluate_hmm(net, val)}]
    step, skips = 0, SkippedSteps(cfg.max_consecutive_skips)  # non-finite steps in a row, across epochs
    for epoch in range(1, cfg.n_epochs + 1):
        epoch_start = time.perf_counter()
        step, losses, _ = sgd_epoch(net, optim, x_all, mask_all, nll, cfg, gen, tracker, step, skips=skips)
        train_seconds += time.perf_counter() - epoch_start
        metrics = evaluate_hmm(net, val)
        history.append({"epoch": epoch, "step": step, "train_seconds": train_seconds, **metrics})
        tracker.scalars(metrics, epoch, "val/")
        loss = sum(losses) / len(losses) if losses else math.nan
        tracker.epoch_line(epoch, cfg.n_epochs, {"loss": loss, **metrics})
    return {**history[-1], "final_loss": loss, "epochs": cfg.n_epochs, "steps": step,
            "skipped_steps": skips.total, "history": history}
