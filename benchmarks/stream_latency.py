"""Latency of streaming decode (``python -m pyro_dssm.decode input=- output=-``) per row, through the real command:
rows written to its standard input one at a time or 100 at a time, timed until their output rows are read back.

    OMP_NUM_THREADS=1 python benchmarks/stream_latency.py                  # K=3, D0=4, 200 single rows, 20 x 100
    OMP_NUM_THREADS=1 python benchmarks/stream_latency.py --K 5 --D 10 --lag 5

A model is trained for one epoch on a small generated CSV (the cost of a row does not depend on how well), then
one decode process reads the rows of one sequence from a pipe. For a batch of c rows the latency is the time from
writing them (one write) to reading the c-th output row; per row it is that divided by c. With ``--lag L`` an input
row's output is the row L steps earlier, so the timing waits for the c rows each batch completes. The rows of
``filter_chunk`` called in this process on the same batches (no pipe, no CSV) are shown beside, for the command's
own cost. Prints a markdown table: median [min, max] over the batches, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine_info import cpu_model  # noqa: E402
from pyro_dssm import online  # noqa: E402
from pyro_dssm.api import compose_config  # noqa: E402
from pyro_dssm.fitted import FittedDSSM  # noqa: E402
from pyro_dssm.train import train  # noqa: E402


def write_training_csv(path: Path, K: int, D: int, seed: int = 0) -> None:
    """20 sequences of 50 steps, K Gaussian regimes in D columns."""
    rng = np.random.default_rng(seed)
    means = 3.0 * rng.normal(size=(K, D))
    with path.open("w") as f:
        f.write("id,t," + ",".join(f"x{j}" for j in range(D)) + "\n")
        for s in range(20):
            z = np.repeat(rng.integers(K, size=10), 5)
            for t, x in enumerate(means[z] + rng.normal(size=(50, D))):
                f.write(f"s{s},{t}," + ",".join(f"{v:.5f}" for v in x) + "\n")


def rows(n: int, D: int, start: int, seed: int = 1) -> list[bytes]:
    """n CSV rows of sequence ``live`` from time ``start``."""
    x = np.random.default_rng(seed + start).normal(size=(n, D))
    return [f"live,{start + i},".encode() + ",".join(f"{v:.5f}" for v in r).encode() + b"\n" for i, r in enumerate(x)]


def command_latency(run_dir: Path, D: int, lag: int, sizes: list[int], batches: dict[int, int]) -> dict[int, list]:
    """Seconds per row of each batch of each size, through one decode process (a warm-up of 50 rows first)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "pyro_dssm.decode", f"checkpoint={run_dir}", "input=-",
                             "output=-", f"lag={lag}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, bufsize=0, env=env, cwd=REPO)
    proc.stdin.write(b"id,t," + ",".join(f"x{j}" for j in range(D)).encode() + b"\n")
    proc.stdout.readline()  # the output header: the model is loaded
    t, out = 0, {c: [] for c in sizes}
    for c, n in [(1, 50)] + [(c, batches[c]) for c in sizes]:
        for b in range(n):
            batch = rows(c, D, t)
            answered = max(0, t + c - lag) - max(0, t - lag)  # rows whose lag is complete with this batch
            start = time.perf_counter()
            proc.stdin.write(b"".join(batch))
            for _ in range(answered):
                proc.stdout.readline()
            if answered and t >= 50:
                out[c].append((time.perf_counter() - start) / c)
            t += c
    proc.stdin.close()
    proc.wait(60)
    return out


def in_process_latency(fitted: FittedDSSM, D: int, lag: int, sizes: list[int], batches: dict[int, int]) -> dict:
    """Seconds per row of filter_chunk alone on the same batches."""
    carry, t, out = None, 0, {c: [] for c in sizes}
    with torch.no_grad():
        for c, n in [(1, 50)] + [(c, batches[c]) for c in sizes]:
            for _ in range(n):
                x = np.random.default_rng(t).normal(size=(c, D))
                start = time.perf_counter()
                _, carry = online.filter_chunk(fitted.model, fitted.preprocessing, x, carry, lag)
                if t >= 50:
                    out[c].append((time.perf_counter() - start) / c)
                t += c
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--K", type=int, default=3)
    parser.add_argument("--D", type=int, default=4)
    parser.add_argument("--lag", type=int, default=0)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--rows", type=int, default=2000, help="rows fed per batch size (at least 10 batches)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    batches = {c: max(10, args.rows // c) for c in args.sizes}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_training_csv(tmp / "train.csv", args.K, args.D)
        train(compose_config(["data=csv", f"data.path={tmp / 'train.csv'}", "data.id_column=id", "data.time_column=t",
                              f"data.n_states={args.K}", "trainer.n_epochs=1", "trainer.figure_every=0",
                              "trainer.device=cpu"]), tmp / "run")
        command = command_latency(tmp / "run", args.D, args.lag, args.sizes, batches)
        direct = in_process_latency(FittedDSSM.load(tmp / "run"), args.D, args.lag, args.sizes, batches)
    print(f"\nStreaming decode latency, microseconds per row: K={args.K}, D0={args.D}, lag={args.lag}, "
          f"one sequence, 1 torch thread, {cpu_model()}, torch {torch.__version__}; median [min, max] over batches\n")
    print("| rows per write | batches | decode input=- output=- | filter_chunk in-process |\n|---|---|---|---|")

    def cell(ts):
        us = [1e6 * t for t in ts]
        return f"{statistics.median(us):.0f} [{min(us):.0f}, {max(us):.0f}]" if us else "failed (no rows)"
    for c in args.sizes:
        print(f"| {c} | {len(command[c])} | {cell(command[c])} | {cell(direct[c])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
