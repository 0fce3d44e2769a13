"""Does BIC pick the true K? ``pyro_dssm.select_k`` on synthetic data with K=5, seeds 0-9.

    OMP_NUM_THREADS=1 python benchmarks/select_k.py --seeds 0 1 2 3 4 5 6 7 8 9 --k 2 3 4 5 6 7 \\
        --out benchmarks/results/select_k.md

Each seed draws its own data set (``data.n_states=5``, D=10, T=100, 100
training and 50 validation sequences, ``seed=S``) and trains one model per K
with short settings (:data:`SETTINGS`: one epoch after the EM init; BIC needs
the HMM the networks define, which the init already fits) through
:func:`pyro_dssm.select_k.sweep`, the code of the command. The table gives,
per K, how often it had the least BIC and the median [min, max] over seeds of
BIC minus the seed's least BIC, the held-out log p(X) per step and the training
seconds. A seed that fails keeps its row with the error.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from machine_info import cpu_model  # noqa: E402
from pyro_dssm.select_k import best_k, sweep  # noqa: E402

TRUE_K = 5
SETTINGS = [f"data.n_states={TRUE_K}", "data.n_train=100", "data.n_val=50", "trainer.n_epochs=1",
            "trainer.init_restarts=2", "trainer.guide_warmup_steps=20", "trainer.figure_every=0", "trainer.device=cpu"]


def spread(values: list[float], fmt: str) -> str:
    """median [min, max]"""
    if not values:
        return "-"
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def report(runs: list[dict], ks: list[int], wall: float) -> str:
    """The markdown page: headline, one row per K, one row per seed."""
    ok = [r for r in runs if "rows" in r]
    picks = [r["picked"] for r in ok]
    lines = [f"# Choosing K by BIC: synthetic data with K={TRUE_K}, seeds {runs[0]['seed']}-{runs[-1]['seed']}", "",
             f"{cpu_model()}; torch {torch.__version__} ({torch.get_num_threads()} thread); "
             f"python {platform.python_version()}; {wall / 60:.1f} min in all", "",
             f"settings: `{' '.join(SETTINGS)}`, K in {ks}", "",
             f"**picked K={TRUE_K} on {picks.count(TRUE_K)} of {len(runs)} seeds** "
             f"({len(runs) - len(ok)} failed); sweep minutes per seed: "
             f"{spread([r['seconds'] / 60 for r in ok], '.1f')}", "",
             "| K | least BIC (seeds) | BIC - least BIC | held-out log p(X)/step | train s |",
             "|---:|---:|---:|---:|---:|"]
    for K in ks:
        rows = [(r, next(x for x in r["rows"] if x["K"] == K)) for r in ok]
        delta = [x["bic"] - min(y["bic"] for y in r["rows"]) for r, x in rows]
        lines.append(f"| {K} | {picks.count(K)} | {spread(delta, '.1f')} | "
                     f"{spread([x['heldout_loglik_per_step'] for _, x in rows], '.4f')} | "
                     f"{spread([x['train_seconds'] for _, x in rows], '.1f')} |")
    lines += ["", "| seed | picked K | BIC - least BIC at K = " + ", ".join(map(str, ks)) + " |", "|---:|---:|---|"]
    for r in runs:
        if "rows" not in r:
            lines.append(f"| {r['seed']} | failed | {r['error']} |")
            continue
        least = min(x["bic"] for x in r["rows"])
        lines.append(f"| {r['seed']} | {r['picked']} | " + ", ".join(f"{x['bic'] - least:.0f}" for x in r["rows"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--k", type=int, nargs="+", default=[2, 3, 4, 5, 6, 7])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "select_k.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    runs, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="select_k_") as tmp:
        for seed in args.seeds:
            clock = time.perf_counter()
            try:
                rows = sweep(args.k, [*SETTINGS, f"seed={seed}"], Path(tmp) / f"seed{seed}")
                runs.append({"seed": seed, "rows": rows, "picked": best_k(rows), "seconds": time.perf_counter() - clock})
            except Exception as exc:  # a failed seed is reported, not hidden
                runs.append({"seed": seed, "error": f"{type(exc).__name__}: {exc}"[:300]})
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "rows"}), flush=True)
    text = report(runs, args.k, time.perf_counter() - start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=1))
    print(text)


if __name__ == "__main__":
    main()
