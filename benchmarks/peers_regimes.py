"""Peer libraries for unsupervised regime discovery on real labelled data (bee dances, CMU subject 86).

    python benchmarks/peers_regimes.py                                  # all data, every method that imports
    python benchmarks/peers_regimes.py --data bee 86_01 --methods hmmlearn-full dynamax-arhmm
    python benchmarks/peers_regimes.py --methods tsseg-hdp-hsmm --downsample 10

The peers (hmmlearn, dynamax, pomegranate, tsseg) are optional: each is imported
inside the function that runs it, so this script imports with none of them.
Run them from a venv that has them, one process at a time, single-threaded
(the thread variables below are set here unless the caller set them).

Protocol, from the data folders' READMEs:
- bee (``../shared/data/bee/bee.npz``): seq4, seq5, seq6, K = 3, channels
  z-normalised over the three sequences together, one model fitted on all three,
  scored pooled.
- CMU 86 (``../shared/data/cmu86/cmu86.npz``): each trial on its own, K = that
  trial's number of labels, channels z-normalised per trial.
Features are the raw z-normalised channels for every method. Likelihood models
keep the best of ``--restarts`` fits by log-likelihood and decode with Viterbi.

Writes a JSON list of records, one per (data, method), merged into ``--out``
(a rerun replaces only the rows it ran), and prints a markdown table. A method
that fails is a record with an ``"error"``, not a silence.
"""

from __future__ import annotations

import os

# One thread everywhere: the machine is shared; must be set before numpy/jax/torch load.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from functools import partial  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score  # noqa: E402

from machine_info import cpu_model  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data"
BEE_SEQUENCES = ("seq4", "seq5", "seq6")
CMU_TRIALS = ("86_01", "86_02", "86_03", "86_07", "86_08", "86_09", "86_10", "86_11", "86_14")
DATA_NAMES = ("bee", *CMU_TRIALS)
FEATURES = "raw z-normalised"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "peers_regimes.json"


# ----------------------------------------------------------------------------- data


def _znorm(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x - mean) / np.where(std > 0, std, 1.0)


def load(name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The sequences of one data set as ``[(x, z), ...]``, channels z-normalised.

    ``name`` is ``"bee"`` (three sequences, normalised with the mean and standard
    deviation of all three together) or a CMU trial such as ``"86_01"`` (one
    sequence, normalised on its own). ``x`` is float64 (T, D), ``z`` int64 (T,).
    """
    if name == "bee":
        with np.load(DATA_DIR / "bee" / "bee.npz") as f:
            raw = [(f[f"x_{s}"].astype(np.float64), f[f"z_{s}"].astype(np.int64)) for s in BEE_SEQUENCES]
    elif name in CMU_TRIALS:
        with np.load(DATA_DIR / "cmu86" / "cmu86.npz") as f:
            raw = [(f[f"x_{name}"].astype(np.float64), f[f"z_{name}"].astype(np.int64))]
    else:
        raise ValueError(f"unknown data set {name!r}; expected one of {DATA_NAMES}")
    pooled = np.concatenate([x for x, _ in raw])  # (sum T, D)
    mean, std = pooled.mean(0), pooled.std(0)
    return [(_znorm(x, mean, std), z) for x, z in raw]


def n_classes(seqs: list[tuple[np.ndarray, np.ndarray]]) -> int:
    """K: the number of distinct labels over all sequences of a data set."""
    return len(np.unique(np.concatenate([z for _, z in seqs])))


# ----------------------------------------------------------------------------- scores


def count_segments(labels: np.ndarray) -> int:
    """Runs of equal consecutive values in a (T,) label array."""
    return int(1 + np.count_nonzero(labels[1:] != labels[:-1])) if len(labels) else 0


def hungarian_accuracy(z: np.ndarray, p: np.ndarray) -> float:
    """Accuracy of ``p`` (T,) against ``z`` (T,) under the best one-to-one map of predicted to true labels.

    The confusion matrix may be rectangular (a method that uses more or fewer
    states than K): predicted states left unmatched count as errors.
    """
    _, zi = np.unique(z, return_inverse=True)
    _, pi = np.unique(p, return_inverse=True)
    confusion = np.zeros((zi.max() + 1, pi.max() + 1), dtype=np.int64)
    np.add.at(confusion, (zi, pi), 1)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return float(confusion[rows, cols].sum() / len(z))


def score(z_list: list[np.ndarray], p_list: list[np.ndarray]) -> dict:
    """Hungarian accuracy, NMI and ARI pooled over sequences, and segment counts summed over them.

    ``z_list[i]`` and ``p_list[i]`` are the (T_i,) true and predicted labels of sequence i.
    """
    if len(z_list) != len(p_list) or any(len(z) != len(p) for z, p in zip(z_list, p_list)):
        raise ValueError(f"lengths differ: true {[len(z) for z in z_list]}, predicted {[len(p) for p in p_list]}")
    z, p = np.concatenate(z_list), np.concatenate([np.asarray(q).astype(np.int64) for q in p_list])
    return {"accuracy": hungarian_accuracy(z, p), "nmi": float(normalized_mutual_info_score(z, p)),
            "ari": float(adjusted_rand_score(z, p)), "states_used": int(len(np.unique(p))),
            "segments": sum(count_segments(q) for q in p_list),
            "true_segments": sum(count_segments(q) for q in z_list)}


# ----------------------------------------------------------------------------- hmmlearn


def fit_hmmlearn(xs: list[np.ndarray], k: int, restarts: int, covariance: str, n_iter: int = 100):
    """hmmlearn ``GaussianHMM`` fitted jointly on the (T_i, D) arrays ``xs``: ``restarts`` fits (random_state
    0..), ``n_iter`` EM iterations at most (tol 0.01, its default), the best by log-likelihood.

    Returns the model and its log-likelihood of ``xs``.
    """
    from hmmlearn.hmm import GaussianHMM

    x, lengths = np.concatenate(xs), [len(s) for s in xs]
    best, best_ll = None, -np.inf
    for seed in range(restarts):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter
            hmm = GaussianHMM(k, covariance_type=covariance, n_iter=n_iter, random_state=seed).fit(x, lengths)
            ll = hmm.score(x, lengths)
        if np.isfinite(ll) and ll > best_ll:
            best, best_ll = hmm, ll
    if best is None:
        raise FloatingPointError("every restart ended with a non-finite log-likelihood")
    return best, float(best_ll)


def run_hmmlearn(xs: list[np.ndarray], k: int, restarts: int, covariance: str) -> tuple[list[np.ndarray], dict]:
    """:func:`fit_hmmlearn` (100 iterations at most), then Viterbi; one (T_i,) state array per sequence."""
    best, best_ll = fit_hmmlearn(xs, k, restarts, covariance)
    lengths = [len(s) for s in xs]
    pred = best.predict(np.concatenate(xs), lengths)  # Viterbi
    return np.split(pred, np.cumsum(lengths)[:-1]), {"log_likelihood": best_ll}


# ----------------------------------------------------------------------------- dynamax


def _dynamax_model(family: str, k: int, d: int):
    from dynamax.hidden_markov_model import DiagonalGaussianHMM, GaussianHMM, LinearAutoregressiveHMM

    if family == "gaussian":
        return GaussianHMM(k, d)
    if family == "diag":
        return DiagonalGaussianHMM(k, d)
    if family == "arhmm":
        return LinearAutoregressiveHMM(k, d, num_lags=1)
    raise ValueError(f"unknown dynamax family {family!r}; expected 'gaussian', 'diag' or 'arhmm'")


def _dynamax_programs(model, props, n_iter: int):
    """Jittable EM and decoding over a list of sequences of unequal lengths.

    dynamax's ``fit_em`` wants a (B, T, D) batch of equal lengths and compiles a
    new program per call; here the E-step runs per sequence and its statistics
    are stacked on a batch axis for ``m_step`` (which sums over it), so one
    compiled program serves every restart.
    """
    import jax
    import jax.numpy as jnp

    def em(params, xs, us):
        def step(carry, _):
            params, m_state = carry
            stats, lls = zip(*[model.e_step(params, x, u) for x, u in zip(xs, us)])
            batch = jax.tree_util.tree_map(lambda *s: jnp.stack(s), *stats)
            params, m_state = model.m_step(params, props, batch, m_state)
            return (params, m_state), model.log_prior(params) + sum(lls)

        carry = (params, model.initialize_m_step_state(params, props))
        (params, _), _ = jax.lax.scan(step, carry, xs=None, length=n_iter)
        log_lik = sum(model.marginal_log_prob(params, x, u) for x, u in zip(xs, us))
        return params, log_lik

    def decode(params, xs, us):
        return [model.most_likely_states(params, x, u) for x, u in zip(xs, us)]

    return jax.jit(em), jax.jit(decode)


def run_dynamax(xs: list[np.ndarray], k: int, restarts: int, family: str) -> tuple[list[np.ndarray], dict]:
    """dynamax ``GaussianHMM`` (full covariance) or ``LinearAutoregressiveHMM`` (1 lag), EM, k-means init.

    ``restarts`` fits (PRNG keys 0..), 100 EM iterations each, best by marginal
    log-likelihood, most likely states (Viterbi). ``xs`` are (T_i, D) arrays.
    ``compile_seconds`` is the time to trace and compile, left out of ``seconds``.
    Runs in float64, as hmmlearn and pomegranate do: in dynamax's default float32
    the ARHMM's EM reaches NaN on every restart of CMU 86_08 (120 fps makes the
    one-step regression nearly exact, so covariances collapse).
    """
    import jax

    jax.config.update("jax_enable_x64", True)  # before any array is made
    import jax.numpy as jnp
    import jax.random as jr

    start = time.perf_counter()
    model = _dynamax_model(family, k, xs[0].shape[1])
    jx = [jnp.asarray(x, dtype=jnp.float64) for x in xs]
    us = [model.compute_inputs(x) for x in jx] if family == "arhmm" else [None] * len(jx)
    pooled = jnp.concatenate(jx)
    inits = [model.initialize(jr.PRNGKey(seed), method="kmeans", emissions=pooled) for seed in range(restarts)]
    em, decode = _dynamax_programs(model, inits[0][1], n_iter=100)
    em = em.lower(inits[0][0], jx, us).compile()
    decode = decode.lower(inits[0][0], jx, us).compile()
    compile_seconds = time.perf_counter() - start

    best, best_ll = None, -np.inf
    for params, _ in inits:
        params, ll = em(params, jx, us)
        if np.isfinite(float(ll)) and float(ll) > best_ll:
            best, best_ll = params, float(ll)
    if best is None:
        raise FloatingPointError("every restart ended with a non-finite log-likelihood")
    preds = [np.asarray(p) for p in decode(best, jx, us)]
    return preds, {"log_likelihood": best_ll, "compile_seconds": compile_seconds, "dtype": str(pooled.dtype)}


# ----------------------------------------------------------------------------- pomegranate


def same_length_batches(xs: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The (T_i, D) arrays ``xs`` stacked into (B_g, T_g, D) batches of equal lengths, in order of first
    appearance, and the (B_g,) indices into ``xs`` of each batch's rows."""
    lengths = np.array([len(x) for x in xs])
    groups = [np.flatnonzero(lengths == n) for n in dict.fromkeys(lengths.tolist())]
    return [np.stack([xs[i] for i in g]) for g in groups], groups


def fit_pomegranate(xs: list[np.ndarray], k: int, restarts: int, covariance: str = "full", n_iter: int = 100):
    """pomegranate 1.x ``DenseHMM`` of ``Normal`` states (``covariance``: full, diag or sphere), Baum-Welch on
    the (T_i, D) float64 arrays ``xs`` in batches of equal lengths: ``restarts`` fits (random_state 0..),
    max_iter ``n_iter``, tol 0.01 (hmmlearn's defaults), the best by log-likelihood.

    Returns the model and its log-likelihood of ``xs``.
    """
    import torch
    from pomegranate.distributions import Normal
    from pomegranate.hmm import DenseHMM

    torch.set_num_threads(1)
    batches = [torch.from_numpy(b) for b in same_length_batches(xs)[0]]
    best, best_ll = None, -np.inf
    for seed in range(restarts):
        hmm = DenseHMM([Normal(covariance_type=covariance) for _ in range(k)], max_iter=n_iter, tol=0.01,
                       random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hmm.fit(batches)
            ll = float(sum(hmm.log_probability(b).sum() for b in batches))
        if np.isfinite(ll) and ll > best_ll:
            best, best_ll = hmm, ll
    if best is None:
        raise FloatingPointError("every restart ended with a non-finite log-likelihood")
    return best, best_ll


def viterbi_pomegranate(hmm, xs: list[np.ndarray]) -> list[np.ndarray]:
    """The (T_i,) Viterbi paths of a pomegranate ``DenseHMM`` for the (T_i, D) float64 arrays ``xs``."""
    import torch

    batches, groups = same_length_batches(xs)
    preds = [None] * len(xs)
    with torch.no_grad():
        for batch, index in zip(batches, groups):
            for i, path in zip(index, hmm.viterbi(torch.from_numpy(batch)).numpy()):
                preds[i] = path
    return preds


def run_pomegranate(xs: list[np.ndarray], k: int, restarts: int) -> tuple[list[np.ndarray], dict]:
    """:func:`fit_pomegranate` with full covariances, 100 iterations at most, then Viterbi."""
    best, best_ll = fit_pomegranate(xs, k, restarts)
    return viterbi_pomegranate(best, xs), {"log_likelihood": best_ll}


# ----------------------------------------------------------------------------- tsseg


TSSEG_DETECTORS = {  # method -> (class in tsseg.algorithms, keyword that takes K)
    "tsseg-time2state": ("Time2StateDetector", "n_states"),
    "tsseg-e2usd": ("E2USDDetector", "n_states"),
    "tsseg-hdp-hsmm": ("HdpHsmmDetector", "n_max_states"),
    "tsseg-autoplait": ("AutoPlaitDetector", None),
}


def run_tsseg(xs: list[np.ndarray], k: int, restarts: int, method: str) -> tuple[list[np.ndarray], dict]:
    """A tsseg state detector with its documented defaults, K given as its state bound where it takes one.

    tsseg segments one series: several sequences (bee) are concatenated and the
    labels split back. One run with random_state 0 where the detector takes one
    (these are not likelihood models, so there is nothing to pick restarts by).
    """
    import contextlib
    import io
    import shutil

    import torch
    import tsseg.algorithms as algorithms

    torch.set_num_threads(1)
    np.random.seed(0)  # HDP-HSMM samples from numpy's global RNG and takes no random_state
    torch.manual_seed(0)
    cls_name, k_keyword = TSSEG_DETECTORS[method]
    cls = getattr(algorithms, cls_name)
    kwargs = {k_keyword: k} if k_keyword else {}
    if "random_state" in cls.__init__.__code__.co_varnames:
        kwargs["random_state"] = 0
    x = np.concatenate(xs)
    if method == "tsseg-autoplait" and not (os.environ.get("AUTOPLAIT_DIR") or shutil.which("autoplait")):
        raise FileNotFoundError("the AutoPlait C binary is not in tsseg's PyPI wheel or sdist; "
                                "build it, set AUTOPLAIT_DIR")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # E2USD prints shapes
        warnings.simplefilter("ignore")
        pred = np.asarray(cls(**kwargs).fit_predict(x, axis=0)).astype(np.int64)
    if pred.shape != (len(x),):
        raise ValueError(f"{cls_name} returned shape {pred.shape}, expected dense labels ({len(x)},)")
    return np.split(pred, np.cumsum([len(s) for s in xs])[:-1]), {"params": kwargs, "restarts": 1}


def run_pyro_dssm(xs: list[np.ndarray], k: int, restarts: int, overrides: tuple[str, ...],
                  seed: int = 0) -> tuple[list[np.ndarray], dict]:
    """This project through its API (:func:`pyro_dssm.fit`, the CLI's configs), every sequence for training and
    validation (``data.val_fraction=0``), decoded by Viterbi. ``restarts`` is not used: the init's own
    starts are the settings' (``trainer.init_restarts``); ``seed`` is the run's seed."""
    import contextlib
    import io
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, installed or not
    import pyro_dssm

    settings = [*overrides, "data.val_fraction=0", f"seed={seed}"]
    with contextlib.redirect_stdout(io.StringIO()):
        model = pyro_dssm.fit(xs, n_states=k, overrides=settings)
    metrics = model.metrics or {}
    return [np.asarray(model.predict(x)) for x in xs], {"overrides": settings, "seed": seed,
                                                         "kept_epoch": metrics.get("best_epoch"), "restarts": None}


# ----------------------------------------------------------------------------- registry


Runner = Callable[[list[np.ndarray], int, int], tuple[list[np.ndarray], dict]]
METHODS: dict[str, tuple[str, Runner]] = {  # name -> (package that must import, runner)
    "hmmlearn-full": ("hmmlearn", partial(run_hmmlearn, covariance="full")),
    "hmmlearn-diag": ("hmmlearn", partial(run_hmmlearn, covariance="diag")),
    "dynamax-gaussian": ("dynamax", partial(run_dynamax, family="gaussian")),
    "dynamax-arhmm": ("dynamax", partial(run_dynamax, family="arhmm")),
    "pomegranate-full": ("pomegranate", run_pomegranate),
    **{name: ("tsseg", partial(run_tsseg, method=name)) for name in TSSEG_DETECTORS},
    "pyro_dssm-motion": ("pyro_dssm", partial(run_pyro_dssm, overrides=("model=motion",))),
    "pyro_dssm-autoregressive": ("pyro_dssm", partial(run_pyro_dssm, overrides=("model.emission=autoregressive",))),
    "pyro_dssm-autoregressive_full": ("pyro_dssm", partial(run_pyro_dssm,
                                                           overrides=("model.emission=autoregressive_full",))),
}
VERSIONED = {"hmmlearn": ("hmmlearn", "scikit-learn", "numpy"), "dynamax": ("dynamax", "jax", "jaxlib", "numpy"),
             "pomegranate": ("pomegranate", "torch"), "tsseg": ("tsseg", "torch", "numba", "numpy"),
             "pyro_dssm": ("pyro_dssm", "torch", "pyro-ppl", "numpy")}


def versions(package: str) -> dict[str, str]:
    """Installed versions of ``package`` and what its numbers depend on."""
    out = {"python": platform.python_version()}
    for dist in VERSIONED[package]:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def machine() -> str:
    """OS, CPU model, CPU count and thread setting, for the header of a table."""
    threads = os.environ["OMP_NUM_THREADS"]
    return f"{platform.platform()}; {cpu_model()}; {os.cpu_count()} CPUs; OMP_NUM_THREADS={threads}"


def _upsample(p: np.ndarray, factor: int, length: int) -> np.ndarray:
    """Labels of a series thinned by ``factor``, repeated back to ``length`` steps."""
    return np.repeat(p, factor)[:length]


def run_record(data: str, method: str, restarts: int, downsample: int, seed: int = 0) -> dict:
    """Fit and score one method on one data set; an exception becomes a record with ``"error"``.
    ``seed`` reaches this project's runs only (the peers' restarts are seeded 0..restarts-1)."""
    package, runner = METHODS[method]
    if package == "pyro_dssm":
        runner = partial(runner, seed=seed)
    seqs = load(data)
    factor = downsample if data in CMU_TRIALS else 1  # bee is short: always at full rate
    record = {"data": data, "method": method, "features": FEATURES, "K": n_classes(seqs), "restarts": restarts,
              "downsample": factor, "versions": versions(package), "machine": machine()}
    if package == "pyro_dssm":
        record["seed"] = seed
    start = time.perf_counter()
    try:
        preds, extra = runner([x[::factor] for x, _ in seqs], record["K"], restarts)
    except Exception as err:  # a failed peer is a row of the table, not a crash
        return {**record, "error": f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"}
    wall = time.perf_counter() - start
    preds = [_upsample(np.asarray(p), factor, len(z)) for p, (_, z) in zip(preds, seqs)]
    compile_s = extra.pop("compile_seconds", None)
    record.update(extra)
    record.update(score([z for _, z in seqs], preds))
    record["seconds"] = wall - (compile_s or 0.0)
    if compile_s is not None:
        record["compile_seconds"] = compile_s
    return record


# ----------------------------------------------------------------------------- output


def merge(path: Path, records: list[dict]) -> list[dict]:
    """Records already in ``path`` with those of the same (data, method, seed) replaced, in a stable order."""
    rows = {}
    if path.exists():
        rows = {(r["data"], r["method"], r.get("seed")): r for r in json.loads(path.read_text())}
    rows.update({(r["data"], r["method"], r.get("seed")): r for r in records})
    order = {name: i for i, name in enumerate(DATA_NAMES)}
    methods = {name: i for i, name in enumerate(METHODS)}
    return sorted(rows.values(), key=lambda r: (order.get(r["data"], 99), methods.get(r["method"], 99), r["method"],
                                                r.get("seed") or 0))


def table(records: list[dict]) -> str:
    """Markdown table: one row per (data, method)."""
    lines = ["| data | method | accuracy | NMI | ARI | segments / true | seconds | compile s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['data']} | {r['method']} | failed: {r['error'][:80]} | | | | | |")
            continue
        ds = f" (fit at 1/{r['downsample']})" if r.get("downsample", 1) > 1 else ""
        comp = f"{r['compile_seconds']:.1f}" if "compile_seconds" in r else ""
        ds += f" seed {r['seed']}" if r.get("seed") is not None else ""
        lines.append(f"| {r['data']} | {r['method']}{ds} | {r['accuracy']:.3f} | {r['nmi']:.3f} | {r['ari']:.3f} "
                     f"| {r['segments']} / {r['true_segments']} | {r['seconds']:.1f} | {comp} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=list(DATA_NAMES), choices=DATA_NAMES)
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS),
                        help="default: every method whose package imports")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--downsample", type=int, default=1, help="fit CMU trials on every N-th frame")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds of this project's runs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.restarts < 1 or args.downsample < 1:
        parser.error(f"--restarts and --downsample must be >= 1, got {args.restarts} and {args.downsample}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    methods = args.methods or [m for m, (pkg, _) in METHODS.items() if importlib.util.find_spec(pkg)]
    records = []
    for method in methods:
        for data in args.data:
            for seed in args.seeds if METHODS[method][0] == "pyro_dssm" else [0]:
                rec = run_record(data, method, args.restarts, args.downsample, seed)
                records.append(rec)
                print(table([rec]).splitlines()[-1], flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(merge(args.out, [rec]), indent=1) + "\n")  # after each: a kill loses one
    print(f"\n{machine()}\n\n{table(records)}")


if __name__ == "__main__":
    main()
