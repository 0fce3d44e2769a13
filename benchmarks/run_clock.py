"""This project's runs timed from outside, for benchmarks that set them beside other libraries
(``benchmarks/peers.py``): the wall seconds from the start of a run (its data, oracle, init and guide
warm-up included) to the end of the first evaluation whose Viterbi accuracy reaches a target, and where the
run's time went.

The end of each evaluation is timed by wrapping, for the run, the evaluation function the trainer calls
(:func:`timed_calls`; arguments and results pass unchanged), and the ends of the init and the guide warm-up
by timing the package's INFO lines (:func:`log_times`). Nothing in the package is modified.

Keys of the dicts returned: ``seconds_to_target`` (None if never reached), ``epoch_to_target`` (0 = the
evaluation after the init and guide warm-up), ``train_seconds_to_target`` (the trainer's own clock there:
init and steps, evaluations excluded), ``reached``, ``accuracy`` (``viterbi_accuracy`` of the model the run
ends with), ``epochs``, and :func:`where_time_goes`'s.
"""

from __future__ import annotations

import contextlib
import logging
import time
from unittest import mock


@contextlib.contextmanager
def timed_calls(module, name: str, calls: list):
    """``module.name`` wrapped for the block: every call appends (start, end, result), ``time.perf_counter``
    seconds, to ``calls``; its arguments and result pass unchanged."""
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        start = time.perf_counter()
        result = original(*args, **kwargs)
        calls.append((start, time.perf_counter(), result))
        return result

    with mock.patch.object(module, name, wrapped):
        yield calls


class _LogTimes(logging.Handler):
    """Collects (``time.perf_counter()`` at emission, message) of the records it is given."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((time.perf_counter(), record.getMessage()))

    def first(self, prefix: str, start: float) -> float | None:
        """Seconds from ``start`` to the first line that starts with ``prefix``, or None."""
        return next((t - start for t, line in self.lines if line.startswith(prefix)), None)


@contextlib.contextmanager
def log_times(name: str = "pyro_dssm"):
    """The INFO lines of logger ``name`` timed for the block (nothing printed; the level restored after)."""
    logger, handler = logging.getLogger(name), _LogTimes()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def to_target(start: float, evaluations: list, history: list[dict], target: float) -> dict:
    """From the timed evaluations of a run (one per history record: epoch 0, 1, ...): the first whose
    ``viterbi_accuracy`` reaches ``target``, its wall time since ``start`` and its trainer seconds."""
    if len(evaluations) != len(history):
        raise RuntimeError(f"{len(evaluations)} evaluations timed for {len(history)} history records")
    first = next((i for i, (_, _, m) in enumerate(evaluations) if m["viterbi_accuracy"] >= target), None)
    if first is None:
        return {"seconds_to_target": None, "epoch_to_target": None, "train_seconds_to_target": None,
                "reached": False}
    return {"seconds_to_target": evaluations[first][1] - start, "epoch_to_target": history[first]["epoch"],
            "train_seconds_to_target": history[first]["train_seconds"], "reached": True}


def where_time_goes(start: float, end: float, evaluations: list, history: list[dict], logged: _LogTimes) -> dict:
    """Where a run's wall time went, in seconds since ``start``: the end of the classical init
    (``init_end_seconds``, data included) and of the guide warm-up (``warmup_end_seconds``, the DSSM's),
    the start of the first evaluation; the whole run, its evaluations together, and the trainer's clock."""
    out = {"seconds_total": end - start, "init_end_seconds": logged.first("init (", start)}
    warmup = logged.first("guide warm-up", start)
    if warmup is not None:
        out["warmup_end_seconds"] = warmup
    return {**out, "seconds_to_first_evaluation": evaluations[0][0] - start,
            "seconds_evaluating": sum(e - s for s, e, _ in evaluations), "train_seconds": history[-1]["train_seconds"]}


def run_dssm(overrides: list[str], target: float) -> dict:
    """The DSSM: ``train_model(cfg, run_dir=None)`` on ``overrides`` (Hydra's syntax); seconds to ``target``
    Viterbi accuracy (module docstring) and where the run's time went."""
    import pyro_dssm.inference.trainer as trainer
    from pyro_dssm.api import compose_config
    from pyro_dssm.train import train_model

    cfg = compose_config(list(overrides))
    evaluations = []
    start = time.perf_counter()
    with timed_calls(trainer, "evaluate", evaluations), log_times() as logged:
        run = train_model(cfg, run_dir=None)
    end = time.perf_counter()
    m = run.metrics
    return {**to_target(start, evaluations, m["history"], target), "accuracy": m["viterbi_accuracy"],
            "guide_accuracy": m.get("val_accuracy"), "kept_epoch": m["best_epoch"], "epochs": m["epochs"],
            **where_time_goes(start, end, evaluations, m["history"], logged)}


def run_exact(overrides: list[str], target: float) -> dict:
    """The exact baseline: ``fit_baseline`` with the trainer's settings and ``baseline.*`` over them, on the
    data of ``overrides``; seconds to ``target`` and where the run's time went, as :func:`run_dssm`."""
    import pyro_dssm.inference.mle as mle
    from omegaconf import OmegaConf
    from pyro_dssm.api import compose_config
    from pyro_dssm.config import TrainerConfig, settings
    from pyro_dssm.io.tracking import Tracker
    from pyro_dssm.model.exact import ExactBaseline
    from pyro_dssm.train import _model_settings, load_data, seed_everything

    cfg = compose_config(list(overrides))
    baseline = OmegaConf.to_container(cfg.baseline, resolve=True)
    elbo = baseline.pop("elbo")
    trainer_cfg = settings(TrainerConfig, {**OmegaConf.to_container(cfg.trainer, resolve=True), **baseline,
                                           "device": "cpu"}, "trainer")
    evaluations = []
    start = time.perf_counter()
    with timed_calls(mle, "evaluate_hmm", evaluations), log_times() as logged:
        seed_everything(cfg.seed)
        data = load_data(cfg.data, cfg.seed)
        net = ExactBaseline(_model_settings(cfg, data.train.x.shape[-1]))
        m = mle.fit_baseline(net, data.train, data.val, trainer_cfg, Tracker(None), seed=cfg.seed, elbo=elbo)
    end = time.perf_counter()
    return {**to_target(start, evaluations, m["history"], target), "accuracy": m["viterbi_accuracy"],
            "epochs": m["epochs"], **where_time_goes(start, end, evaluations, m["history"], logged)}
