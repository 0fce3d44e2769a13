"""Compare methods on identical data: DSSM (each objective), exact baseline, oracle, hmmlearn.

    python benchmarks/compare.py --seeds 0 1 2 --name default
    python benchmarks/compare.py --seeds 0 --name small -- data.n_train=200 trainer.n_epochs=3
    python benchmarks/compare.py --seeds 0 1 2 3 4 5 6 7 8 9 --name hard -- data=hard
    python benchmarks/compare.py --name hard --merge a.json b.json   # one table from runs split by seed

Everything after ``--`` is a Hydra override of the training config (configs/).
Writes ``benchmarks/results/NAME.md`` (table, printed too), ``NAME.json`` (one
record per method and seed) and TensorBoard curves under ``--logdir/NAME``
(one run per method/seed, so they overlay: accuracy against step, and against
training wall time via ``compare/accuracy_vs_ms``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine_info import cpu_model  # noqa: E402
from pyro_dssm.model.exact import ExactBaseline  # noqa: E402
from pyro_dssm.inference.mle import fit_baseline  # noqa: E402
from pyro_dssm.evaluation.evaluate import oracle_metrics  # noqa: E402
from pyro_dssm.evaluation.metrics import hungarian_accuracy  # noqa: E402
from pyro_dssm.model.dssm import DSSM, ModelConfig  # noqa: E402
from pyro_dssm.io.tracking import Tracker  # noqa: E402
from pyro_dssm.train import load_data, seed_everything  # noqa: E402
from pyro_dssm.inference.trainer import TrainerConfig, fit  # noqa: E402

log = logging.getLogger("compare")
TARGET = 0.98  # fraction of the oracle accuracy that counts as "reached"
METHODS = ("dssm-trace", "dssm-analytic", "exact", "oracle", "hmmlearn")


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def machine() -> str:
    cpu = cpu_model()
    try:
        import hmmlearn

        hmml = hmmlearn.__version__
    except ImportError:
        hmml = "not installed"
    return (f"{cpu}; torch {torch.__version__} ({torch.get_num_threads()} threads); pyro {pyro.__version__}; "
            f"hmmlearn {hmml}; python {platform.python_version()}")


def time_to_target(history, key, target):
    """Training seconds at the first evaluation whose ``key`` reaches ``target``, else None."""
    for rec in history:
        if rec.get(key, -1) >= target:
            return rec["train_seconds"]
    return None


def log_curves(tracker: Tracker, history, key):
    for rec in history:
        tracker.scalars({"accuracy": rec[key]}, rec["step"], "compare/")
        tracker.scalars({"accuracy_vs_ms": rec[key]}, int(rec["train_seconds"] * 1000), "compare/")
        tracker.scalars({"loglik_per_step": rec["val_loglik_per_step"]}, rec["step"], "compare/")


def run_trained(cfg, data, seed, logdir, net_class, fit_fn, trainer_overrides, key, accuracy_key, elbo_key):
    """Build ``net_class`` from the model config, train it with ``fit_fn`` and log its curves."""
    seed_everything(seed)
    trainer_cfg = TrainerConfig(**{**OmegaConf.to_container(cfg.trainer, resolve=True), "device": "cpu",
                                   **trainer_overrides})
    net = net_class(ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True)))
    tracker = Tracker(logdir)
    try:
        m = fit_fn(net, data.train, data.val, trainer_cfg, tracker, seed=seed)
        log_curves(tracker, m["history"], key)
    finally:
        tracker.close()
    return {"accuracy": m[accuracy_key], "viterbi_accuracy": m["viterbi_accuracy"],
            "loglik_per_step": m["val_loglik_per_step"], "elbo_per_step": m[elbo_key],
            "train_seconds": m["train_seconds"], "history": m["history"], "key": key, "score": m[key],
            "best_epoch": m.get("best_epoch")}


def run_dssm(cfg, data, seed, objective, logdir):
    """The DSSM; accuracy = guide argmax."""
    return run_trained(cfg, data, seed, logdir, DSSM, fit, {"objective": objective}, "val_accuracy",
                       "val_accuracy", "val_elbo_per_step")


def run_exact(cfg, data, seed, logdir):
    """The exact baseline (``baseline`` config group overrides the trainer); its ELBO is log p(X)."""
    return run_trained(cfg, data, seed, logdir, ExactBaseline, fit_baseline,
                       OmegaConf.to_container(cfg.baseline, resolve=True), "viterbi_accuracy",
                       "marginal_accuracy", "val_loglik_per_step")


def run_hmmlearn(data, seed, n_states, logdir):
    try:
        from hmmlearn.hmm import GaussianHMM
    except ImportError:
        return None
    def flat(d):
        x = d.x.numpy().astype(np.float64)
        lengths = d.lengths.numpy()
        return np.concatenate([x[i, :n] for i, n in enumerate(lengths)]), lengths
    X, L = flat(data.train)
    Xv, Lv = flat(data.val)
    hmm = GaussianHMM(n_components=n_states, covariance_type="diag", n_iter=100, random_state=seed)
    start = time.perf_counter()
    hmm.fit(X, L)
    seconds = time.perf_counter() - start
    pred = torch.as_tensor(hmm.predict(Xv, Lv))
    true = torch.cat([data.val.states[i, :n] for i, n in enumerate(data.val.lengths)])
    acc = hungarian_accuracy(true, pred, n_states)
    history = [{"step": int(hmm.monitor_.iter), "train_seconds": seconds, "viterbi_accuracy": acc,
                "val_loglik_per_step": hmm.score(Xv, Lv) / len(Xv)}]
    tracker = Tracker(logdir)
    log_curves(tracker, history, "viterbi_accuracy")
    tracker.close()
    return {"accuracy": acc, "viterbi_accuracy": acc, "loglik_per_step": history[0]["val_loglik_per_step"],
            "elbo_per_step": None, "train_seconds": seconds, "history": history, "key": "viterbi_accuracy", "score": acc,
            "iterations": int(hmm.monitor_.iter)}


def fmt(v, spec=".4f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def summarise(records, seeds, methods):
    """Markdown: summary (median [min, max]) and per-seed accuracy / oracle ratios."""
    def col(method, key):
        vals = [r[key] for r in records if r["method"] == method and r.get(key) is not None]
        return vals

    def mmm(vals, spec=".4f"):
        if not vals:
            return "-"
        return f"{fmt(statistics.median(vals), spec)} [{fmt(min(vals), spec)}, {fmt(max(vals), spec)}]"

    lines = ["| method | accuracy | Viterbi accuracy | accuracy / oracle (min) | log p(X)/step | ELBO/step | "
             "train s | s to 0.98 x oracle | reached |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method in methods:
        recs = [r for r in records if r["method"] == method]
        if recs and recs[0].get("status") == "not installed":
            lines.append(f"| {method} | not installed | | | | | | | |")
            continue
        ratios = col(method, "ratio")
        reached = [r for r in recs if r.get("seconds_to_target") is not None]
        lines.append(
            f"| {method} | {mmm(col(method, 'accuracy'))} | {mmm(col(method, 'viterbi_accuracy'))} | "
            f"{mmm(ratios, '.3f')} | {mmm(col(method, 'loglik_per_step'))} | {mmm(col(method, 'elbo_per_step'))} | "
            f"{mmm(col(method, 'train_seconds'), '.1f')} | {mmm(col(method, 'seconds_to_target'), '.1f')} | "
            f"{len(reached)}/{len(recs)} |")
    lines += ["", "Per seed, accuracy / oracle accuracy (the bar of issue 4 is on every seed):", "",
              "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | min | median | >= 0.95 | >= 0.98 |",
              "|---|" + "---|" * (len(seeds) + 4)]
    for method in methods:
        if method == "oracle":
            continue
        by_seed = {r["seed"]: r.get("ratio") for r in records if r["method"] == method}
        vals = [v for v in by_seed.values() if v is not None]
        counts = " | ".join(f"{sum(v >= bar for v in vals)}/{len(vals)}" for bar in (0.95, 0.98))
        lines.append(f"| {method} | " + " | ".join(fmt(by_seed.get(s), ".3f") for s in seeds)
                     + (f" | {min(vals):.3f} | {statistics.median(vals):.3f} | {counts} |" if vals else " | - | - | - | - |"))
    best = {r["method"]: [] for r in records if r.get("best_epoch") is not None}
    for r in sorted(records, key=lambda r: r["seed"]):
        if r.get("best_epoch") is not None:
            best[r["method"]].append(f"{r['seed']}: {r['best_epoch']}")
    if best:
        lines += ["", "Epoch whose weights the DSSM ended with (trainer.keep_best: best validation ELBO; "
                  "0 = the initialised model): " + "; ".join(f"{m} {{{', '.join(v)}}}" for m, v in best.items())]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="default", help="results file stem")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--logdir", type=Path, default=REPO / "benchmarks" / "tb")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="write one table from the records of earlier runs (their .json) instead of running")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=hard trainer.n_epochs=5")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = compose(args.overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    records = []
    for seed in args.seeds:
        data = load_data(cfg.data, seed)
        oracle = oracle_metrics(data.params, data.val)
        target = TARGET * oracle["oracle_accuracy"]
        for method in args.methods:
            logdir = args.logdir / args.name / method / f"seed{seed}"
            log.info("seed %d: %s", seed, method)
            if method == "oracle":
                rec = {"accuracy": oracle["oracle_accuracy"], "viterbi_accuracy": None,
                       "loglik_per_step": oracle["oracle_loglik_per_step"], "elbo_per_step": None,
                       "train_seconds": 0.0, "history": []}
            elif method == "exact":
                rec = run_exact(cfg, data, seed, logdir)
            elif method == "hmmlearn":
                rec = run_hmmlearn(data, seed, cfg.data.n_states, logdir) or {"status": "not installed"}
            else:
                rec = run_dssm(cfg, data, seed, method.split("-", 1)[1], logdir)
            if "key" in rec:
                rec["seconds_to_target"] = time_to_target(rec["history"], rec["key"], target)
                # the returned model's score (with trainer.keep_best: the best-ELBO epoch's, not the last's)
                rec["ratio"] = rec["score"] / oracle["oracle_accuracy"]
            elif method == "oracle":
                rec["seconds_to_target"], rec["ratio"] = 0.0, 1.0
            rec.update(method=method, seed=seed, oracle_accuracy=oracle["oracle_accuracy"])
            log.info("seed %d %s: accuracy %s ratio %s", seed, method, fmt(rec.get("accuracy")),
                     fmt(rec.get("ratio"), ".3f"))
            records.append(rec)
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    config = f"`{OmegaConf.to_container(cfg.data)}`; trainer `{OmegaConf.to_container(cfg.trainer)}`"
    for rec in records:
        rec.update(command=command, machine=machine(), config=config)
    return write_results(args, records, args.seeds, args.methods, [command], [machine()], config)


def merge(args):
    """One table from the records of several runs (e.g. seeds split over processes)."""
    records = [r for path in args.merge for r in json.loads(path.read_text())]
    seeds = sorted({r["seed"] for r in records})
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    commands = list(dict.fromkeys(r.get("command", "?") for r in records))
    machines = list(dict.fromkeys(r.get("machine", "?") for r in records))
    configs = list(dict.fromkeys(r.get("config", "?") for r in records))
    if len(configs) > 1:
        raise ValueError(f"--merge: the records come from different configs: {configs}")
    return write_results(args, records, seeds, methods, commands, machines, configs[0])


def write_results(args, records, seeds, methods, commands, machines, config):
    args.out.mkdir(parents=True, exist_ok=True)
    table = summarise(records, seeds, methods)
    header = (f"# compare: {args.name}\n\nCommand: " + "; ".join(f"`{c}`" for c in commands) + "\n\n"
              f"Machine: {'; '.join(machines)}\n\nConfig: {config}\n\n"
              f"Accuracy: Hungarian-matched on validation; DSSM = guide argmax, exact = posterior-marginal argmax "
              f"(Viterbi beside it), hmmlearn = Viterbi. Ratio and time-to-target use the DSSM guide, the exact "
              f"baseline's and hmmlearn's Viterbi accuracy. Times exclude evaluation.\n\n")
    text = header + table + "\n"
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(json.dumps(records, indent=1))
    print(text)
    return records


if __name__ == "__main__":
    main()
