"""Early stopping (trainer.patience): the rule by hand, a run that stops, reports it, keeps its best weights,
resumes to the same stop, and refuses to be resumed once finished."""

import json

import pytest

import pyro_dssm
from pyro_dssm.inference.hooks import epochs_without_improvement
from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.train import train

from .helpers import TINY, compose_config

FAST = ["trainer.init=none", "trainer.guide_warmup_steps=5", "trainer.figure_every=0", "trainer.device=cpu", "seed=5"]


def history(*elbos):
    return [{"epoch": e, "val_elbo_per_step": v} for e, v in enumerate(elbos)]


def test_epochs_without_improvement_by_hand():
    assert epochs_without_improvement(history(-10.0), 1e-4) == 0
    assert epochs_without_improvement(history(-10.0, -9.0, -9.5, -9.2), 1e-4) == 2  # best at epoch 1
    # -8.9995 beats -9.0 by 0.0005 < 1e-4 x 9 = 0.0009: no improvement; -8.99 does
    assert epochs_without_improvement(history(-10.0, -9.0, -8.9995), 1e-4) == 1
    assert epochs_without_improvement(history(-10.0, -9.0, -8.99), 1e-4) == 0
    assert epochs_without_improvement(history(2.0, 2.5, 2.6), 0.1) == 1  # positive ELBOs: 2.6 < 2.5 + 0.25


def run(tmp_path, name, *extra):
    """Six epochs whose annealing ends at epoch 3; a tolerance of 1000% means no epoch after the start improves."""
    overrides = [*TINY, *FAST, "trainer.n_epochs=6", "trainer.patience=2", "trainer.patience_tolerance=10", *extra]
    return train(compose_config(overrides), tmp_path / name)


def test_a_run_stops_reports_and_keeps_its_best_weights(tmp_path):
    metrics = run(tmp_path, "stopped")
    # epochs 1-3 are stale (3 >= patience 2) but the annealing runs to epoch 3: the stop is after epoch 3
    assert metrics["early_stop_epoch"] == 3 and metrics["epochs"] == 3 and len(metrics["history"]) == 4
    written = json.loads((tmp_path / "stopped" / "metrics.json").read_text())
    assert written["early_stop_epoch"] == 3
    assert load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")["stopped_early"] == 3
    best = max(metrics["history"], key=lambda r: r["val_elbo_per_step"])
    assert metrics["best_epoch"] == best["epoch"]  # keep-best restored the best weights at the stop
    model = pyro_dssm.load(tmp_path / "stopped")  # best.pt: the weights the run ended with
    assert model.metrics["val_elbo_per_step"] == pytest.approx(best["val_elbo_per_step"])
    with pytest.raises(ValueError, match="stopped early after epoch 3 .*it is finished"):
        run(tmp_path, "again", f"trainer.resume={tmp_path / 'stopped'}")


def test_a_resumed_run_stops_where_the_whole_run_did(tmp_path):
    whole = run(tmp_path, "whole")
    run(tmp_path, "first", "trainer.stop_after_epoch=2")
    resumed = run(tmp_path, "resumed", f"trainer.resume={tmp_path / 'first'}")
    assert resumed["early_stop_epoch"] == whole["early_stop_epoch"] == 3
    strip = [{k: v for k, v in r.items() if k != "train_seconds"} for r in whole["history"]]
    assert [{k: v for k, v in r.items() if k != "train_seconds"} for r in resumed["history"]] == strip


def test_without_patience_every_epoch_runs(tmp_path):
    metrics = train(compose_config([*TINY, *FAST, "trainer.n_epochs=6", "trainer.patience=null",
                                    "trainer.patience_tolerance=10"]), tmp_path / "all")
    assert metrics["epochs"] == 6 and metrics["early_stop_epoch"] is None


def test_early_stopping_is_the_default(tmp_path):
    # patience 3 from the end of the annealing (epoch 3 of 6); nothing improves by 1000%: stale 3 at epoch 3
    metrics = train(compose_config([*TINY, *FAST, "trainer.n_epochs=6", "trainer.patience_tolerance=10"]),
                    tmp_path / "default")
    assert metrics["early_stop_epoch"] == 3 and metrics["epochs"] == 3


def test_patience_is_checked():
    from pyro_dssm.config import TrainerConfig

    with pytest.raises(ValueError, match="trainer.patience must be null or an integer >= 1, got 0"):
        TrainerConfig(patience=0)
    with pytest.raises(ValueError, match="trainer.patience_tolerance must be a number >= 0"):
        TrainerConfig(patience=3, patience_tolerance=-1.0)
