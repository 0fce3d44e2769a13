"""Checkpoints: best.pt by validation ELBO, and resuming gives exactly the uninterrupted run."""

import pytest
import torch

from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.train import train

from .helpers import TINY, compose_config

FAST = ["trainer.init=none", "trainer.guide_warmup_steps=5", "trainer.figure_every=0"]
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
    elbos = {h["epoch"]: h["val_elbo_per_step"] for h in metrics["history"]}  # epoch 0: the initialised model
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


def test_keep_best_restores_the_best_validation_elbo(tmp_path):
    """A learning rate that wrecks the model: the run ends with the best evaluation's weights and metrics."""
    from pyro_dssm.evaluation.evaluate import evaluate

    base = [*TINY, *FAST, "trainer.n_epochs=3", "trainer.lr=0.5", "seed=2"]
    metrics = train(compose_config(base), tmp_path / "kept")
    elbos = [h["val_elbo_per_step"] for h in metrics["history"]]
    best_epoch = max(range(len(elbos)), key=elbos.__getitem__)
    assert best_epoch < 3, "the test needs a run whose last epoch is not the best"
    assert metrics["best_epoch"] == best_epoch and metrics["val_elbo_per_step"] == elbos[best_epoch]
    assert metrics["val_accuracy"] == metrics["history"][best_epoch]["val_accuracy"]
    best = load_checkpoint(tmp_path / "kept" / "checkpoints" / "best.pt")
    assert best["epoch"] == best_epoch
    # the best weights are in best.pt, and they evaluate to the reported metrics
    from pyro_dssm.model.dssm import DSSM, ModelConfig
    model = DSSM(ModelConfig(**best["model_config"]))
    model.load_state_dict(best["model"])
    from pyro_dssm.train import load_data
    data = load_data(compose_config(base).data, 2)
    assert evaluate(model, data.val, seed=2)["val_elbo_per_step"] == pytest.approx(elbos[best_epoch], abs=1e-5)
    off = train(compose_config([*base, "trainer.keep_best=false"]), tmp_path / "off")
    assert off["val_elbo_per_step"] == elbos[-1] and off["best_epoch"] == best_epoch
