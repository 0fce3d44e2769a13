"""Faults lose nothing: non-finite steps are skipped, SIGINT / SIGTERM checkpoint and resume exactly,
SIGKILL never leaves a torn checkpoint, and the same seed gives the same run."""

import json
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_dssm.config import TrainerConfig
from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.inference.faults import Interrupted, TrainingDiverged
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.io.outputs import remove_temporaries
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.inference.trainer import fit

from .helpers import REPO, cli_env, read_scalars

# 24 sequences in batches of 4: 6 steps per epoch, a fraction of a second each
RUN = ["data.n_train=24", "data.n_val=8", "data.seq_len=10", "data.n_states=3", "data.obs_dim=2",
       "trainer.batch_size=4", "trainer.n_epochs=8", "trainer.init=none", "trainer.guide_warmup_steps=0",
       "trainer.figure_every=0", "trainer.device=cpu", "seed=3"]
TIMING = ("train_seconds",)  # the only metrics allowed to differ between identical runs


def fit_tiny(tmp_path, n_epochs=3, **cfg):
    """A fresh seeded model and fit() on 16 synthetic sequences (4 steps per epoch); returns (model, run)."""
    torch.manual_seed(0)
    data = make_synthetic(n_states=3, obs_dim=2, seq_len=10, n_train=16, n_val=8, seed=0)
    model = DSSM(ModelConfig(n_states=3, obs_dim=2))
    config = TrainerConfig(n_epochs=n_epochs, batch_size=4, init="none", guide_warmup_steps=0, figure_every=0,
                           device="cpu", **cfg)

    def run(**kwargs):
        tracker = Tracker(tmp_path)
        try:
            return fit(model, data.train, data.val, config, tracker, checkpoint_dir=tmp_path / "checkpoints",
                       **kwargs)
        finally:
            tracker.close()

    return model, run


def poison_steps(model, steps):
    """Make the gradient NaN at the given SVI steps (1-based); record the parameters each step starts from."""
    starts = []

    def hook(grad):
        starts.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
        return torch.full_like(grad, math.nan) if len(starts) in steps else grad

    model.emitter.net[0].weight.register_hook(hook)
    return starts


def test_non_finite_gradient_steps_are_skipped_and_training_continues(tmp_path):
    model, run = fit_tiny(tmp_path)
    starts = poison_steps(model, {3, 4})
    metrics = run()
    assert metrics["steps"] == 12 and metrics["skipped_steps"] == 2 and math.isfinite(metrics["final_loss"])
    assert not torch.equal(starts[1], starts[2])  # step 2 updated the parameters
    assert torch.equal(starts[2], starts[3]) and torch.equal(starts[3], starts[4])  # steps 3 and 4 did not
    assert not torch.equal(starts[4], starts[5])  # and training went on
    assert read_scalars(tmp_path / "tb")["train/skipped_steps"] == [(3, 1.0), (4, 2.0)]
    adam = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["optimizer"]["state"][0]
    assert int(adam["step"]) == 12 - 2  # the optimiser never saw the skipped steps


def test_consecutive_non_finite_steps_stop_training_and_keep_the_last_good_checkpoint(tmp_path):
    model, run = fit_tiny(tmp_path, n_epochs=4, max_consecutive_skips=3)
    poison_steps(model, set(range(10, 100)))  # epochs 1-2 are steps 1-8; step 9 is fine, 10-12 are not
    with pytest.raises(TrainingDiverged, match=r"3 steps in a row \(steps 10-12\).*last.pt holds step 8"):
        run()
    last = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["step"] == 8
    assert all(torch.isfinite(v).all() for v in last["model"].values())


def test_a_diverging_cli_run_stops_with_one_line(cli, tmp_path):
    """lr=1e30: the first update throws the parameters so far that every later loss is non-finite."""
    proc = cli.run("pyro_dssm.train", [*RUN, "trainer.lr=1e30", "trainer.max_consecutive_skips=3",
                                       f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: training stopped: 3 steps in a row"), proc.stderr
    assert "non-finite loss or gradient (trainer.max_consecutive_skips=3)" in lines[0]
    assert "step skipped (3 in a row" in proc.stdout  # the warnings went to the log, not stderr


@pytest.mark.parametrize("stop_after_step, where", [(6, "epoch 2, batch 2 of 4"), (8, "end of epoch 2")])
def test_a_stop_request_checkpoints_and_resume_equals_the_uninterrupted_run(tmp_path, stop_after_step, where):
    _, run = fit_tiny(tmp_path / "full")
    full = run()
    model, run = fit_tiny(tmp_path / "cut")
    steps = []  # the request arrives during step `stop_after_step`, as a signal would
    model.emitter.net[0].weight.register_hook(lambda grad: steps.append(1))
    with pytest.raises(Interrupted, match=where) as stopped:
        run(stop=lambda: len(steps) >= stop_after_step)
    checkpoint = load_checkpoint(stopped.value.checkpoint)
    assert checkpoint["step"] == stop_after_step and ("progress" in checkpoint) == ("batch" in where)
    torch.manual_seed(123)  # the resumed run must not depend on the random state it starts in
    model, run = fit_tiny(tmp_path / "cut")
    resumed = run(resume=checkpoint)
    for key in ("val_elbo_per_step", "val_loglik_per_step", "val_accuracy", "final_loss", "steps", "tau"):
        assert resumed[key] == full[key], key
    assert [h["val_elbo_per_step"] for h in resumed["history"]] == [h["val_elbo_per_step"] for h in full["history"]]


@pytest.fixture(scope="module")
def reference(cli, tmp_path_factory):
    """An uninterrupted CLI run of RUN: its metrics and last checkpoint."""
    run_dir = tmp_path_factory.mktemp("reference")
    proc = cli.run("pyro_dssm.train", [*RUN, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr
    return json.loads((run_dir / "metrics.json").read_text()), load_checkpoint(run_dir / "checkpoints" / "last.pt")


def assert_same_run(metrics, checkpoint, reference):
    ref_metrics, ref_checkpoint = reference
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMING and k != "history"}  # noqa: E731
    assert strip(metrics) == strip(ref_metrics)
    assert [strip(h) for h in metrics["history"]] == [strip(h) for h in ref_metrics["history"]]
    for name, value in ref_checkpoint["model"].items():
        assert torch.equal(checkpoint["model"][name], value), name


def test_same_seed_same_metrics_run_after_run(cli, reference, tmp_path):
    proc = cli.run("pyro_dssm.train", [*RUN, f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr
    assert_same_run(json.loads((tmp_path / "metrics.json").read_text()),
                    load_checkpoint(tmp_path / "checkpoints" / "last.pt"), reference)


def wait_for(path: Path, timeout=120):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_flushes_and_the_printed_command_resumes_exactly(cli, reference, tmp_path, signum):
    run_dir = tmp_path / "run"
    args = [*RUN, f"hydra.run.dir={run_dir}"]
    if signum == signal.SIGTERM:  # one real `python -m`, as a user or a scheduler would start it
        out, err = open(tmp_path / "out", "w"), open(tmp_path / "err", "w")
        proc = subprocess.Popen([sys.executable, "-m", "pyro_dssm.train", *args], cwd=REPO, env=cli_env(),
                                stdout=out, stderr=err)
        pid, finish = proc.pid, lambda: (proc.wait(120), (tmp_path / "err").read_text())
    else:
        child = cli.start("pyro_dssm.train", args)
        pid, finish = child.pid, lambda: (lambda p: (p.returncode, p.stderr))(child.wait(120))
    wait_for(run_dir / "checkpoints" / "last.pt")  # training has started: epoch 1 is done
    os.kill(pid, signum)
    rc, stderr = finish()
    assert rc == 128 + signum, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"interrupted by {signal.Signals(signum).name} at step"), stderr
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["step"] < 8 * 6 and not (run_dir / "metrics.json").exists()
    logged = read_scalars(run_dir / "tb")["train/loss"]  # TensorBoard was flushed up to the checkpoint
    assert [s for s, _ in logged] == list(range(1, checkpoint["step"] + 1))
    command = shlex.split(lines[0].split("resume with: ")[1])
    assert command[:3] == ["python", "-m", "pyro_dssm.train"] and f"trainer.resume={run_dir}" in command
    proc = cli.run("pyro_dssm.train", command[3:])
    assert proc.returncode == 0, proc.stderr
    assert_same_run(json.loads((run_dir / "metrics.json").read_text()),
                    load_checkpoint(run_dir / "checkpoints" / "last.pt"), reference)


def test_sigkill_while_writing_never_leaves_a_torn_checkpoint(cli, tmp_path):
    """Kill a process that does nothing but write (large) checkpoints, at random moments, five times."""
    rng, stray = random.Random(0), 0
    for _ in range(5):
        writer = cli.start("tests.checkpoint_writer", [tmp_path])
        wait_for(tmp_path / "last.pt")
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(60).returncode == -signal.SIGKILL
        payload = torch.load(tmp_path / "last.pt", weights_only=True)
        assert torch.equal(payload["weights"], torch.full((1_000_000,), float(payload["index"])))
        stray += len(remove_temporaries(tmp_path))
        assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert stray > 0  # some kills did land inside a write


def test_sigkill_during_training_then_resume_reaches_the_uninterrupted_result(cli, reference, tmp_path):
    run_dir, rng = tmp_path / "run", random.Random(1)
    last = run_dir / "checkpoints" / "last.pt"
    for attempt in range(3):
        resume = [f"trainer.resume={run_dir}"] if last.exists() else []
        seen = last.stat().st_mtime_ns if last.exists() else None
        child = cli.start("pyro_dssm.train", [*RUN, f"hydra.run.dir={run_dir}", *resume])
        deadline = time.monotonic() + 120
        while not last.exists() or last.stat().st_mtime_ns == seen:  # until this run has written a checkpoint
            assert time.monotonic() < deadline, child.stdout()[-2000:]
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(60).returncode in (-signal.SIGKILL, 0)
        assert load_checkpoint(last)["epoch"] >= 1  # loads: never torn
        if load_checkpoint(last)["epoch"] == 8:
            break
    if load_checkpoint(last)["epoch"] < 8:
        proc = cli.run("pyro_dssm.train", [*RUN, f"hydra.run.dir={run_dir}", f"trainer.resume={run_dir}"])
        assert proc.returncode == 0, proc.stderr
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
    for name, value in reference[1]["model"].items():
        assert torch.equal(load_checkpoint(last)["model"][name], value), name
