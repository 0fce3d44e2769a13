"""Seconds to a target accuracy beside the peer libraries (issue 25): hmmlearn, dynamax, pomegranate and this
project (exact baseline and DSSM) on the same data, in one run, one thread each.

    /tmp/peersenv/bin/python benchmarks/peers.py                        # both data sets, every method, 3 repeats
    python benchmarks/peers.py --data default --methods hmmlearn pyro_dssm-exact --repeats 1 -- data.n_train=200

Everything after ``--`` is a Hydra override of the synthetic data and of this project's settings.

The peers are optional: each is imported inside the function that runs it, and a method whose library does
not import is a record with ``"skipped"`` (the reason), so the script runs anywhere; the venv of
``benchmarks/peers_regimes.py`` has them all (RESULTS.md, "Regimes that last").

Data, peers' models and target:

- ``default``: the data of ``python -m pyro_dssm.train`` (synthetic HMM, K=5, D=10, T=100, 1000 training and
  200 validation sequences, seed 0). Every method fits the training sequences and decodes the validation
  ones. Target: 0.98 x the oracle's accuracy (decoding with the true HMM). Peers: a diagonal-covariance
  Gaussian HMM, K=5, one fit (hmmlearn's and pomegranate's k-means start with random_state 0; dynamax's
  ``DiagonalGaussianHMM``, k-means start with key 0).
- ``bee``: the three bee dances (``../shared/data/bee/``), K=3, fitted and scored on all frames. Target: 0.90.
  Peers as ``benchmarks/peers_regimes.py`` runs them: hmmlearn and pomegranate full covariance, dynamax's
  ``LinearAutoregressiveHMM`` (one lag), on the channels z-normalised, best of 5 restarts by log-likelihood.
  This project: ``data=csv data.path=.../bee.csv data.time_column=t data.label_column=label
  data.val_fraction=0 model.emission=autoregressive`` (the recommended settings).

Accuracy: Hungarian-matched accuracy of the Viterbi path (``pyro_dssm.evaluation.metrics``) on the
validation sequences (bee: every frame), of the model each method ends with. The labels are read only to
score and time; no method sees them.

Seconds to target:

- hmmlearn, pomegranate (no per-iteration callback): fits from the same start with at most n_iter
  (max_iter) EM iterations, n = 1, 2, 4, ... up to ``--max-iter``, then bisection between the last n that
  missed and the first that reached: the wall time of the fit with the fewest iterations whose accuracy
  reaches the target. Their tolerance (0.01) applies as by default. ``seconds_total``: the fit of
  ``--max-iter`` iterations. With restarts every probe runs them all and keeps the best by likelihood.
- dynamax: one compiled EM step at a time; seconds = the k-means start + the steps up to the first whose
  parameters reach the target (scoring and decoding between steps untimed). ``compile_seconds`` (tracing
  and compiling the start, step, score and decode programs, in the process's first run) is apart. No
  tolerance: ``seconds_total`` is ``--max-iter`` steps. With restarts, at each step count the restart with
  the best likelihood counts, and the time is all restarts' up to that step count.
- pyro_dssm-dssm: ``pyro_dssm.train.train_model(cfg, run_dir=None)`` with the configs' defaults; the wall
  time from the start of ``train_model`` (data, oracle, init, guide warm-up included) to the end of the
  first evaluation (epoch 0 = after the init and warm-up, then every epoch) whose ``viterbi_accuracy``
  reaches the target. ``trainer.stop_after_epoch`` at that epoch ends the same trajectory there (the
  schedules follow ``n_epochs``), so this is also the time of a run stopped once it gets there;
  ``seconds_total`` is the whole default run. ``train_seconds_to_target``: the trainer's own clock at that
  evaluation (init and steps, evaluations excluded), comparable with the peers' fit times.
- pyro_dssm-exact: ``pyro_dssm.inference.mle.fit_baseline`` with the trainer's settings and ``baseline.*``
  over them (as ``benchmarks/compare.py`` runs it), timed the same way from before its data are made. As for
  hmmlearn, runs with at most n Baum-Welch iterations in its classical init (``trainer.init_em_iters=n``,
  n = 1, 2, 4, ... and the configured 20; its 4 k-means restarts kept): ``seconds_to_target`` is the fastest of
  them to reach the target, ``default_seconds_to_target`` the default run's (20 iterations).

This project's runs are timed from outside by ``benchmarks/run_clock.py`` (the evaluations and the ends of
the init and guide warm-up, ``init_end_seconds`` and ``warmup_end_seconds`` in ``runs``); nothing in the
package is modified.

Each method runs ``--repeats`` times in this process, the methods in turn within each repeat (a change in
the machine's load falls on all of them), its library imported before its first run. Medians are reported,
every repeat is in the record's ``runs`` (the first run of a method in a process also pays its first calls'
costs, which the median of three leaves out). A method that fails is a record with ``"error"``, not a
silence.

Writes ``--out`` (a JSON list, one record per data set and method: ``data``, ``method``,
``seconds_to_target``, ``accuracy``, ``reached``, and where they apply ``seconds_total``,
``compile_seconds``, ``target``, ``oracle_accuracy``; a rerun replaces only the rows it ran) and prints a
markdown table with the machine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

# first: sets one thread everywhere (unless the caller set it) before numpy, jax or torch load
from peers_regimes import (DATA_DIR, fit_hmmlearn, fit_pomegranate, load, machine, versions,  # noqa: E402
                           viterbi_pomegranate, _dynamax_model)

import numpy as np  # noqa: E402

import run_clock  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout, installed or not

DATA_NAMES = ("default", "bee")
TARGET_FRACTION = 0.98  # default data: of the oracle's accuracy
BEE_TARGET = 0.90
BEE_OVERRIDES = ("data=csv", f"data.path={DATA_DIR / 'bee' / 'bee.csv'}", "data.time_column=t",
                 "data.label_column=label", "data.val_fraction=0", "model.emission=autoregressive")
# the peers' models per data set: hmmlearn / pomegranate covariance, dynamax family, restarts
PEER_MODELS = {"default": ("diag", "diag", 1), "bee": ("full", "arhmm", 5)}
DEFAULT_OUT = REPO / "benchmarks" / "results" / "peers.json"


@dataclass
class Problem:
    """One data set as every method gets it.

    ``train`` / ``val``: the (T_i, D) float64 arrays the peers fit / decode (bee: the same three);
    ``val_states``: the (T_i,) int64 true states of ``val``; ``overrides``: this project's settings
    (Hydra's syntax) for the same data; ``covariance``, ``dynamax_family``, ``restarts``: the peers' models.
    """

    name: str
    k: int
    train: list[np.ndarray]
    val: list[np.ndarray]
    val_states: list[np.ndarray]
    target: float
    oracle_accuracy: float | None
    overrides: list[str]
    covariance: str
    dynamax_family: str
    restarts: int


def _arrays(split) -> list[np.ndarray]:
    """The (T_i, D) float64 arrays of a ``SequenceData`` (padding dropped)."""
    x = split.x.double().numpy()
    return [x[i, :n] for i, n in enumerate(split.lengths.tolist())]


def make_problem(name: str, overrides: Sequence[str] = ()) -> Problem:
    """Data set ``name`` (``default`` or ``bee``); ``overrides`` (Hydra's syntax) change the synthetic data and
    this project's settings (e.g. smaller data and shorter runs for a test)."""
    from pyro_dssm.api import compose_config
    from pyro_dssm.evaluation.evaluate import oracle_metrics
    from pyro_dssm.train import load_data

    covariance, family, restarts = PEER_MODELS[name]
    if name == "bee":
        seqs = load("bee")  # z-normalised over the three sequences, as peers_regimes.py fits them
        xs = [x for x, _ in seqs]
        return Problem("bee", 3, xs, xs, [z for _, z in seqs], BEE_TARGET, None, [*BEE_OVERRIDES, *overrides],
                       covariance, family, restarts)
    cfg = compose_config(list(overrides))
    data = load_data(cfg.data, cfg.seed)
    oracle = oracle_metrics(data.params, data.val)["oracle_accuracy"]
    states = [z[:n] for z, n in zip(data.val.states.numpy(), data.val.lengths.tolist())]
    return Problem(name, int(cfg.data.n_states), _arrays(data.train), _arrays(data.val), states,
                   TARGET_FRACTION * oracle, oracle, list(overrides), covariance, family, restarts)


def accuracy(problem: Problem, preds: list[np.ndarray]) -> float:
    """Hungarian accuracy of the (T_i,) predicted paths against ``problem.val_states``, pooled."""
    from pyro_dssm.evaluation.metrics import hungarian_accuracy

    true = np.concatenate(problem.val_states)
    return hungarian_accuracy(true, np.concatenate(preds).astype(np.int64), max(problem.k, int(true.max()) + 1))


# ----------------------------------------------------------------------------- hmmlearn, pomegranate


def iterations_to_target(fit: Callable[[int], tuple[list[np.ndarray], float]], problem: Problem,
                         max_iter: int) -> dict:
    """Seconds to target of a fit without a per-iteration callback, by fits of 1, 2, 4, ... iterations.

    ``fit(n)`` fits from the same start with at most n iterations and returns the (T_i,) paths of
    ``problem.val`` and its fitting seconds. After the first n that reaches ``problem.target``, bisection
    between it and the last that missed finds the fewest (the search assumes that once reached, more
    iterations stay there). Every probe is in ``probes`` as [n, seconds, accuracy].
    """
    probes: dict[int, tuple[float, float]] = {}

    def reaches(n: int) -> bool:
        if n not in probes:
            preds, seconds = fit(n)
            probes[n] = (seconds, accuracy(problem, preds))
        return probes[n][1] >= problem.target

    missed, n = 0, 1
    while not reaches(n) and n < max_iter:
        missed, n = n, min(2 * n, max_iter)
    first = n if reaches(n) else None
    while first is not None and first - missed > 1:
        mid = (missed + first) // 2
        missed, first = (missed, mid) if reaches(mid) else (mid, first)
    reaches(max_iter)
    return {"seconds_to_target": None if first is None else probes[first][0], "iterations_to_target": first,
            "reached": first is not None, "accuracy": probes[max_iter][1], "seconds_total": probes[max_iter][0],
            "probes": [[n, s, a] for n, (s, a) in sorted(probes.items())]}


def run_hmmlearn(problem: Problem, max_iter: int) -> dict:
    """hmmlearn ``GaussianHMM`` (``problem.covariance``), :func:`iterations_to_target`."""

    def fit(n_iter: int) -> tuple[list[np.ndarray], float]:
        start = time.perf_counter()
        hmm, _ = fit_hmmlearn(problem.train, problem.k, problem.restarts, problem.covariance, n_iter)
        seconds = time.perf_counter() - start
        lengths = [len(x) for x in problem.val]
        return np.split(hmm.predict(np.concatenate(problem.val), lengths), np.cumsum(lengths)[:-1]), seconds

    return iterations_to_target(fit, problem, max_iter)


def run_pomegranate(problem: Problem, max_iter: int) -> dict:
    """pomegranate ``DenseHMM`` of ``Normal`` states (``problem.covariance``), :func:`iterations_to_target`."""

    def fit(n_iter: int) -> tuple[list[np.ndarray], float]:
        start = time.perf_counter()
        hmm, _ = fit_pomegranate(problem.train, problem.k, problem.restarts, problem.covariance, n_iter)
        seconds = time.perf_counter() - start
        return viterbi_pomegranate(hmm, problem.val), seconds

    return iterations_to_target(fit, problem, max_iter)


# ----------------------------------------------------------------------------- dynamax


def _dynamax_step_programs(model, props, n_train: int):
    """Jitted ``step`` (one EM iteration), ``score`` (log p(X)) and ``decode`` (Viterbi paths) over a list
    of (B_g, T_g, D) batches of equal lengths and their inputs (each vmapped over the batch); the first
    ``n_train`` batches are the training ones, the rest the ones to decode."""
    from functools import partial

    import jax
    import jax.numpy as jnp

    def step(params, m_state, xs, us):
        stats = [jax.vmap(partial(model.e_step, params))(x, u)[0] for x, u in zip(xs[:n_train], us[:n_train])]
        batch = jax.tree_util.tree_map(lambda *s: jnp.concatenate(s), *stats)  # stacked on the sequence axis
        return model.m_step(params, props, batch, m_state)

    def score(params, xs, us):
        return sum(jax.vmap(partial(model.marginal_log_prob, params))(x, u).sum()
                   for x, u in zip(xs[:n_train], us[:n_train]))

    def decode(params, xs, us):
        return [jax.vmap(partial(model.most_likely_states, params))(x, u) for x, u in zip(xs[n_train:], us[n_train:])]

    return jax.jit(step), jax.jit(score), jax.jit(decode)


def run_dynamax(problem: Problem, max_iter: int) -> dict:
    """dynamax (``problem.dynamax_family``) in float64, k-means start, EM one step at a time (module docstring)."""
    import jax

    jax.config.update("jax_enable_x64", True)  # before any array is made; as peers_regimes.py runs it
    import jax.numpy as jnp
    import jax.random as jr
    from peers_regimes import same_length_batches

    clock = time.perf_counter()
    model = _dynamax_model(problem.dynamax_family, problem.k, problem.train[0].shape[1])
    (train, _), (val, val_index) = same_length_batches(problem.train), same_length_batches(problem.val)
    xs = [jnp.asarray(b) for b in train + val]
    us = [jax.vmap(model.compute_inputs)(x) if problem.dynamax_family == "arhmm" else None for x in xs]
    pooled = jnp.asarray(np.concatenate(problem.train))
    params, props = model.initialize(jr.PRNGKey(0), method="kmeans", emissions=pooled)  # traces the start
    m_state = model.initialize_m_step_state(params, props)
    step, score, decode = _dynamax_step_programs(model, props, len(train))
    step, score, decode = (f.lower(*a).compile() for f, a in ((step, (params, m_state, xs, us)),
                                                               (score, (params, xs, us)), (decode, (params, xs, us))))
    compile_seconds = time.perf_counter() - clock

    def paths(params) -> list[np.ndarray]:
        out = [None] * len(problem.val)
        for batch, index in zip(decode(params, xs, us), val_index):
            for i, path in zip(index, np.asarray(batch)):
                out[i] = path
        return out

    traces = []  # per restart: per step count n = 1..max_iter, (seconds so far, log p(X), accuracy)
    for seed in range(problem.restarts):
        start = time.perf_counter()
        params, _ = model.initialize(jr.PRNGKey(seed), method="kmeans", emissions=pooled)
        m_state = model.initialize_m_step_state(params, props)
        seconds, trace = time.perf_counter() - start, []
        for _ in range(max_iter):
            start = time.perf_counter()
            params, m_state = jax.block_until_ready(step(params, m_state, xs, us))
            seconds += time.perf_counter() - start
            ll = float(score(params, xs, us))
            trace.append((seconds, ll if np.isfinite(ll) else -np.inf, accuracy(problem, paths(params))))
        traces.append(trace)
    return {**_best_restart_per_step(traces, problem.target), "compile_seconds": compile_seconds}


def _best_restart_per_step(traces: list[list[tuple[float, float, float]]], target: float) -> dict:
    """Seconds to target and totals from per-restart traces of (seconds, log p(X), accuracy) per step count:
    at each step count the restart with the best log p(X) counts, the time is every restart's."""
    steps = []
    for n in range(len(traces[0])):
        best = max(traces, key=lambda trace: trace[n][1])
        steps.append((sum(trace[n][0] for trace in traces), best[n][2]))
    first = next((n for n, (_, acc) in enumerate(steps) if acc >= target), None)
    return {"seconds_to_target": None if first is None else steps[first][0],
            "iterations_to_target": None if first is None else first + 1, "reached": first is not None,
            "accuracy": steps[-1][1], "seconds_total": steps[-1][0]}


# ----------------------------------------------------------------------------- this project


def run_pyro_dssm(problem: Problem, max_iter: int) -> dict:
    """The DSSM on ``problem.overrides`` (``max_iter`` not used): :func:`run_clock.run_dssm`."""
    return run_clock.run_dssm(problem.overrides, problem.target)


def run_pyro_dssm_exact(problem: Problem, max_iter: int) -> dict:
    """The exact baseline on ``problem.overrides`` (:func:`run_clock.run_exact`), timed as hmmlearn's fit is: runs
    whose classical init has at most n Baum-Welch iterations (``trainer.init_em_iters=n``, n = 1, 2, 4, ... up to
    the configured number, which is the default run): the record is the fastest of them to reach the target (the
    default run's where none does), with ``iterations_to_target`` its n and ``default_seconds_to_target`` the default
    run's time. Every probe is in ``probes`` as [n, seconds to target or None, accuracy]."""
    from pyro_dssm.api import compose_config

    configured = int(compose_config(list(problem.overrides)).trainer.init_em_iters)
    default = run_clock.run_exact(problem.overrides, problem.target)
    probes = {configured: default}
    n = 1
    while n < min(configured, max_iter):
        probes[n] = run_clock.run_exact([*problem.overrides, f"trainer.init_em_iters={n}"], problem.target)
        n *= 2
    reached = [(r["seconds_to_target"], n) for n, r in probes.items() if r["reached"]]
    n_fastest = min(reached)[1] if reached else None
    return {**probes.get(n_fastest, default), "iterations_to_target": n_fastest,
            "default_seconds_to_target": default["seconds_to_target"], "accuracy": default["accuracy"],
            "probes": [[n, r["seconds_to_target"], r["accuracy"]] for n, r in sorted(probes.items())]}


# ----------------------------------------------------------------------------- records


Runner = Callable[[Problem, int], dict]
METHODS: dict[str, tuple[str, Runner]] = {  # name -> (package that must import, runner)
    "pyro_dssm-exact": ("pyro_dssm", run_pyro_dssm_exact),
    "pyro_dssm-dssm": ("pyro_dssm", run_pyro_dssm),
    "hmmlearn": ("hmmlearn", run_hmmlearn),
    "dynamax": ("dynamax", run_dynamax),
    "pomegranate": ("pomegranate", run_pomegranate),
}
PRELOAD = {  # imported before the clock starts: a library's import is not part of its time
    "pyro_dssm": ("pyro_dssm.train", "pyro_dssm.inference.mle", "pyro_dssm.model.exact"),
    "hmmlearn": ("hmmlearn.hmm",), "dynamax": ("dynamax.hidden_markov_model",),
    "pomegranate": ("pomegranate.hmm", "pomegranate.distributions"),
}
MEDIANS = ("seconds_to_target", "default_seconds_to_target", "accuracy", "seconds_total", "compile_seconds",
           "train_seconds_to_target", "iterations_to_target", "init_end_seconds", "warmup_end_seconds",
           "seconds_to_first_evaluation", "seconds_evaluating")


def model_text(problem: Problem, method: str) -> str:
    """What ``method`` fits on ``problem``, in words, for the record."""
    package = METHODS[method][0]
    if package == "pyro_dssm":
        return " ".join(problem.overrides) or "the defaults"
    family = problem.dynamax_family if package == "dynamax" else f"{problem.covariance} covariance"
    return f"{family}, K={problem.k}, best of {problem.restarts} by log-likelihood"


def _summary(runs: list[dict]) -> dict:
    """Medians over the repeats of the timed and scored keys; reached if every repeat reached.

    ``compile_seconds`` is the first run's instead: a process compiles once, and later runs in the same
    process find part of jax's traces cached.
    """
    out = {"reached": all(r["reached"] for r in runs)}
    for key in (k for k in MEDIANS if k in runs[0]):
        values = [r[key] for r in runs]
        out[key] = None if None in values else statistics.median(values)
    if "compile_seconds" in runs[0]:
        out["compile_seconds"] = runs[0]["compile_seconds"]
    return out


def run_records(problem: Problem, methods: Sequence[str], repeats: int, max_iter: int = 100) -> list[dict]:
    """Run each of ``methods`` on ``problem`` ``repeats`` times, the methods in turn within each repeat (so a
    change in the machine's load falls on all of them); one record of medians per method (module docstring).

    A library that does not import is a record with ``"skipped"``; an exception, one with ``"error"`` (that
    method is not run again).
    """
    records, runs = {}, {}
    for method in methods:
        package = METHODS[method][0]
        records[method] = {"data": problem.name, "method": method, "seconds_to_target": None, "accuracy": None,
                           "reached": False, "target": problem.target, "oracle_accuracy": problem.oracle_accuracy,
                           "model": model_text(problem, method), "repeats": repeats, "max_iter": max_iter,
                           "versions": versions(package), "machine": machine()}
        if importlib.util.find_spec(package) is None:
            records[method]["skipped"] = f"{package} is not installed"
        else:
            runs[method] = []
    for _ in range(repeats):
        for method in [m for m in methods if m in runs and "error" not in records[m]]:
            try:
                for module in PRELOAD[METHODS[method][0]]:
                    importlib.import_module(module)
                runs[method].append(METHODS[method][1](problem, max_iter))
            except Exception as err:  # a failed method is a row of the table, not a crash
                message = str(err).splitlines()[0][:300] if str(err) else ""
                records[method]["error"] = f"{type(err).__name__}: {message}"
            print(f"{problem.name} {method}: repeat {len(runs[method])} of {repeats}", file=sys.stderr, flush=True)
    for method, done in runs.items():
        if "error" not in records[method]:
            records[method].update(_summary(done))
        records[method]["runs"] = done
    return [records[m] for m in methods]


def merge(path: Path, records: list[dict]) -> list[dict]:
    """Records already in ``path`` with those of the same (data, method) replaced, in a stable order."""
    rows = {(r["data"], r["method"]): r for r in json.loads(path.read_text())} if path.exists() else {}
    rows.update({(r["data"], r["method"]): r for r in records})
    order = {name: i for i, name in enumerate(DATA_NAMES)}
    methods = {name: i for i, name in enumerate(METHODS)}
    return sorted(rows.values(), key=lambda r: (order.get(r["data"], 99), methods.get(r["method"], 99)))


def _seconds(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(records: list[dict]) -> str:
    """Markdown table: one row per (data, method). ``fit s to target``: the fit's own time (this project's
    ``train_seconds_to_target``: data, oracle and evaluations excluded, as the peers' times exclude them)."""
    lines = ["| data | method | target | seconds to target | fit s to target | accuracy | reached | seconds total "
             "| compile s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        head = f"| {r['data']} | {r['method']} | {r['target']:.4f} |"
        if "skipped" in r or "error" in r:
            lines.append(f"{head} {'skipped' if 'skipped' in r else 'failed'}: {r.get('skipped') or r['error']} "
                         "| | | | | |")
            continue
        fit = r.get("train_seconds_to_target", r["seconds_to_target"])
        lines.append(f"{head} {_seconds(r['seconds_to_target'])} | {_seconds(fit)} | {r['accuracy']:.4f} | "
                     f"{'yes' if r['reached'] else 'no'} | {_seconds(r.get('seconds_total'))} | "
                     f"{_seconds(r.get('compile_seconds')) if 'compile_seconds' in r else ''} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA_NAMES), choices=DATA_NAMES)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--repeats", type=int, default=3, help="runs of each method; medians reported")
    parser.add_argument("--max-iter", type=int, default=100, help="the peers' EM iterations at most")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the data and this project's settings")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.max_iter < 1:
        parser.error(f"--repeats and --max-iter must be >= 1, got {args.repeats} and {args.max_iter}")
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/peers.py", *(sys.argv[1:] if argv is None else argv)])
    records = []
    for name in args.data:
        done = [{**rec, "command": command}
                for rec in run_records(make_problem(name, args.overrides), args.methods, args.repeats, args.max_iter)]
        records += done
        print(table(done), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(merge(args.out, done), indent=1) + "\n")  # after each data set
    print(f"\n{machine()}\n\n{table(records)}")
    return records


if __name__ == "__main__":
    main()
