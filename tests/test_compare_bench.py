"""benchmarks/compare.py at a tiny size, in a subprocess: table, json and TensorBoard curves read back."""

import json
import statistics
import subprocess
import sys

from .helpers import REPO, read_scalars

METHODS = ["dssm-trace", "dssm-analytic", "exact", "oracle", "hmmlearn"]
TINY = ["data.n_train=32", "data.n_val=16", "data.seq_len=20", "data.n_states=3", "data.obs_dim=2",
        "trainer.n_epochs=1", "trainer.guide_warmup_steps=10", "baseline.n_epochs=1"]


def markdown_tables(text):
    """Every markdown table of ``text``: a list of rows, each a list of cell texts (separator rows dropped)."""
    tables, rows = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            if not set(line) <= set("|-"):
                rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def median_min_max(values, spec=".4f"):
    return f"{statistics.median(values):{spec}} [{min(values):{spec}}, {max(values):{spec}}]"


def test_compare_writes_table_json_and_curves(tmp_path):
    out, logdir = tmp_path / "results", tmp_path / "tb"
    cmd = [sys.executable, str(REPO / "benchmarks" / "compare.py"), "--seeds", "0", "1", "--name", "tiny",
           "--out", str(out), "--logdir", str(logdir), "--", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1",
                          **{k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}})
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "tiny.md").read_text()
    assert table.strip() in proc.stdout.replace("\r", "")  # printed as written
    assert "Machine:" in table
    records = json.loads((out / "tiny.json").read_text())
    assert {(r["method"], r["seed"]) for r in records} == {(m, s) for m in METHODS for s in (0, 1)}
    for r in records:
        assert 0 < r["accuracy"] <= 1
    # the summary: one row per method, its accuracy column the median [min, max] of the records' accuracies
    summary, per_seed = markdown_tables(table)
    assert summary[0][:3] == ["method", "accuracy", "Viterbi accuracy"] and len(summary[0]) == 9
    assert [row[0] for row in summary[1:]] == METHODS
    for row in summary[1:]:
        mine = [r for r in records if r["method"] == row[0]]
        assert len(row) == 9 and row[1] == median_min_max([r["accuracy"] for r in mine]), row
        assert row[-1] == f"{sum(r['seconds_to_target'] is not None for r in mine)}/2", row
    # per seed: each trained method's score over the oracle's accuracy, one column per seed, then the min
    assert per_seed[0] == ["method", "seed 0", "seed 1", "min", "median", ">= 0.95", ">= 0.98"]
    assert [row[0] for row in per_seed[1:]] == [m for m in METHODS if m != "oracle"]
    for row in per_seed[1:]:
        ratios = [r["score"] / r["oracle_accuracy"] for r in sorted(records, key=lambda r: r["seed"])
                  if r["method"] == row[0]]
        assert row[1:4] == [f"{ratios[0]:.3f}", f"{ratios[1]:.3f}", f"{min(ratios):.3f}"], row
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
