"""Honey-bee waggle dances (../shared/data/bee/bee.csv): DSSM against hmmlearn's GaussianHMM, same features.

    python benchmarks/bee.py                                   # features raw+absdiff, smoothed over 9 steps
    python benchmarks/bee.py --features raw --smooth 1 --seeds 0 1 2
    python benchmarks/bee.py --smooth 5 -- trainer.n_epochs=40 data.noise_std=0.7

Everything after ``--`` is a Hydra override of the DSSM's training config. Both
methods see the same sequences after the same per-step features and
standardisation (:func:`pyro_dssm.data.files.load_file_data`), K = 3 states, and
are scored on all three sequences (unsupervised: the labels are never used for
training) by Hungarian accuracy, NMI and ARI. Prints a markdown table (median,
min, max over seeds) with the machine it ran on; a failed run is a row, not a
silence.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine_info import cpu_model  # noqa: E402
from pyro_dssm.data.files import FileDataConfig, load_file_data  # noqa: E402
from pyro_dssm.evaluation.metrics import clustering_scores  # noqa: E402
from pyro_dssm.train import train  # noqa: E402

BEE = REPO.parent / "shared" / "data" / "bee" / "bee.csv"
SCORES = ("accuracy", "nmi", "ari")


def dssm_overrides(path: Path, features: list[str], smooth: int, extra: list[str]) -> list[str]:
    """The training command of the README, as Hydra overrides."""
    return ["data=csv", f"data.path={path}", "data.time_column=t", "data.label_column=label", "data.val_fraction=0",
            f"data.features=[{','.join(features)}]", f"data.smooth={smooth}", "data.window=100", "data.stride=50",
            "trainer.batch_size=16", "trainer.figure_every=0", *extra]


def run_dssm(path: Path, features: list[str], smooth: int, seed: int, extra: list[str]) -> dict[str, float]:
    from hydra import compose, initialize_config_dir

    overrides = [*dssm_overrides(path, features, smooth, extra), f"seed={seed}"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        metrics = train(cfg, run_dir)
    return {"accuracy": metrics["val_accuracy"], "nmi": metrics["val_nmi"], "ari": metrics["val_ari"],
            "viterbi_accuracy": metrics["viterbi_accuracy"], "seconds": metrics["train_seconds"]}


def run_hmmlearn(path: Path, features: list[str], smooth: int, seed: int, covariance: str) -> dict[str, float]:
    from hmmlearn.hmm import GaussianHMM

    data = load_file_data(FileDataConfig(path=str(path), time_column="t", label_column="label", val_fraction=0,
                                         features=features, smooth=smooth), seed)
    seqs = data.val  # all three sequences, standardised like the DSSM's input
    mask = seqs.mask
    x, lengths = seqs.x[mask].numpy().astype(np.float64), seqs.lengths.tolist()
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hmmlearn's convergence chatter
        hmm = GaussianHMM(3, covariance_type=covariance, n_iter=200, random_state=seed).fit(x, lengths)
    pred = hmm.predict(x, lengths)  # Viterbi
    scores = clustering_scores(seqs.states[mask].numpy(), pred, 3)
    return {**scores, "seconds": time.perf_counter() - start}


def machine() -> str:
    return f"{cpu_model()}; torch {torch.__version__} ({torch.get_num_threads()} threads); python {platform.python_version()}"


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--features", nargs="+", default=["raw", "absdiff"])
    parser.add_argument("--smooth", type=int, default=9, help="moving-average width (data.smooth)")
    parser.add_argument("--path", type=Path, default=BEE)
    parser.add_argument("--skip-dssm", action="store_true")
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    if not args.path.is_file():
        sys.exit(f"error: {args.path} not found (the shared bee data)")
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    methods = {f"hmmlearn GaussianHMM ({cov})":
               (lambda s, cov=cov: run_hmmlearn(args.path, args.features, args.smooth, s, cov))
               for cov in ("spherical", "diag", "full")}
    if not args.skip_dssm:
        methods = {"DSSM (guide states)": lambda s: run_dssm(args.path, args.features, args.smooth, s, extra),
                   **methods}
    rows = []
    for name, fn in methods.items():
        results, failures = [], []
        for seed in args.seeds:
            try:
                results.append(fn(seed))
            except Exception as exc:  # a failed run is reported, never hidden
                failures.append(f"seed {seed}: {type(exc).__name__}: {exc}")
            print(f"{name} seed {seed}: {results[-1] if results and not failures[-1:] else failures[-1]}",
                  file=sys.stderr)
        cells = [summary([r[k] for r in results]) for k in SCORES]
        rows.append(f"| {name} | {' | '.join(cells)} | {len(results)}/{len(args.seeds)} |")
        rows += [f"|   failed: {f} | | | | |" for f in failures]
    print(f"\nbee.csv, features {args.features}, smooth {args.smooth}, K=3, seeds {args.seeds}"
          f"{', overrides ' + ' '.join(extra) if extra else ''}\n")
    print("| method | Hungarian accuracy | NMI | ARI | runs ok |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    print(f"\nmedian (min-max) over seeds; machine: {machine()}")


if __name__ == "__main__":
    main()
