"""Data-parallel training: the gradient maths against the single-process gradient, and torchrun end to end.

The end-to-end oracle is a single-process run that draws the same Gumbel noise
as the two ranks (rank r's share of each minibatch from rank r's generator,
replayed from the state each rank saved when training started): it must then
log the same loss and gradient norm at every step and end with the same
parameters. Without the replay, per-step losses differ by up to ~9% and
gradient norms by up to ~25% on this tiny config (seeds 0-2, measured), far
too loose to catch a wrongly weighted gradient.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyro_dssm.model import relaxed as distributions
from pyro_dssm.config import TrainerConfig
from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.data.sequences import lengths_to_mask
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.inference.distributed import DataParallel
from pyro_dssm.model.hmm import gaussian_log_likelihood, log_likelihood
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.train import train
from pyro_dssm.inference.batches import n_valid
from pyro_dssm.inference.trainer import fit

from .helpers import REPO, compose_config, read_scalars

# 37 sequences in minibatches of 16: the last one (5) splits 3 / 2, so equal-weight averaging would be wrong
SMALL = ["data.n_train=37", "data.n_val=8", "data.seq_len=10", "data.n_states=3", "data.obs_dim=4",
         "trainer.n_epochs=2", "trainer.batch_size=16", "trainer.init=kmeans", "trainer.init_restarts=1",
         "trainer.guide_warmup_steps=0", "trainer.figure_every=0", "trainer.device=cpu", "seed=1",
         "trainer.keep_best=false"]  # the final weights are the last checkpoint's, which the tests compare


def _gradient_worker(rank: int, world_size: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)  # the same model and data on both ranks
        model = DSSM(ModelConfig(n_states=3, obs_dim=2, noise_std=0.7))
        x = torch.randn(6, 7, 2)
        mask = lengths_to_mask(torch.tensor([7, 2, 5, 1, 4, 7]), 7)  # ragged: shares differ in valid steps

        def exact_nll(xb, mb, step):
            """Deterministic loss (exact -log p(X) per valid step): no noise, so gradients must agree exactly."""
            log_init, log_trans, means = model.hmm_parameters()
            ll = gaussian_log_likelihood(xb, means, model.config.noise_std)
            return -log_likelihood(log_init, log_trans, ll, mb).sum() / n_valid(xb, mb), {}

        group = DataParallel(rank, world_size, torch.device("cpu"))
        # a ragged minibatch in shuffled order (shares of 3 and 2 sequences), and one with an empty share
        for idx in (torch.tensor([4, 0, 3, 1, 2]), torch.tensor([3])):
            model.zero_grad(set_to_none=True)
            want_loss, _ = exact_nll(x[idx], mask[idx], 0)
            want_loss.backward()  # the single-process oracle, on the whole minibatch
            want = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
            model.zero_grad(set_to_none=True)
            loss, _ = group.backward(model, exact_nll, x, mask, idx, 0)
            torch.testing.assert_close(loss, want_loss.detach(), rtol=1e-6, atol=1e-6)
            for name, p in model.named_parameters():
                if want[name] is None:  # the guide is unused by this loss: no gradient, as in one process
                    assert p.grad is None, name
                else:
                    torch.testing.assert_close(p.grad, want[name], rtol=1e-5, atol=1e-7, msg=name)
    finally:
        dist.destroy_process_group()


def test_shared_gradient_equals_single_process_gradient(tmp_path):
    # fork: the workers start in a second rather than re-importing torch and pyro (spawn: ~15 s here)
    mp.start_processes(_gradient_worker, args=(2, str(tmp_path / "rendezvous")), nprocs=2, start_method="fork")


def _schedule_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        # 5 sequences in batches of 4: every epoch ends with a 1-sequence step that rank 1 has no share of
        data = make_synthetic(n_states=3, obs_dim=2, seq_len=6, n_train=5, n_val=4, seed=0)
        torch.manual_seed(0)  # the same initial model on both ranks
        model = DSSM(ModelConfig(n_states=3, obs_dim=2))
        cfg = TrainerConfig(n_epochs=2, batch_size=4, lr=3e-3, lr_final_fraction=0.1, init="none",
                            guide_warmup_steps=0, figure_every=0, device="cpu")
        torch.manual_seed(1 + rank)  # each rank its own Gumbel noise, as under torchrun
        # each rank writes its own checkpoints here, so that the test can read rank 1's optimiser too
        fit(model, data.train, data.val, cfg, Tracker(out_dir, enabled=False), seed=1,
            checkpoint_dir=Path(out_dir) / f"rank{rank}", group=DataParallel(rank, world_size, torch.device("cpu")))
    finally:
        dist.destroy_process_group()


def test_a_rank_with_an_empty_share_keeps_the_learning_rate_schedule(tmp_path):
    """A decaying learning rate and steps where rank 1 has nothing to compute: the ranks must stay identical.

    The rate of the step after step s of S is lr * f^(s/S) (hand computation), on both ranks; the guide's
    group at trainer.guide_lr_factor (3) times that.
    """
    mp.start_processes(_schedule_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2,
                       start_method="fork")
    rank0, rank1 = (load_checkpoint(tmp_path / f"rank{r}" / "last.pt") for r in (0, 1))
    assert rank0["step"] == rank1["step"] == 4
    for name, value in rank0["model"].items():
        assert torch.equal(value, rank1["model"][name]), name
    want = 3e-3 * 0.1 ** (4 / 4)
    for checkpoint in (rank0, rank1):
        assert [g["lr"] for g in checkpoint["optimizer"]["param_groups"]] == [pytest.approx(want, rel=1e-12),
                                                                              pytest.approx(3 * want, rel=1e-12)]


def _replay_two_ranks(monkeypatch, rank1_state: torch.Tensor) -> None:
    """Make a single process draw the Gumbel noise of two ranks: share 0 from its own global generator
    (rank 0's stream), share 1 from a generator in ``rank1_state``."""
    draw = distributions.gumbel_noise
    stream1 = torch.Generator().manual_seed(0)
    stream1.set_state(rank1_state)

    def two_ranks(shape, like):
        first, second = (len(s) for s in torch.arange(shape[0]).tensor_split(2))
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(stream1.get_state())
            noise1 = draw(torch.Size([second, *shape[1:]]), like)
            stream1.set_state(torch.get_rng_state())
        return torch.cat([draw(torch.Size([first, *shape[1:]]), like), noise1])

    monkeypatch.setattr(distributions, "gumbel_noise", two_ranks)


def test_torchrun_two_processes_match_single_process(tmp_path, monkeypatch):
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    run_dir, probe, tmp = tmp_path / "run", tmp_path / "probe", tmp_path / "tmp"
    probe.mkdir()
    tmp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "DDP_PROBE_DIR": str(probe),
           "TMPDIR": str(tmp)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "ddp_probe.py"), "trainer.distributed=true", f"hydra.run.dir={run_dir}", *SMALL],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]

    # both ranks hold identical parameters, and rank 0 checkpointed them
    rank0, rank1 = (torch.load(probe / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"]
    for name, value in rank0.items():
        assert torch.equal(value, rank1[name]), name
        assert torch.equal(value, checkpoint[name]), name
    # the ranks drew different noise
    assert not torch.equal(*(torch.load(probe / f"rank{r}_rng.pt") for r in (0, 1)))

    # one set of outputs: rank 0's run dir, one event file, no leftovers of rank 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe", "run", "tmp"]
    assert list(tmp.glob("pyro_dssm_rank*")) == []  # rank 1's private Hydra dir was removed
    assert {p.name for p in run_dir.iterdir()} == {".hydra", "checkpoints", "metrics.json", "tb", "train.log"}
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1
    assert "[rank 1]" not in (run_dir / "train.log").read_text()

    # a single process with the same global batch and the ranks' noise: the same curve and parameters
    _replay_two_ranks(monkeypatch, torch.load(probe / "rank1_rng.pt"))
    single = train(compose_config(SMALL), tmp_path / "single")
    ddp, one = read_scalars(run_dir / "tb"), read_scalars(tmp_path / "single" / "tb")
    assert len(ddp["train/loss"]) == single["steps"] == 6
    for tag in ("train/loss", "train/grad_norm", "train/tau"):
        assert [s for s, _ in ddp[tag]] == [s for s, _ in one[tag]], tag
        torch.testing.assert_close(torch.tensor([v for _, v in ddp[tag]]), torch.tensor([v for _, v in one[tag]]),
                                   rtol=1e-4, atol=0, msg=tag)
    # Adam turns rounding-level differences of near-zero gradients into steps of up to lr (the guide's: 0.009),
    # so the weights agree to a small fraction of one step (measured: at most 9e-5, in the guide's GRU cell)
    for name, value in load_checkpoint(tmp_path / "single" / "checkpoints" / "last.pt")["model"].items():
        torch.testing.assert_close(rank0[name], value, rtol=1e-4, atol=5e-4, msg=name)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6
    after_init = {k: v for k, v in metrics["history"][0].items() if k != "train_seconds"}
    assert after_init == pytest.approx({k: single["history"][0][k] for k in after_init}, rel=1e-6)


def test_distributed_without_torchrun_is_a_clear_error(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="trainer.distributed=true needs the environment torchrun sets"):
        train(compose_config([*SMALL, "trainer.distributed=true"]), tmp_path)
