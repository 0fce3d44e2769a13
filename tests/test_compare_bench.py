"""benchmarks/compare.py at a tiny size, in a subprocess: tables, json and TensorBoard curves read back.

The run is a subprocess (as a user runs it); ``--merge`` and argument errors, which train nothing, run
in this process to spare the start-up of another interpreter.
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys

import pytest

from .helpers import REPO, read_scalars

TRAINED = ["dssm-trace", "dssm-analytic", "exact"]
INITS = ["random", "em"]
ROWS = [(m, i) for i in INITS for m in TRAINED] + [("oracle", "-"), ("hmmlearn", "own")]
TINY = ["data.n_train=32", "data.n_val=16", "data.seq_len=20", "data.n_states=3", "data.obs_dim=2",
        "trainer.n_epochs=1", "trainer.guide_warmup_steps=10", "baseline.n_epochs=1",
        "trainer.init_restarts=1"]  # one random start: the shared one (tests/test_random_starts.py tests several)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def compare(*args):
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / "compare.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600, env=ENV)


@pytest.fixture(scope="module")
def bench():
    """benchmarks/compare.py as a module (its ``main(argv)``), with benchmarks/ importable as when run as a script."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("compare_bench", REPO / "benchmarks" / "compare.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


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


def test_compare_writes_tables_json_and_curves(tmp_path, bench):
    out, logdir = tmp_path / "results", tmp_path / "tb"
    proc = compare("--seeds", 0, 1, "--inits", *INITS, "--name", "tiny", "--out", out, "--logdir", logdir, "--", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "tiny.md").read_text()
    assert table.strip() in proc.stdout.replace("\r", "")  # printed as written
    assert "Machine:" in table and "--inits random em" in table
    records = json.loads((out / "tiny.json").read_text())
    assert sorted((r["method"], r["init"], r["seed"]) for r in records) == sorted(
        (m, i, s) for m, i in ROWS for s in (0, 1))
    for r in records:
        assert 0 < r["accuracy"] <= 1

    def rec(method, init, seed):
        return next(r for r in records if (r["method"], r["init"], r["seed"]) == (method, init, seed))

    # matched starts: within a seed and init the three trained methods share the generative networks at epoch 0,
    # so the same exact log p(X) and Viterbi accuracy; the two DSSMs also share the guide warm-up, so the same
    # guide accuracy. Different inits are different starts.
    for seed in (0, 1):
        for init in INITS:
            first = {m: rec(m, init, seed)["history"][0] for m in TRAINED}
            assert len({first[m]["val_loglik_per_step"] for m in TRAINED}) == 1, (seed, init, first)
            assert len({first[m]["viterbi_accuracy"] for m in TRAINED}) == 1, (seed, init, first)
            assert rec("dssm-trace", init, seed)["ratio_epoch0"] == rec("dssm-analytic", init, seed)["ratio_epoch0"]
            exact = rec("exact", init, seed)
            assert exact["ratio_epoch0"] == pytest.approx(first["exact"]["viterbi_accuracy"] / exact["oracle_accuracy"])
            # the shared init's seconds count for every method, as when each ran its own init
            assert len({rec(m, init, seed)["init_seconds"] for m in TRAINED}) == 1
            assert all(first[m]["train_seconds"] >= rec(m, init, seed)["init_seconds"] for m in TRAINED)
        assert rec("exact", "em", seed)["loglik_epoch0"] > rec("exact", "random", seed)["loglik_epoch0"]
    for r in records:
        if r["method"] in TRAINED:
            assert r["d_loglik"] == pytest.approx(r["loglik_per_step"] - r["loglik_epoch0"])
            assert r["d_ratio"] == pytest.approx(r["ratio"] - r["ratio_epoch0"])

    summary, learning, per_seed = markdown_tables(table)
    # the summary: one row per (method, init), its accuracy column the median [min, max] of the records' accuracies
    assert summary[0][:4] == ["method", "init", "accuracy", "Viterbi accuracy"] and len(summary[0]) == 10
    assert [tuple(row[:2]) for row in summary[1:]] == ROWS
    for row in summary[1:]:
        mine = [r for r in records if (r["method"], r["init"]) == tuple(row[:2])]
        assert len(row) == 10 and row[2] == median_min_max([r["accuracy"] for r in mine]), row
        assert row[-1] == f"{sum(r['seconds_to_target'] is not None for r in mine)}/2", row
    # what learning added: epoch 0 and end, for every trained (method, init)
    assert learning[0][:8] == ["method", "init", "accuracy / oracle, epoch 0", "accuracy / oracle, end",
                               "end - epoch 0", "log p(X)/step, epoch 0", "log p(X)/step, end", "end - epoch 0"]
    assert [tuple(row[:2]) for row in learning[1:]] == ROWS[:-2]
    cells = {tuple(row[:2]): dict(zip(learning[0], row)) for row in learning[1:]}
    for (method, init), row in cells.items():
        mine = [rec(method, init, s) for s in (0, 1)]
        assert row["accuracy / oracle, epoch 0"] == median_min_max([r["ratio_epoch0"] for r in mine], ".3f")
        assert row["log p(X)/step, epoch 0"] == median_min_max([r["loglik_epoch0"] for r in mine])
        assert row["log p(X)/step, end"] == median_min_max([r["loglik_per_step"] for r in mine])
        assert row["log p(X) rose"] == f"{sum(r['d_loglik'] > 0 for r in mine)}/2"
        # the table itself shows the matched start: one epoch-0 log p(X) per init, whatever the method
        assert row["log p(X)/step, epoch 0"] == cells[("exact", init)]["log p(X)/step, epoch 0"]
    # per seed: each trained method's score over the oracle's accuracy, one column per seed, then the min
    assert per_seed[0] == ["method", "init", "seed 0", "seed 1", "min", "median", ">= 0.95", ">= 0.98"]
    assert [tuple(row[:2]) for row in per_seed[1:]] == [r for r in ROWS if r[0] != "oracle"]
    for row in per_seed[1:]:
        ratios = [rec(row[0], row[1], s)["score"] / rec(row[0], row[1], s)["oracle_accuracy"] for s in (0, 1)]
        assert row[2:5] == [f"{ratios[0]:.3f}", f"{ratios[1]:.3f}", f"{min(ratios):.3f}"], row
    # every trained method left an accuracy curve against steps and against training time
    for run in [f"{m}/{i}/seed0" for m in TRAINED for i in INITS] + ["hmmlearn/seed0"]:
        scalars = read_scalars(logdir / "tiny" / run)
        assert scalars["compare/accuracy"] and scalars["compare/accuracy_vs_ms"], run
    dssm = read_scalars(logdir / "tiny" / "dssm-trace" / "em" / "seed1")
    assert [s for s, _ in dssm["compare/accuracy"]][:1] == [0]  # epoch 0 = after the init

    # --merge: one table from records split over runs (seed 1 alone, then seed 0 alone)
    parts = []
    for seed in (1, 0):
        parts.append(tmp_path / f"seed{seed}.json")
        parts[-1].write_text(json.dumps([r for r in records if r["seed"] == seed]))
    bench.main(["--name", "merged", "--out", str(out), "--merge", *map(str, parts)])
    merged_table = (out / "merged.md").read_text()
    assert markdown_tables(merged_table) == markdown_tables(table)
    assert all(f"`{r['command']}`" in merged_table for r in records)
    # records written before the init axis: their init is the config's trainer.init
    old = [{k: v for k, v in r.items() if k not in ("init", "ratio_epoch0", "loglik_epoch0", "d_ratio", "d_loglik")}
           | {"config": r["config"].replace("'n_epochs': 1,", "'n_epochs': 1, 'init': 'em',", 1)}
           for r in records if r["init"] in ("em", "-", "own")]
    (tmp_path / "old.json").write_text(json.dumps(old))
    bench.main(["--name", "old", "--out", str(out), "--merge", str(tmp_path / "old.json")])
    old_tables = markdown_tables((out / "old.md").read_text())
    assert old_tables[1] == [learning[0]] + [row for row in learning[1:] if row[1] == "em"]


def test_compare_refuses_two_inits_at_once(tmp_path, bench, capsys):
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--inits", "em", "--out", str(tmp_path), "--", "trainer.init=kmeans"])
    assert exit_.value.code == 2 and "--inits" in capsys.readouterr().err.strip().splitlines()[-1]
