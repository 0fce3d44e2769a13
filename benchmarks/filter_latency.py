"""Latency of online decoding (``FittedDSSM.filter``) per time step, on CPU: a stream fed one row at a time,
in chunks, and in one call.

    OMP_NUM_THREADS=1 python benchmarks/filter_latency.py                        # gaussian, K=5, D=10, 10,000 steps
    python benchmarks/filter_latency.py --families gaussian autoregressive --lag 0 10

A model with random weights of each family (the cost does not depend on the weights) and the default feature
transform (``raw``, standardised) filters a (T, D) random stream; one call of each (family, lag, chunk size)
per repeat, round-robin after a warm-up. Prints a markdown table of microseconds per step: median [min, max]
over the repeats, with the machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine_info import cpu_model  # noqa: E402
from pyro_dssm.config import ModelConfig  # noqa: E402
from pyro_dssm.fitted import FittedDSSM  # noqa: E402
from pyro_dssm.model.dssm import DSSM  # noqa: E402


def run_stream(model: FittedDSSM, x: np.ndarray, chunk: int, lag: int) -> float:
    """Seconds to filter all of x (T, D) in chunks of ``chunk`` rows."""
    start, carry = time.perf_counter(), None
    for i in range(0, len(x), chunk):
        _, carry = model.filter(x[i: i + chunk], carry, lag=lag)
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["gaussian"])
    parser.add_argument("--K", type=int, default=5)
    parser.add_argument("--D", type=int, default=10)
    parser.add_argument("--T", type=int, default=10_000)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 100, 10_000])
    parser.add_argument("--lag", type=int, nargs="+", default=[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(args.T, args.D))
    models = {f: FittedDSSM(DSSM(ModelConfig(n_states=args.K, obs_dim=args.D, emission=f)), {}) for f in args.families}
    cases = [(f, lag, c) for f in args.families for lag in args.lag for c in args.chunks]
    for f, lag, c in cases:  # warm-up
        run_stream(models[f], x[:200], c, lag)
    times = {case: [] for case in cases}
    for _ in range(args.repeats):
        for f, lag, c in cases:
            times[f, lag, c].append(run_stream(models[f], x, c, lag) / args.T * 1e6)
    print(f"Filter latency, microseconds per step: T={args.T}, K={args.K}, D={args.D}, "
          f"{torch.get_num_threads()} torch thread(s), {cpu_model()}, torch {torch.__version__}; "
          f"median [min, max] of {args.repeats} repeats\n")
    print("| family | lag | rows per call | us per step |\n|---|---|---|---|")
    for (f, lag, c), ts in times.items():
        print(f"| {f} | {lag} | {c} | {statistics.median(ts):.1f} [{min(ts):.1f}, {max(ts):.1f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
