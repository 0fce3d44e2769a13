"""A labelled CSV at the shape of issue 22's held-out motion recording: 12 regimes, 12 channels, 6 sequences of
205-446 steps, regimes of ~50 steps (``data=periodic``'s source: each regime a noisy oscillation per channel).

    python benchmarks/standin_12.py --seed 0 --out /tmp/standin_s0.csv
    python -m pyro_dssm.train data=csv data.path=/tmp/standin_s0.csv data.time_column=t data.label_column=label \\
        data.n_states=12 data.val_fraction=0 model=motion

The sequences are the first 6 training sequences of ``make_periodic(n_states=12, obs_dim=12, seq_len=446,
mean_duration=50, seed=SEED)``, cut to lengths drawn by ``numpy.random.default_rng(SEED).integers(205, 447)``.
Columns ``sequence, t, c0 .. c11, label`` (the true regime). Measured in benchmarks/RESULTS.md ("A 12-regime
stand-in at the held-out set's shape").
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from pyro_dssm.data.periodic import make_periodic

K = D = 12


def write(seed: int, out: Path, mean_duration: float = 50.0) -> list[int]:
    """Write the CSV; returns the true number of segments per sequence."""
    data = make_periodic(n_states=K, obs_dim=D, seq_len=446, n_train=6, n_val=1, mean_duration=mean_duration,
                         seed=seed)
    lengths = np.random.default_rng(seed).integers(205, 447, size=6)
    segments = []
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sequence", "t", *(f"c{j}" for j in range(D)), "label"])
        for i, length in enumerate(lengths):
            x, z = data.train.x[i, :length].numpy(), data.train.states[i, :length].numpy()
            segments.append(int((np.diff(z) != 0).sum() + 1))
            writer.writerows([f"s{i}", t, *(f"{v:.5f}" for v in x[t]), int(z[t])] for t in range(length))
    return segments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    print(f"{args.out}: true segments per sequence {write(args.seed, args.out)}")


if __name__ == "__main__":
    main()
