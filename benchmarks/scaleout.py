"""Data-parallel throughput: time steps per second for 1 and 2 processes at a fixed global batch.

    python benchmarks/scaleout.py --repeats 5       # writes benchmarks/results/scaleout.md and .json

Each repeat runs, in turn (interleaved, so that load from other jobs hits all
alike): the plain single-process CLI, and ``torchrun --standalone
--nproc_per_node=P -m pyro_dssm.train trainer.distributed=true`` for every P
in ``--procs``; the same data, seed and global minibatch (``--batch``
sequences of ``--T`` steps). Throughput is training time steps per second of
SVI (sequences x T x epochs / the run's SVI seconds from ``metrics.json``,
i.e. ``train_seconds`` less the init; process start, data and validation
excluded). The 1-minute load average is recorded beside each run. A run that
fails is reported, never dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_info import cpu_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def run_once(procs: int | None, overrides: list[str]) -> dict:
    """One training run; ``procs`` None is the plain CLI, else torchrun with that many processes."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        if procs is None:
            cmd = [sys.executable, "-m", "pyro_dssm.train"]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
                   "-m", "pyro_dssm.train", "trainer.distributed=true"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        load = os.getloadavg()[0]
        start = time.perf_counter()
        proc = subprocess.run([*cmd, f"hydra.run.dir={run_dir}", *overrides], cwd=REPO, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            return {"ok": False, "error": (proc.stdout + proc.stderr)[-1500:], "load1": load}
        metrics = json.loads((run_dir / "metrics.json").read_text())
    svi_seconds = metrics["train_seconds"] - metrics["history"][0]["train_seconds"]
    return {"ok": True, "svi_seconds": svi_seconds, "steps": metrics["steps"], "wall_seconds": wall, "load1": load}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="torchrun process counts")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=64, help="global minibatch (sequences)")
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "scaleout.md")
    args = p.parse_args(argv)
    overrides = [f"data.n_train={args.n_train}", "data.n_val=32", f"data.seq_len={args.T}",
                 f"trainer.batch_size={args.batch}", f"trainer.n_epochs={args.epochs}", "trainer.init=none",
                 "trainer.guide_warmup_steps=0", "trainer.figure_every=0", "trainer.device=cpu"]
    configs = [None, *args.procs]
    label = {None: "1 (plain CLI)", **{n: f"{n} (torchrun)" for n in args.procs}}
    runs = {label[c]: [] for c in configs}
    for repeat in range(args.repeats):
        for c in configs:
            result = run_once(c, overrides)
            runs[label[c]].append(result)
            shown = f"{result['svi_seconds']:.2f} s SVI" if result["ok"] else "FAILED"
            print(f"repeat {repeat} {label[c]}: {shown} (load {result['load1']:.2f})", flush=True)
    time_steps = args.n_train * args.T * args.epochs
    machine = (f"{cpu_model()}, {os.cpu_count()} logical cores (affinity {len(os.sched_getaffinity(0))}); "
               f"torch {torch.__version__}, 1 thread per process; python {platform.python_version()}")
    rows, base = [], None
    for name, results in runs.items():
        good = [r for r in results if r["ok"]]
        rates = sorted(time_steps / r["svi_seconds"] for r in good)
        med = statistics.median(rates) if rates else float("nan")
        base = med if base is None else base
        loads = [r["load1"] for r in results]
        rows.append(f"| {name} | {med:,.0f} [{rates[0]:,.0f}, {rates[-1]:,.0f}] | {med / base:.2f} | "
                    f"{1000 * statistics.median(r['svi_seconds'] / r['steps'] for r in good):.0f} | "
                    f"{len(good)}/{len(results)} | {min(loads):.1f}-{max(loads):.1f} |" if good else
                    f"| {name} | all {len(results)} runs failed | | | 0/{len(results)} | |")
    text = "\n".join([
        "# Data-parallel throughput (benchmarks/scaleout.py)", "",
        f"Command: `python benchmarks/scaleout.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
        f"Machine: {machine}", "",
        f"Global minibatch {args.batch} sequences x T={args.T} (K=5, D=10, hidden 32, analytic objective), "
        f"{args.n_train} sequences x {args.epochs} epochs = {time_steps:,} time steps per run; "
        f"median [min, max] of {args.repeats} interleaved repeats.", "",
        "| processes | time steps / s | vs plain | ms / step | runs ok | load avg (1 min) |",
        "|---|---|---|---|---|---|", *rows, ""])
    failures = [f"- {name}, repeat {i}: {r['error'][-300:]!r}" for name, rs in runs.items()
                for i, r in enumerate(rs) if not r["ok"]]
    if failures:
        text += "\nFailed runs:\n\n" + "\n".join(failures) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(
        {"machine": machine, "args": {k: str(v) for k, v in vars(args).items()}, "time_steps_per_run": time_steps,
         "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
