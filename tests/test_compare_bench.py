"""benchmarks/compare.py at a tiny size, in a subprocess: table, json and TensorBoard curves read back."""

import json
import subprocess
import sys

from .helpers import REPO, read_scalars

TINY = ["data.n_train=32", "data.n_val=16", "data.seq_len=20", "data.n_states=3", "data.obs_dim=2",
        "trainer.n_epochs=1", "trainer.guide_warmup_steps=10", "baseline.n_epochs=1"]


def test_compare_writes_table_json_and_curves(tmp_path):
    out, logdir = tmp_path / "results", tmp_path / "tb"
    cmd = [sys.executable, str(REPO / "benchmarks" / "compare.py"), "--seeds", "0", "1", "--name", "tiny",
           "--out", str(out), "--logdir", str(logdir), "--", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1",
                          **{k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "tiny.md").read_text()
    for method in ("dssm-trace", "dssm-analytic", "exact", "oracle", "hmmlearn"):
        assert f"| {method} |" in table, method
    assert "seed 0" in table and "seed 1" in table and "Machine:" in table
    assert table.strip() in proc.stdout.replace("\r", "") or "| dssm-trace |" in proc.stdout
    records = json.loads((out / "tiny.json").read_text())
    assert {(r["method"], r["seed"]) for r in records} == {
        (m, s) for m in ("dssm-trace", "dssm-analytic", "exact", "oracle", "hmmlearn") for s in (0, 1)}
    for r in records:
        assert 0 < r["accuracy"] <= 1
    # every trained method left an accuracy curve against steps and against training time
    for method in ("dssm-trace", "dssm-analytic", "exact", "hmmlearn"):
        scalars = read_scalars(logdir / "tiny" / method / "seed0")
        assert scalars["compare/accuracy"] and scalars["compare/accuracy_vs_ms"], method
    dssm = read_scalars(logdir / "tiny" / "dssm-trace" / "seed1")
    assert [s for s, _ in dssm["compare/accuracy"]][:1] == [0]  # epoch 0 = after the init
    # --merge: one table from records split over runs (seed 1 alone, then seed 0 alone)
    seed0 = tmp_path / "seed0.json"
    seed0.write_text(json.dumps([r for r in records if r["seed"] == 0]))
    seed1 = tmp_path / "seed1.json"
    seed1.write_text(json.dumps([r for r in records if r["seed"] == 1]))
    merged = subprocess.run([sys.executable, str(REPO / "benchmarks" / "compare.py"), "--name", "merged",
                             "--out", str(out), "--merge", str(seed1), str(seed0)],
                            capture_output=True, text=True, timeout=120)
    assert merged.returncode == 0, merged.stderr[-3000:]
    merged_table = (out / "merged.md").read_text()
    assert merged_table.split("Per seed")[1] == table.split("Per seed")[1]
    assert all(f"`{r['command']}`" in merged_table for r in records)
