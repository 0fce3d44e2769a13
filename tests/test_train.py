"""End to end: Hydra composition, the CLI in a subprocess, TensorBoard events read back, convergence."""

import json

import torch

from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.train import train

from .helpers import TINY, compose_config, read_scalars, run_cli


def test_cli_run_writes_events_metrics_and_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("pyro_dssm.train", [f"hydra.run.dir={run_dir}", *TINY])
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert "epoch   1/2" in out and "epoch   2/2" in out and "oracle" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val_accuracy", "oracle_accuracy", "val_elbo_per_step", "train_seconds", "epochs",
                "val_loglik_per_step", "elbo_gap_per_step", "viterbi_accuracy"):
        assert key in metrics, key
    assert metrics["epochs"] == 2 and 0 < metrics["val_accuracy"] <= 1
    scalars = read_scalars(run_dir / "tb")
    acc_curve = scalars["val/val_accuracy"]
    assert [s for s, _ in acc_curve] == [1, 2]
    # the final metrics are the best validation ELBO epoch's (trainer.keep_best), as logged that epoch
    best = metrics["best_epoch"]
    assert best in (0, 1, 2)
    if best > 0:
        assert acc_curve[best - 1][1] == __import__("pytest").approx(metrics["val_accuracy"], abs=1e-6)
    n_steps = metrics["steps"]
    for tag in ("train/loss", "train/tau", "train/grad_norm"):
        assert len(scalars[tag]) == n_steps, tag
    assert "val/oracle_accuracy" in scalars and "val/val_elbo_per_step" in scalars
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")  # weights_only=True inside
    assert ckpt["epoch"] == 2 and "transition.net.0.weight" in ckpt["model"]
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["config"]["seed"] == 0
    assert (run_dir / ".hydra" / "config.yaml").is_file()


def test_cli_bad_config_is_one_line_exit_2(tmp_path):
    """A fresh interpreter: nothing but the error line on stderr, and nothing written in the run directory."""
    proc = run_cli("pyro_dssm.train", [f"hydra.run.dir={tmp_path}", *TINY, "trainer.objective=bogus"])
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: trainer.objective must be one of ('trace', 'analytic', 'concrete'), got 'bogus'"]
    assert list(tmp_path.iterdir()) == []


def test_every_field_overridable_and_seed_reproducible(tmp_path):
    cfg = compose_config([*TINY, "trainer.n_epochs=1", "trainer.objective=analytic", "trainer.tau_min=0.5",
                          "trainer.device=cpu", "seed=3"])
    assert cfg.model.n_states == 3  # follows data.n_states
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    for key in ("val_accuracy", "val_elbo_per_step", "final_loss"):
        assert a[key] == b[key], key


def test_well_separated_states_are_found(tmp_path):
    """Noise 0.2 against unit-scale means: the oracle is ~1.0 and training must reach >= 0.95."""
    cfg = compose_config(["data.n_states=4", "data.obs_dim=4", "data.seq_len=50", "data.n_train=256",
                          "data.n_val=64", "data.noise_std=0.2", "trainer.n_epochs=4",
                          "seed=1"])
    metrics = train(cfg, tmp_path)
    assert metrics["oracle_accuracy"] > 0.99
    assert metrics["val_accuracy"] >= 0.95, metrics
