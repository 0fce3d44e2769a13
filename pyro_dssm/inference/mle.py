"""Maximum-likelihood training of the exact baseline: minibatch Adam on -log p(X), by the same loop as SVI."""

from __future__ import annotations

import time

import torch

from pyro_dssm.config import TrainerConfig
from pyro_dssm.config.checks import BASELINE_ELBOS
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.evaluation.evaluate import evaluate_hmm
from pyro_dssm.inference.batches import n_valid
from pyro_dssm.inference.faults import SkippedSteps
from pyro_dssm.inference.hooks import Validation
from pyro_dssm.inference.loop import SGDStep, train_epochs
from pyro_dssm.inference.batches import device_mask
from pyro_dssm.inference.init import initialise
from pyro_dssm.inference.random_starts import best_random_start
from pyro_dssm.inference.state import TrainingState
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.model.exact import ExactBaseline


def fit_baseline(
    net: ExactBaseline, train: SequenceData, val: SequenceData, cfg: TrainerConfig, tracker: Tracker, seed: int = 0,
    elbo: str = "forward",
) -> dict:
    """Maximum-likelihood training of ``net`` by minibatch Adam on -log p(X) per valid step.

    Uses the trainer's settings (``n_epochs``, ``batch_size``, ``lr``,
    ``grad_clip``, ``max_consecutive_skips``, the ``init*`` and ``random_start_*`` ones; the learning
    rate stays constant, and the temperature, guide, checkpoint and keep-best
    ones do not apply). Returns the last epoch's
    :func:`~pyro_dssm.evaluation.evaluate.evaluate_hmm` metrics plus
    ``train_seconds`` (evaluation excluded), ``epochs``, ``steps``,
    ``final_loss``, ``skipped_steps``, ``history`` (one record per
    evaluation; epoch 0 = after the init) and, with ``init=random``, what its random starts did
    (:func:`~pyro_dssm.inference.random_starts.best_random_start`).

    ``elbo`` (``baseline.elbo``): ``forward`` trains :meth:`ExactBaseline.model` (log p(X) by the forward
    algorithm, a ``pyro.factor``) with ``Trace_ELBO``; ``enum`` trains :meth:`ExactBaseline.enum_model` (one
    ``Categorical`` site per step) with ``TraceEnum_ELBO``. Both losses are -log p(X), so both give the same
    trajectory (``tests/test_baseline.py``); ``enum`` is the textbook form and about ten times slower.
    """
    if elbo not in BASELINE_ELBOS:
        raise ValueError(f"baseline.elbo must be one of {BASELINE_ELBOS}, got {elbo!r}")
    device = next(net.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    clock = time.perf_counter()
    initialise(net, train.x.to(device), train.mask.to(device), cfg, gen)
    loss, model = (net.enum_elbo(), net.enum_model) if elbo == "enum" else (net.elbo(), net.model)

    def nll(x, mask, step):
        return loss.differentiable_loss(model, net.guide, x, mask) / n_valid(x, mask), {}

    x, mask = train.x.to(device), device_mask(train, device)  # once, for the random starts and the run
    started = {}
    if cfg.init == "random" and cfg.init_restarts > 1:  # scored by exact validation log p(X)
        started = best_random_start(net, cfg, gen, x, mask, nll, lambda lr: torch.optim.Adam(net.parameters(), lr=lr),
                                    lambda: evaluate_hmm(net, val)["val_loglik_per_step"])
    step = SGDStep(net, nll, x, mask, cfg.grad_clip, tracker)
    state = TrainingState(torch.optim.Adam(net.parameters(), lr=cfg.lr), gen, SkippedSteps(cfg.max_consecutive_skips))
    state.train_seconds = time.perf_counter() - clock
    validation = Validation(lambda: evaluate_hmm(net, val), tracker, cfg.n_epochs, log_training=False)
    validation.record(state)
    last = train_epochs(state, step, cfg.n_epochs, cfg.batch_size, [validation])
    return {**state.history[-1], "final_loss": last.mean_loss, "epochs": state.epoch, "steps": state.step,
            "skipped_steps": state.skips.total, "history": state.history, **started}
