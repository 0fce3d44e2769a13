"""Evaluating every N epochs (trainer.val_every): which epochs are evaluated, the same training either way,
keep-best and early stopping over the evaluated epochs only, resuming, the check."""

import pytest

from pyro_dssm.config import TrainerConfig
from pyro_dssm.train import train

from .helpers import TINY, compose_config

FAST = ["trainer.init=none", "trainer.guide_warmup_steps=5", "trainer.figure_every=0", "trainer.device=cpu", "seed=5"]


def run(tmp_path, name, *extra):
    return train(compose_config([*TINY, *FAST, "trainer.n_epochs=5", *extra]), tmp_path / name)


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]


def test_every_second_epoch_and_the_last_are_evaluated_and_training_is_unchanged(tmp_path):
    every = run(tmp_path, "every", "trainer.keep_best=false")
    second = run(tmp_path, "second", "trainer.keep_best=false", "trainer.val_every=2")
    assert [r["epoch"] for r in second["history"]] == [0, 2, 4, 5]
    # evaluation draws nothing from the training's random streams: the evaluated epochs are the same numbers
    assert without_seconds(second["history"]) == without_seconds([every["history"][e] for e in (0, 2, 4, 5)])
    assert second["epochs"] == 5 and second["val_elbo_per_step"] == every["val_elbo_per_step"]


def test_keep_best_chooses_among_the_evaluated_epochs(tmp_path):
    metrics = run(tmp_path, "best", "trainer.val_every=3")
    assert [r["epoch"] for r in metrics["history"]] == [0, 3, 5]
    best = max(metrics["history"], key=lambda r: r["val_elbo_per_step"])
    assert metrics["best_epoch"] == best["epoch"]
    assert metrics["val_elbo_per_step"] == best["val_elbo_per_step"]


def test_early_stopping_counts_epochs_between_evaluations(tmp_path):
    # nothing after the start improves by 1000%; annealing ends at epoch 3 (of 6), evaluations at 0, 2, 4, 6:
    # epoch 4 is the first evaluated epoch after the annealing, 4 epochs stale >= patience 2
    metrics = run(tmp_path, "stop", "trainer.n_epochs=6", "trainer.val_every=2", "trainer.patience=2",
                  "trainer.patience_tolerance=10")
    assert metrics["early_stop_epoch"] == 4 and [r["epoch"] for r in metrics["history"]] == [0, 2, 4]


def test_a_resumed_run_evaluates_the_same_epochs(tmp_path):
    whole = run(tmp_path, "whole", "trainer.val_every=2")
    run(tmp_path, "first", "trainer.val_every=2", "trainer.stop_after_epoch=3")
    resumed = run(tmp_path, "resumed", "trainer.val_every=2", f"trainer.resume={tmp_path / 'first'}")
    assert without_seconds(resumed["history"]) == without_seconds(whole["history"])
    assert resumed["best_epoch"] == whole["best_epoch"]


def test_val_every_is_checked():
    with pytest.raises(ValueError, match="trainer.val_every must be an integer >= 1, got 0"):
        TrainerConfig(val_every=0)
