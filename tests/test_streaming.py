"""data=npy: rows streamed from a memory-mapped .npy file, checked against the array loaded whole."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.data.streaming import NpyRows, feature_moments
from pyro_dssm.train import train

from .helpers import compose_config


def _resident_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_rows_and_moments_equal_the_loaded_array(tmp_path):
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 7, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    rows = NpyRows(tmp_path / "x.npy", start=10, stop=40)
    assert rows.shape == (30, 7, 3) and len(rows) == 30
    idx = torch.tensor([29, 3, 0, 17, 4])  # unsorted, relative to start
    assert np.array_equal(rows[idx].numpy(), x[10:40][idx.numpy()])
    mean, std = feature_moments(rows, chunk_bytes=7 * 3 * 4 * 4)  # 4 rows a chunk: the merge is exercised
    np.testing.assert_allclose(mean, x[10:40].reshape(-1, 3).mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, x[10:40].reshape(-1, 3).std(0), rtol=1e-6)
    with pytest.raises(IndexError):
        rows[torch.tensor([30])]


def test_bad_files_name_the_problem(tmp_path):
    np.save(tmp_path / "flat.npy", np.zeros((4, 5), dtype=np.float32))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.zeros((4, 5, 2), dtype=np.float32)))
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ValueError, match=r"float \(N, T, D\) array, got shape \(4, 5\)"):
        NpyRows(tmp_path / "flat.npy")
    with pytest.raises(ValueError, match="C order"):
        NpyRows(tmp_path / "fortran.npy")
    with pytest.raises(ValueError, match="not a .npy file"):
        NpyRows(tmp_path / "text.npy")
    with pytest.raises(ValueError, match="is not a file"):
        NpyRows(tmp_path / "missing.npy")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS from /proc")
def test_an_epoch_of_minibatches_does_not_keep_the_file_resident(tmp_path):
    """96 MB read in minibatches: the resident set grows by about one minibatch, not by the file."""
    path = tmp_path / "big.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(4000, 100, 60))
    out[:] = 1.0  # real pages on disk, not a sparse file
    out.flush()
    del out
    rows = NpyRows(path)
    before = _resident_kb()
    for idx in torch.randperm(len(rows)).split(64):
        batch = rows[idx]
    grown_mb = (_resident_kb() - before) / 1024
    assert batch.shape == (32, 100, 60) and float(batch.sum()) == 32 * 100 * 60
    assert grown_mb < 20, f"resident set grew by {grown_mb:.0f} MB reading a 96 MB file"


def test_train_on_a_streamed_file(tmp_path):
    x = np.random.default_rng(1).normal(size=(40, 12, 3)).astype(np.float32)
    x[:, 6:] += 4.0  # two regimes
    np.save(tmp_path / "x.npy", x)
    cfg = compose_config(["data=npy", f"data.path={tmp_path / 'x.npy'}", "data.n_val=8", "data.n_states=2",
                          "trainer.n_epochs=2", "trainer.batch_size=8", "trainer.init_restarts=1",
                          "trainer.guide_warmup_steps=5", "trainer.figure_every=0"])
    metrics = train(cfg, tmp_path / "run")
    assert metrics["epochs"] == 2 and metrics["steps"] == 8 and np.isfinite(metrics["val_elbo_per_step"])
    prep = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["preprocessing"]
    np.testing.assert_allclose(prep["mean"].numpy(), x[:32].reshape(-1, 3).mean(0), rtol=1e-5)
    assert prep["features"] == ["raw"]
