"""Compare methods on identical data and identical starts: DSSM (each objective), exact baseline, oracle, hmmlearn.

    python benchmarks/compare.py --seeds 0 1 2 --name default
    python benchmarks/compare.py --seeds 0 1 --inits random kmeans em --name inits -- \
        trainer.guide_warmup_steps=0 trainer.keep_best=false
    python benchmarks/compare.py --seeds 0 --name small -- data.n_train=200 trainer.n_epochs=3
    python benchmarks/compare.py --seeds 0 1 2 3 4 5 6 7 8 9 --name hard -- data=hard
    python benchmarks/compare.py --name hard --merge a.json b.json   # one table from runs split by seed

Everything after ``--`` is a Hydra override of the training config (configs/).
``--inits`` (default: ``trainer.init``) is an axis: per seed and init, the
generative networks' start is made once (:func:`shared_start`) and loaded into
every trained method, which then runs with ``trainer.init=none`` (keep the
weights as they are; on the ``random`` axis ``trainer.init=random``, whose first random
start is the shared one and whose other starts are the same for every method). So the
DSSMs and the exact baseline of a seed and init start from the same model, and the
tables separate what the init gives (epoch 0) from what each learning method adds
(end - epoch 0). Only the DSSMs have a
guide, so only they run the guide warm-up.

Writes ``benchmarks/results/NAME.md`` (tables, printed too), ``NAME.json`` (one
record per method, init and seed) and TensorBoard curves under ``--logdir/NAME``
(one run per method/init/seed, so they overlay: accuracy against step, and
against training wall time via ``compare/accuracy_vs_ms``).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from compare_tables import METHODS, OWN_INIT, TRAINED, fmt, summarise, table_rows  # noqa: E402
from machine_info import cpu_model  # noqa: E402
from pyro_dssm.model.exact import ExactBaseline  # noqa: E402
from pyro_dssm.inference.mle import fit_baseline  # noqa: E402
from pyro_dssm.inference.init import initialise  # noqa: E402
from pyro_dssm.evaluation.evaluate import evaluate_hmm, oracle_metrics  # noqa: E402
from pyro_dssm.evaluation.metrics import hungarian_accuracy  # noqa: E402
from pyro_dssm.model.dssm import DSSM, ModelConfig, NeuralHMM  # noqa: E402
from pyro_dssm.io.tracking import Tracker  # noqa: E402
from pyro_dssm.train import load_data, seed_everything  # noqa: E402
from pyro_dssm.inference.trainer import TrainerConfig, fit  # noqa: E402

log = logging.getLogger("compare")
TARGET = 0.98  # fraction of the oracle accuracy that counts as "reached"
INITS = ("random", "kmeans", "em")


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


def model_config(cfg) -> ModelConfig:
    return ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True))


def trainer_config(cfg, overrides) -> TrainerConfig:
    return TrainerConfig(**{**OmegaConf.to_container(cfg.trainer, resolve=True), "device": "cpu", **overrides})


def shared_start(cfg, data, seed: int, init: str) -> tuple[NeuralHMM, float]:
    """The generative networks (transition, emission) every trained method of ``seed`` and ``init`` starts from.

    ``random``: as constructed after ``seed_everything(seed)`` (the weights a DSSM or baseline built
    under that seed has); ``kmeans`` / ``em``: then the data-driven init (pyro_dssm/inference/init.py)
    with the trainer's ``init_*`` settings, run once on the training data with a generator seeded by ``seed``.
    Returns the networks and the seconds the init took.
    """
    seed_everything(seed)
    net = NeuralHMM(model_config(cfg))
    clock = time.perf_counter()
    initialise(net, data.train.x, data.train.mask, trainer_config(cfg, {"init": init}),
               torch.Generator().manual_seed(seed))
    return net, time.perf_counter() - clock


def run_trained(cfg, data, seed, start, logdir, net_class, fit_fn, trainer_overrides, key, accuracy_key, elbo_key):
    """Build ``net_class``, load the generative weights of ``start``, train it with ``fit_fn``, log its curves.

    ``start``: :func:`shared_start`'s (networks, seconds their init took), and the init's name; those seconds are added to
    the training times, as when each method ran its own init.
    """
    start, init_seconds, init = start
    seed_everything(seed)  # the guide's initial weights and the global noise stream: the same for every init
    # trainer.init=none leaves the loaded start as it is (the DSSM's guide warm-up still runs); on the random
    # axis, trainer.init=random: the loaded start is the first of trainer.init_restarts random starts, each
    # trained briefly by the method itself, the best kept (pyro_dssm/inference/random_starts.py)
    trainer_cfg = trainer_config(cfg, {**trainer_overrides, "init": "random" if init == "random" else "none"})
    net = net_class(model_config(cfg))
    missing, unexpected = net.load_state_dict(start.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("posterior.") for k in missing), (missing, unexpected)
    tracker = Tracker(logdir)
    try:
        m = fit_fn(net, data.train, data.val, trainer_cfg, tracker, seed=seed)
        for rec in m["history"]:
            rec["train_seconds"] += init_seconds
        log_curves(tracker, m["history"], key)
    finally:
        tracker.close()
    # the model returned: with trainer.keep_best (DSSM only) the best-ELBO epoch's weights, else the last epoch's
    kept = m["best_epoch"] if trainer_cfg.keep_best and "best_epoch" in m else m["epochs"]
    return {"accuracy": m[accuracy_key], "viterbi_accuracy": m["viterbi_accuracy"],
            "loglik_per_step": m["val_loglik_per_step"], "elbo_per_step": m[elbo_key],
            "train_seconds": m["train_seconds"] + init_seconds, "init_seconds": init_seconds, "history": m["history"], "key": key, "score": m[key],
            "best_epoch": m.get("best_epoch"), "kept_epoch": kept,
            # trainer.init=random: the validation score of every random start, and the one kept (0 = the shared one)
            "random_start_scores": m.get("random_start_scores"), "random_start": m.get("random_start")}


def run_dssm(cfg, data, seed, start, objective, logdir):
    """The DSSM; accuracy = guide argmax."""
    return run_trained(cfg, data, seed, start, logdir, DSSM, fit, {"objective": objective}, "val_accuracy",
                       "val_accuracy", "val_elbo_per_step")


def run_exact(cfg, data, seed, start, logdir):
    """The exact baseline (``baseline.n_epochs`` overrides the trainer's, ``baseline.elbo`` picks its loss);
    its ELBO is log p(X)."""
    baseline = OmegaConf.to_container(cfg.baseline, resolve=True)
    fit_fn = functools.partial(fit_baseline, elbo=baseline.pop("elbo"))
    return run_trained(cfg, data, seed, start, logdir, ExactBaseline, fit_fn, baseline, "viterbi_accuracy",
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
            "elbo_per_step": None, "train_seconds": seconds, "history": history, "key": "viterbi_accuracy",
            "score": acc, "iterations": int(hmm.monitor_.iter)}


def from_start(rec):
    """Add to a trained method's record its score at epoch 0 (the start) and what training added to it.

    ``ratio_epoch0`` / ``ratio``: accuracy / oracle at epoch 0 and of the model returned; ``loglik_epoch0`` /
    ``loglik_per_step``: exact validation log p(X) per step, the same two; ``d_ratio``, ``d_loglik``: end - epoch 0.
    """
    first = rec["history"][0]
    rec["ratio_epoch0"] = first[rec["key"]] / rec["oracle_accuracy"]
    rec["loglik_epoch0"] = first["val_loglik_per_step"]
    rec["d_ratio"] = rec["ratio"] - rec["ratio_epoch0"]
    rec["d_loglik"] = rec["loglik_per_step"] - rec["loglik_epoch0"]
    return rec


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--inits", nargs="+", default=None, choices=INITS,
                        help="starts of the generative networks, each shared by every trained method of a seed "
                             "(default: trainer.init)")
    parser.add_argument("--name", default="default", help="results file stem")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--logdir", type=Path, default=REPO / "benchmarks" / "tb")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="write one table from the records of earlier runs (their .json) instead of running")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=hard trainer.n_epochs=5")
    args = parser.parse_args(argv)
    if args.inits is not None and any(o.lstrip("+~").startswith("trainer.init=") for o in args.overrides):
        parser.error("give the init by --inits or by trainer.init=..., not both")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg = compose(args.overrides)
    inits = args.inits or [cfg.trainer.init]
    records = [rec for seed in args.seeds for rec in run_seed(args, cfg, seed, inits)]
    env = "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS",) if k in os.environ)
    command = env + shlex.join(["python", "benchmarks/compare.py", *(sys.argv[1:] if argv is None else argv)])
    for rec in records:
        rec.update(command=command, machine=machine(), config=config_text(cfg))
    return write_results(args, records, args.seeds, table_rows(args.methods, inits), [command], [machine()],
                         config_text(cfg))


def run_seed(args, cfg, seed, inits):
    """The records of one seed: the oracle and hmmlearn once, each trained method once per init from its start."""
    data = load_data(cfg.data, seed)
    oracle = oracle_metrics(data.params, data.val)
    target = TARGET * oracle["oracle_accuracy"]
    records = []
    for method in [m for m in args.methods if m in OWN_INIT]:
        log.info("seed %d: %s", seed, method)
        if method == "oracle":
            rec = {"accuracy": oracle["oracle_accuracy"], "viterbi_accuracy": None,
                   "loglik_per_step": oracle["oracle_loglik_per_step"], "elbo_per_step": None,
                   "train_seconds": 0.0, "history": [], "seconds_to_target": 0.0, "ratio": 1.0}
        else:
            logdir = args.logdir / args.name / method / f"seed{seed}"
            rec = run_hmmlearn(data, seed, cfg.data.n_states, logdir) or {"status": "not installed"}
        records.append(finish(rec, method, OWN_INIT[method], seed, oracle, target))
    for init in inits:
        start = (*shared_start(cfg, data, seed, init), init)
        start_loglik = evaluate_hmm(start[0], data.val)["val_loglik_per_step"]
        for method in [m for m in args.methods if m in TRAINED]:
            logdir = args.logdir / args.name / method / init / f"seed{seed}"
            log.info("seed %d, init %s: %s", seed, init, method)
            if method == "exact":
                rec = run_exact(cfg, data, seed, start, logdir)
            else:
                rec = run_dssm(cfg, data, seed, start, method.split("-", 1)[1], logdir)
            rec = from_start(finish(rec, method, init, seed, oracle, target))
            rec["loglik_shared_start"] = start_loglik
            # with random restarts the run's epoch 0 is the best of them, the shared start only the first
            restarted = init == "random" and trainer_config(cfg, {}).init_restarts > 1
            if not restarted and not math.isclose(rec["loglik_epoch0"], start_loglik, rel_tol=1e-9, abs_tol=1e-9):
                raise RuntimeError(f"seed {seed}, init {init}: {method} did not start from the shared start "
                                   f"(epoch-0 log p(X)/step {rec['loglik_epoch0']!r}, start {start_loglik!r})")
            records.append(rec)
    return records


def finish(rec, method, init, seed, oracle, target):
    """Label ``rec`` and add its time to the target and, for a trained method, the returned model's ratio."""
    if "key" in rec:
        rec["seconds_to_target"] = time_to_target(rec["history"], rec["key"], target)
        # the returned model's score (with trainer.keep_best: the best-ELBO epoch's, not the last's)
        rec["ratio"] = rec["score"] / oracle["oracle_accuracy"]
    rec.update(method=method, init=init, seed=seed, oracle_accuracy=oracle["oracle_accuracy"])
    log.info("seed %d %s (%s): accuracy %s ratio %s", seed, method, init, fmt(rec.get("accuracy")),
             fmt(rec.get("ratio"), ".3f"))
    return rec


def config_text(cfg) -> str:
    """The settings every record of a run shares; the init is per record (``--inits``), so not here."""
    trainer = {k: v for k, v in OmegaConf.to_container(cfg.trainer).items() if k != "init"}
    return (f"`{OmegaConf.to_container(cfg.data)}`; trainer `{trainer}`; "
            f"baseline `{OmegaConf.to_container(cfg.baseline)}`")


def merge(args):
    """One table from the records of several runs (e.g. seeds or inits split over processes)."""
    records = [r for path in args.merge for r in json.loads(path.read_text())]
    for r in records:  # records written before the init axis: the init of their config, and the epoch-0 columns
        if "init" not in r:
            found = re.search(r"'init': '(\w+)'", r.get("config", ""))
            if r["method"] not in OWN_INIT and found is None:
                raise ValueError(f"--merge: a {r['method']} record has no init and its config names none")
            r["init"] = OWN_INIT.get(r["method"]) or found.group(1)
            if r["method"] in TRAINED:
                from_start(r)
    seeds = sorted({r["seed"] for r in records})
    methods = [m for m in METHODS if any(r["method"] == m for r in records)]
    inits = [i for i in INITS if any(r["init"] == i for r in records)]
    commands = list(dict.fromkeys(r.get("command", "?") for r in records))
    machines = list(dict.fromkeys(r.get("machine", "?") for r in records))
    configs = list(dict.fromkeys(r.get("config", "?") for r in records))
    if len(configs) > 1:
        raise ValueError(f"--merge: the records come from different configs: {configs}")
    return write_results(args, records, seeds, table_rows(methods, inits), commands, machines, configs[0])


def write_results(args, records, seeds, rows, commands, machines, config):
    args.out.mkdir(parents=True, exist_ok=True)
    table = summarise(records, seeds, rows)
    inits = list(dict.fromkeys(i for m, i in rows if m in TRAINED))
    header = (f"# compare: {args.name}\n\nCommand: " + "; ".join(f"`{c}`" for c in commands) + "\n\n"
              f"Machine: {'; '.join(machines)}\n\nConfig: {config}\n\n"
              f"Inits: {', '.join(inits)}. For each seed and init the generative networks (transition, emission) "
              f"start from one set of weights, loaded into every trained method (DSSM trace, DSSM analytic, exact "
              f"baseline): `random` = as constructed under the seed, `kmeans` / `em` = the trainer's data-driven "
              f"init, run once. After that the start is method-specific: on `random` each method trains "
              f"trainer.init_restarts random starts (the shared one first, the others the same for every method) "
              f"briefly and keeps the best by its own validation score, so its epoch 0 is that start; the DSSMs "
              f"fit their guide to the start's exact posterior (trainer.guide_warmup_steps) before epoch 0; the "
              f"exact baseline has no guide. "
              f"hmmlearn (init `own`) starts from its own k-means; the oracle (`-`) is the true HMM.\n\n"
              f"Accuracy: Hungarian-matched on validation; DSSM = guide argmax, exact = posterior-marginal argmax "
              f"(Viterbi beside it), hmmlearn = Viterbi. Ratio and time-to-target use the DSSM guide, the exact "
              f"baseline's and hmmlearn's Viterbi accuracy. Times exclude evaluation and include the shared init "
              f"(made once per seed and init, its seconds counted for every trained method).\n\n")
    text = header + table + "\n"
    (args.out / f"{args.name}.md").write_text(text)
    (args.out / f"{args.name}.json").write_text(json.dumps(records, indent=1))
    print(text)
    return records


if __name__ == "__main__":
    main()
