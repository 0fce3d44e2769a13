"""Markdown tables of ``benchmarks/compare.py``'s records: summary, what training added to the start,
accuracy / oracle per seed, and the epoch each method kept. One record per (method, init, seed)."""

from __future__ import annotations

import math
import statistics

METHODS = ("dssm-trace", "dssm-analytic", "exact", "oracle", "hmmlearn")
TRAINED = METHODS[:3]  # the methods that start from the shared start of their seed and init
OWN_INIT = {"oracle": "-", "hmmlearn": "own"}  # the init column of the methods without a shared start


def fmt(v, spec=".4f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def mmm(vals, spec=".4f"):
    """``median [min, max]`` of ``vals``, or "-" for none."""
    if not vals:
        return "-"
    return f"{fmt(statistics.median(vals), spec)} [{fmt(min(vals), spec)}, {fmt(max(vals), spec)}]"


def table_rows(methods, inits):
    """(method, init) of every row: each trained method under each init, then the oracle and hmmlearn once."""
    return ([(m, i) for i in inits for m in TRAINED if m in methods]
            + [(m, OWN_INIT[m]) for m in METHODS if m in OWN_INIT and m in methods])


def summarise(records, seeds, rows):
    """Markdown: summary, what training added to the start (median [min, max]) and per-seed accuracy / oracle."""
    trained = [row for row in rows if row[0] in TRAINED]
    return "\n".join(summary_table(records, rows) + learning_table(records, trained)
                     + per_seed_table(records, seeds, [row for row in rows if row[0] != "oracle"])
                     + kept_epochs(records, trained))


def column(records, method, init, key):
    """The non-missing values of ``key`` over the records (seeds) of ``method`` and ``init``."""
    return [r[key] for r in records if (r["method"], r["init"]) == (method, init) and r.get(key) is not None]


def summary_table(records, rows):
    lines = ["| method | init | accuracy | Viterbi accuracy | accuracy / oracle (min) | log p(X)/step | ELBO/step | "
             "train s | s to 0.98 x oracle | reached |", "|---|---|---|---|---|---|---|---|---|---|"]
    for method, init in rows:
        mine = [r for r in records if (r["method"], r["init"]) == (method, init)]
        if mine and mine[0].get("status") == "not installed":
            lines.append(f"| {method} | {init} | not installed | | | | | | | |")
            continue
        specs = [("accuracy", ".4f"), ("viterbi_accuracy", ".4f"), ("ratio", ".3f"), ("loglik_per_step", ".4f"),
                 ("elbo_per_step", ".4f"), ("train_seconds", ".1f"), ("seconds_to_target", ".1f")]
        cells = [mmm(column(records, method, init, key), spec) for key, spec in specs]
        reached = column(records, method, init, "seconds_to_target")
        lines.append(f"| {method} | {init} | " + " | ".join(cells) + f" | {len(reached)}/{len(mine)} |")
    return lines


def learning_table(records, rows):
    """What training added to the start: epoch 0, end and end - epoch 0 of accuracy / oracle and log p(X)."""
    lines = ["", "From the start (epoch 0) to the model returned (end), median [min, max] over seeds; "
             "accuracy / oracle as above, log p(X)/step exact on validation:", "",
             "| method | init | accuracy / oracle, epoch 0 | accuracy / oracle, end | end - epoch 0 | "
             "log p(X)/step, epoch 0 | log p(X)/step, end | end - epoch 0 | kept epoch | log p(X) rose |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    specs = [("ratio_epoch0", ".3f"), ("ratio", ".3f"), ("d_ratio", "+.3f"), ("loglik_epoch0", ".4f"),
             ("loglik_per_step", ".4f"), ("d_loglik", "+.4f"), ("kept_epoch", "g")]
    for method, init in rows:
        cells = [mmm(column(records, method, init, key), spec) for key, spec in specs]
        rose = column(records, method, init, "d_loglik")
        lines.append(f"| {method} | {init} | " + " | ".join(cells) + f" | {sum(d > 0 for d in rose)}/{len(rose)} |")
    return lines


def per_seed_table(records, seeds, rows):
    seed_cells = " | ".join(f"seed {s}" for s in seeds)
    lines = ["", "Per seed, accuracy / oracle accuracy of the model returned (the convergence bar is on every seed):",
             "", f"| method | init | {seed_cells} | min | median | >= 0.95 | >= 0.98 |",
             "|---|---|" + "---|" * (len(seeds) + 4)]
    for method, init in rows:
        by_seed = {r["seed"]: r.get("ratio") for r in records if (r["method"], r["init"]) == (method, init)}
        vals = [v for v in by_seed.values() if v is not None]
        counts = " | ".join(f"{sum(v >= bar for v in vals)}/{len(vals)}" for bar in (0.95, 0.98))
        tail = f" | {min(vals):.3f} | {statistics.median(vals):.3f} | {counts} |" if vals else " | - | - | - | - |"
        lines.append(f"| {method} | {init} | " + " | ".join(fmt(by_seed.get(s), ".3f") for s in seeds) + tail)
    return lines


def kept_epochs(records, rows):
    kept = {(m, i): [f"{r['seed']}: {r['kept_epoch']}" for r in sorted(records, key=lambda r: r["seed"])
                     if (r["method"], r["init"]) == (m, i) and r.get("kept_epoch") is not None] for m, i in rows}
    if not any(kept.values()):
        return []
    return ["", "Epoch whose weights each method ended with, per seed (DSSM with trainer.keep_best: the best "
            "validation ELBO's, 0 = the start; otherwise the last): "
            + "; ".join(f"{m} {i} {{{', '.join(v)}}}" for (m, i), v in kept.items() if v)]
