"""Checkpoints: best.pt by validation ELBO, and resuming gives exactly the uninterrupted run."""

import pytest
import torch

from pyro_dssm.checkpoint import load_checkpoint
from pyro_dssm.train import train

from .helpers import TINY, compose_config

FAST = ["trainer.init=random", "trainer.guide_warmup_steps=5", "trainer.figure_every=0"]
COMPARED = ("val_accuracy", "val_elbo_per_step", "val_loglik_per_step", "viterbi_accuracy", "final_loss", "steps",
            "epochs", "tau")


def test_resume_after_interrupt_equals_uninterrupted_run(tmp_path):
    base = [*TINY, *FAST, "trainer.n_epochs=4", "trainer.device=cpu", "seed=5"]
    full = train(compose_config(base), tmp_path / "full")
    first = train(compose_config([*base, "trainer.stop_after_epoch=2"]), tmp_path / "first")
    assert first["epochs"] == 2 and load_checkpoint(tmp_path / "first" / "checkpoints" / "last.pt")["epoch"] == 2
    # a fresh process state: other seeds and RNG use in between must not matter
    torch.manual_seed(123)
    torch.rand(1000)
    resumed = train(compose_config([*base, f"trainer.resume={tmp_path / 'first'}"]), tmp_path / "resumed")
    for key in COMPARED:
        assert resumed.get(key) == full.get(key), key
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert [h["epoch"] for h in b["history"]] == [0, 1, 2, 3, 4]


def test_best_checkpoint_is_the_epoch_with_the_best_validation_elbo(tmp_path):
    metrics = train(compose_config([*TINY, *FAST, "trainer.n_epochs=3"]), tmp_path)
    elbos = {h["epoch"]: h["val_elbo_per_step"] for h in metrics["history"] if h["epoch"] > 0}
    # weights_only: tensors and primitives only
    best = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)
    assert best["epoch"] == max(elbos, key=elbos.get)
    assert best["best_val_elbo"] == max(elbos.values())
    assert torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 3


def test_resume_errors_name_the_value(tmp_path):
    with pytest.raises(ValueError, match="trainer.resume"):
        train(compose_config([*TINY, f"trainer.resume={tmp_path / 'missing'}"]), tmp_path / "r")
    train(compose_config([*TINY, *FAST, "trainer.n_epochs=1"]), tmp_path / "one")
    with pytest.raises(ValueError, match="model"):
        train(compose_config([*TINY, "model.rnn_hidden=7", f"trainer.resume={tmp_path / 'one'}"]), tmp_path / "r2")
