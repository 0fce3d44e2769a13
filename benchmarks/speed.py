"""SVI step time of pyro_dssm against a hand-written PyTorch step of the same ELBO.

For every (T, B, objective) the package's step (``elbo.differentiable_loss`` of
``DSSM.model`` / ``DSSM.guide``, as in ``pyro_dssm/inference/trainer.py``) and a
hand-written step (:func:`hand_loss`: the same networks, the guide recursion
and both ELBO terms written directly in torch) run interleaved in one process,
alternating which goes first; each repeat gives one paired ratio
package / hand. Every configuration is timed once per repeat, round-robin, so
a shared machine's load falls evenly on all of them. Before timing, both losses
are computed from the same random numbers and must agree (the hand step is the
same ELBO, not a cheaper one).

Also timed: an exact-HMM step (log p(X) of the DSSM's hard-state HMM by
``pyro_dssm.model.hmm.log_likelihood``, backward, Adam) and evaluation throughput in
time steps per second (exact log p(X), Viterbi, greedy guide decoding).

    python benchmarks/speed.py                 # full grid, writes benchmarks/results/speed.{md,json}
    python benchmarks/speed.py --quick --out /tmp/speed   # a few seconds, for the tests

Pyro validation stays at its default (on) throughout.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro.infer.util import is_validation_enabled

from machine_info import cpu_model
from pyro_dssm.model import hmm
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.inference.objectives import OBJECTIVES, make_elbo

RESULTS = Path(__file__).resolve().parent / "results"
TAU = 0.5
GRAD_CLIP = 10.0
LR = 3e-3


# ---------------------------------------------------------------- hand-written ELBO


def _exp_concrete_log_prob(y: torch.Tensor, logits: torch.Tensor, tau: float) -> torch.Tensor:
    """log ExpConcrete(y; logits, tau), (B, T, K) -> (B, T) (Maddison et al. 2017, eq. 26 in log space)."""
    K = logits.shape[-1]
    score = logits - tau * y
    return score.sum(-1) - K * score.logsumexp(-1) + math.lgamma(K) + (K - 1) * math.log(tau)


def hand_loss(model: DSSM, x: torch.Tensor, mask: torch.Tensor, tau: float, objective: str) -> torch.Tensor:
    """-ELBO per valid step of ``model`` on full-length x (B, T, D), written directly in torch.

    Same maths and random numbers as the package: one (B, T, K) draw of
    uniforms for the guide's Gumbel noise, the guide's GRU-cell recursion fed
    the previous relaxed sample, then the model side for all t at once.
    """
    assert bool(mask.all()), "the hand-written step assumes full-length sequences"
    net, sigma = model.posterior, model.config.noise_std
    B, T, D = x.shape
    K = model.n_states
    eps = torch.finfo(x.dtype).eps
    # the model's evidence the guide adds to its logits: normalised per-state log N(x_t; mu_k), log A,
    eye = torch.eye(K, dtype=x.dtype)
    with torch.no_grad():
        local = hmm.gaussian_log_likelihood(x, model.emitter(eye), sigma).log_softmax(-1)
        log_trans = model.transition(eye).log_softmax(-1)
        # and the backward messages log beta_t (model.guide_messages)
        local = (local + hmm.normalised_backward(log_trans, local)).unbind(1)
    # q(c_{1:T} | X): BiGRU features, then the recursion
    features = net.birnn(x)[0].unbind(1)  # T x (B, 2H); unbind keeps the backward O(T)
    gumbel = (-(-torch.rand(B, T, K).clamp(eps, 1 - eps).log()).log()).unbind(1)
    prev, hidden = x.new_zeros(B, K), x.new_zeros(B, net.hidden_dim)
    ys, q_logits = [], []
    for t in range(T):
        hidden = net.cell(torch.cat([features[t], prev], -1), hidden)
        logits = net.readout(hidden) + local[t] + (prev @ log_trans if t > 0 else 0)
        y = ((logits + gumbel[t]) / tau).log_softmax(-1)
        prev = y.exp()
        ys.append(y)
        q_logits.append(logits)
    y, q_logits = torch.stack(ys, 1), torch.stack(q_logits, 1)  # (B, T, K) each
    # p(c_t | c_{t-1}) for every t in one call; uniform p(c_1)
    c = y.exp()
    p_logits = torch.cat([x.new_zeros(B, 1, K), model.transition(c[:, :-1])], 1)
    if objective == "concrete":
        # log N(x_t; emitter(c_t), sigma^2 I) at the relaxed state, the relaxed densities
        z = (x - model.emitter(c)) / sigma
        reconstruction = -0.5 * z.pow(2).sum(-1) - D * (math.log(sigma) + 0.5 * math.log(2 * math.pi))  # (B, T)
        latent = _exp_concrete_log_prob(y, p_logits, tau) - _exp_concrete_log_prob(y, q_logits, tau)
    else:  # sum_k q_k log N(x_t; mu_k, sigma^2 I), then the latent term
        with torch.no_grad():
            table = hmm.gaussian_log_likelihood(x, model.emitter(eye), sigma)
        # the emission's gradient from the state drawn by the sample's argmax
        z = (x - model.emitter(eye[y.argmax(-1)])) / sigma
        drawn = -0.5 * z.pow(2).sum(-1)
        reconstruction = (q_logits.softmax(-1) * table).sum(-1) + drawn - drawn.detach()
        log_q, log_p = q_logits.log_softmax(-1), p_logits.log_softmax(-1)
        if objective == "trace":  # log p - log q at the sampled state, straight-through
            states = eye[y.argmax(-1)] + c - c.detach()
            latent = (states * (log_p - log_q)).sum(-1)
        else:  # minus the exact categorical KL of every step
            latent = -(log_q.exp() * (log_q - log_p)).sum(-1)
    return -((reconstruction + latent) * mask).sum() / mask.sum()


# ---------------------------------------------------------------- steps


class Stepper:
    """One SVI variant with its own copy of the model and its own Adam."""

    def __init__(self, model: DSSM, objective: str, variant: str):
        self.model, self.objective, self.variant = model, objective, variant
        self.elbo = make_elbo(objective)
        self.optim = torch.optim.Adam(model.parameters(), lr=LR)

    def loss(self, x, mask):
        if self.variant == "package":
            return self.elbo.differentiable_loss(self.model.model, self.model.guide, x, mask, TAU) / mask.sum()
        return hand_loss(self.model, x, mask, TAU, self.objective)

    def step(self, x, mask) -> float:
        loss = self.loss(x, mask)
        self.optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), GRAD_CLIP)
        self.optim.step()
        return loss.item()


def exact_step(model: DSSM, optim, x, mask) -> float:
    """One gradient step on -log p(X) per valid step of the DSSM's exact HMM."""
    log_init, log_trans, means = model.hmm_parameters()
    log_lik = hmm.gaussian_log_likelihood(x, means, model.config.noise_std)
    loss = -hmm.log_likelihood(log_init, log_trans, log_lik, mask).sum() / mask.sum()
    optim.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optim.step()
    return loss.item()


@torch.no_grad()
def eval_exact_loglik(model, x, mask):
    log_init, log_trans, means = model.hmm_parameters()
    return hmm.log_likelihood(log_init, log_trans, hmm.gaussian_log_likelihood(x, means, model.config.noise_std), mask)


@torch.no_grad()
def eval_viterbi(model, x, mask):
    log_init, log_trans, means = model.hmm_parameters()
    return hmm.viterbi(log_init, log_trans, hmm.gaussian_log_likelihood(x, means, model.config.noise_std), mask)


@torch.no_grad()
def eval_guide(model, x, mask):
    return model.guide_logits(x, mask)


EVALS = {"exact log p(X)": eval_exact_loglik, "Viterbi": eval_viterbi, "guide decoding": eval_guide}


def timed(fn, n: int) -> float:
    """Mean seconds per call of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# ---------------------------------------------------------------- one configuration


def make_batch(T: int, B: int, seed: int):
    data = make_synthetic(n_states=5, obs_dim=10, seq_len=T, n_train=B, n_val=1, seed=seed).train
    return data.x, data.mask


def make_model(args, seed: int) -> DSSM:
    torch.manual_seed(seed)
    return DSSM(ModelConfig(n_states=args.K, obs_dim=10, transition_hidden=args.hidden,
                            emitter_hidden=args.hidden, rnn_hidden=args.hidden))


class SVIJob:
    """Package and hand-written steps of one (T, B, objective), timed in pairs.

    Set-up checks that both give the same loss on the same random numbers
    (before any parameter update), then runs the warm-up steps.
    """

    def __init__(self, args, T: int, B: int, objective: str):
        self.key = {"T": T, "B": B, "objective": objective}
        self.x, self.mask = make_batch(T, B, args.seed)
        base = make_model(args, args.seed)
        self.package = Stepper(copy.deepcopy(base), objective, "package")
        self.hand = Stepper(copy.deepcopy(base), objective, "hand")
        pyro.set_rng_seed(args.seed)
        self.loss_package = self.package.loss(self.x, self.mask).item()
        pyro.set_rng_seed(args.seed)
        self.loss_hand = self.hand.loss(self.x, self.mask).item()
        if not math.isclose(self.loss_package, self.loss_hand, rel_tol=1e-4, abs_tol=1e-5):
            raise RuntimeError(f"package loss {self.loss_package} != hand-written loss {self.loss_hand}")
        for _ in range(args.warmup):
            self.package.step(self.x, self.mask)
            self.hand.step(self.x, self.mask)
        self.steps = args.steps
        self.times = {"package": [], "hand": []}

    def run_once(self, r: int) -> None:
        order = (self.package, self.hand) if r % 2 == 0 else (self.hand, self.package)
        for s in order:
            self.times[s.variant].append(1e3 * timed(lambda: s.step(self.x, self.mask), self.steps))

    def record(self) -> dict:
        ratios = [p / h for p, h in zip(self.times["package"], self.times["hand"])]
        return {**self.key,
                "package_ms": statistics.median(self.times["package"]), "hand_ms": statistics.median(self.times["hand"]),
                "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                "package_ms_all": self.times["package"], "hand_ms_all": self.times["hand"], "ratios": ratios,
                "loss_package": self.loss_package, "loss_hand": self.loss_hand,
                "repeats": len(ratios), "steps": self.steps}


class ExactJob:
    """Exact-HMM step time and evaluation throughput of one (T, B)."""

    def __init__(self, args, T: int, B: int):
        self.key = {"T": T, "B": B}
        self.x, self.mask = make_batch(T, B, args.seed)
        self.model = make_model(args, args.seed)
        self.optim = torch.optim.Adam(self.model.parameters(), lr=LR)
        for _ in range(args.warmup):
            exact_step(self.model, self.optim, self.x, self.mask)
            for fn in EVALS.values():
                fn(self.model, self.x, self.mask)
        self.n = max(args.steps, 3)  # these calls are short: average a few per repeat
        self.ms, self.rates = [], {name: [] for name in EVALS}

    def run_once(self, r: int) -> None:
        x, mask, model = self.x, self.mask, self.model
        self.ms.append(1e3 * timed(lambda: exact_step(model, self.optim, x, mask), self.n))
        for name, fn in EVALS.items():
            self.rates[name].append(x.shape[0] * x.shape[1] / timed(lambda: fn(model, x, mask), self.n))

    def record(self) -> tuple[dict, list[dict]]:
        exact = {**self.key, "exact_step_ms": statistics.median(self.ms), "exact_step_ms_all": self.ms}
        evals = [{**self.key, "what": name, "steps_per_s": statistics.median(rates), "steps_per_s_all": rates}
                 for name, rates in self.rates.items()]
        return exact, evals


def run_jobs(args) -> tuple[list[dict], list[dict], list[dict]]:
    """Set up every configuration, then time them round-robin, one repeat of each at a time.

    Interleaving whole configurations (not only package/hand pairs) spreads
    the load of a shared machine evenly over them, so the fits in T and B
    compare like with like. A configuration that fails is reported with its
    error, never dropped.
    """
    jobs, failed = [], []

    def attempt(make, key):
        try:
            jobs.append(make())
        except Exception as err:
            failed.append({**key, "error": f"{type(err).__name__}: {err}"})
            print(f"{key}: FAILED {failed[-1]['error']}", file=sys.stderr, flush=True)

    for T in args.T:
        for B in args.B:
            for objective in args.objectives:
                attempt(lambda: SVIJob(args, T, B, objective), {"T": T, "B": B, "objective": objective})
            attempt(lambda: ExactJob(args, T, B), {"T": T, "B": B, "what": "exact"})
    for r in range(args.repeats):
        start = time.perf_counter()
        for i in range(len(jobs)):
            job = jobs[(i + r) % len(jobs)]
            if job is None:
                continue
            try:
                job.run_once(r)
            except Exception as err:
                failed.append({**job.key, "error": f"{type(err).__name__}: {err}"})
                jobs[jobs.index(job)] = None
        print(f"repeat {r + 1}/{args.repeats}: {time.perf_counter() - start:.1f} s", flush=True)
    records, exact, evals = [], [], []
    for job in jobs:
        if isinstance(job, SVIJob):
            records.append(job.record())
        elif isinstance(job, ExactJob):
            e, ev = job.record()
            exact.append(e)
            evals.extend(ev)
    for f in failed:
        (exact if f.get("what") == "exact" else records).append(f)
    order = {o: i for i, o in enumerate(OBJECTIVES)}
    records.sort(key=lambda r: (r["T"], r["B"], order[r["objective"]]))
    exact.sort(key=lambda e: (e["T"], e["B"]))
    return records, exact, evals


# ---------------------------------------------------------------- fits and report


def linear_fit(xs, ys) -> dict:
    """Least squares ys = slope * xs + intercept, with R^2."""
    slope, intercept = np.polyfit(xs, ys, 1)
    pred = slope * np.asarray(xs) + intercept
    ss_res = float(((np.asarray(ys) - pred) ** 2).sum())
    ss_tot = float(((np.asarray(ys) - np.mean(ys)) ** 2).sum())
    return {"slope_ms_per_T": float(slope), "intercept_ms": float(intercept),
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0}


def fits(records: list[dict]) -> tuple[list[dict], list[dict]]:
    ok = [r for r in records if "error" not in r]
    in_T, per_seq = [], []
    for B in sorted({r["B"] for r in ok}):
        for objective in OBJECTIVES:
            rows = sorted((r for r in ok if r["B"] == B and r["objective"] == objective), key=lambda r: r["T"])
            if len(rows) >= 2:
                for variant in ("package", "hand"):
                    fit = linear_fit([r["T"] for r in rows], [r[f"{variant}_ms"] for r in rows])
                    in_T.append({"B": B, "objective": objective, "variant": variant, **fit})
    for T in sorted({r["T"] for r in ok}):
        for objective in OBJECTIVES:
            rows = sorted((r for r in ok if r["T"] == T and r["objective"] == objective), key=lambda r: r["B"])
            if rows:
                per_seq.append({"T": T, "objective": objective,
                                "ms_per_sequence": {r["B"]: r["package_ms"] / r["B"] for r in rows}})
    return in_T, per_seq


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_avg_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__, "pyro": pyro.__version__,
            "python": platform.python_version(), "validation": is_validation_enabled(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def markdown(report: dict) -> str:
    m, a = report["machine"], report["settings"]
    lines = [
        "# SVI speed: pyro_dssm vs hand-written PyTorch",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores, shared; 1-min load average {m['load_avg_1min']} at the end), "
        f"{m['threads']} torch thread(s); torch {m['torch']}, pyro {m['pyro']}, Python {m['python']}; "
        f"Pyro validation {'on' if m['validation'] else 'off'}; {m['date']}.",
        f"K={a['K']}, D=10, hidden {a['hidden']}, tau={TAU}; median of {a['repeats']} interleaved repeats "
        f"of {a['steps']} step(s) each, after {a['warmup']} warm-up step(s); every configuration is timed once per "
        "repeat, round-robin. Ratio = package / hand-written step time, paired per repeat: median [min, max].",
        "",
        "## SVI step (ms)",
        "",
        "| T | B | objective | package | hand-written | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["records"]:
        if "error" in r:
            lines.append(f"| {r['T']} | {r['B']} | {r['objective']} | FAILED: {r['error']} | | |")
        else:
            lines.append(f"| {r['T']} | {r['B']} | {r['objective']} | {r['package_ms']:.1f} | {r['hand_ms']:.1f} | "
                         f"{r['ratio']:.3f} [{r['ratio_min']:.3f}, {r['ratio_max']:.3f}] |")
    lines += ["", "## Step time vs T (least squares, ms = slope * T + intercept)", "",
              "| B | objective | variant | ms per time step | intercept ms | R^2 |", "|---|---|---|---|---|---|"]
    for f in report["fit_T"]:
        lines.append(f"| {f['B']} | {f['objective']} | {f['variant']} | {f['slope_ms_per_T']:.3f} | "
                     f"{f['intercept_ms']:.1f} | {f['r2']:.4f} |")
    Bs = sorted({r["B"] for r in report["records"]})
    lines += ["", "## Package step time per sequence vs B (ms per sequence)", "",
              "| T | objective | " + " | ".join(f"B={B}" for B in Bs) + " |", "|---|---|" + "---|" * len(Bs)]
    for p in report["per_sequence"]:
        cells = [f"{p['ms_per_sequence'][B]:.3f}" if B in p["ms_per_sequence"] else "" for B in Bs]
        lines.append(f"| {p['T']} | {p['objective']} | " + " | ".join(cells) + " |")
    lines += ["", "## Exact HMM step (log p(X) + backward + Adam, ms) and evaluation (time steps / s)", "",
              "| T | B | exact step ms | " + " | ".join(EVALS) + " |", "|---|---|---|" + "---|" * len(EVALS)]
    for e in report["exact"]:
        if "error" in e:
            lines.append(f"| {e['T']} | {e['B']} | FAILED: {e['error']} |" + " |" * len(EVALS))
            continue
        rates = {v["what"]: v["steps_per_s"] for v in report["eval"] if v["T"] == e["T"] and v["B"] == e["B"]}
        lines.append(f"| {e['T']} | {e['B']} | {e['exact_step_ms']:.2f} | "
                     + " | ".join(f"{rates[w]:.3g}" for w in EVALS) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, nargs="+", default=[50, 100, 200], help="sequence lengths")
    parser.add_argument("--B", type=int, nargs="+", default=[16, 64, 256], help="batch sizes")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--K", type=int, default=5, help="number of states")
    parser.add_argument("--hidden", type=int, default=32, help="hidden size of every network")
    parser.add_argument("--repeats", type=int, default=11, help="interleaved repeats (median reported)")
    parser.add_argument("--steps", type=int, default=1, help="steps per timed repeat")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    # One thread: at these sizes every op is too small to gain from intra-op
    # threads, and on a shared machine a second thread mostly waits for a core.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 2 repeats: a smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for speed.md and speed.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.T, args.B, args.repeats, args.steps, args.warmup = [8, 16], [4, 8], 2, 1, 1
    if min(args.T) < 2 or min(args.B) < 1 or args.repeats < 1 or args.steps < 1 or args.warmup < 0 or args.threads < 0:
        parser.error(f"need T >= 2, B >= 1, repeats >= 1, steps >= 1, warmup >= 0; got T={args.T}, B={args.B}, "
                     f"repeats={args.repeats}, steps={args.steps}, warmup={args.warmup}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    with pyro.validation_enabled(True):  # Pyro's default, stated explicitly
        records, exact, evals = run_jobs(args)
        for r in records:
            if "error" in r:
                print(f"T={r['T']} B={r['B']} {r['objective']}: FAILED {r['error']}")
            else:
                print(f"T={r['T']:4d} B={r['B']:4d} {r['objective']:8s} package {r['package_ms']:8.1f} ms  "
                      f"hand {r['hand_ms']:8.1f} ms  ratio {r['ratio']:.3f} [{r['ratio_min']:.3f}, {r['ratio_max']:.3f}]")
        report = {"machine": machine(),
                  "settings": {k: v for k, v in vars(args).items() if k != "out"},
                  "records": records, "exact": exact, "eval": evals}
    report["fit_T"], report["per_sequence"] = fits(records)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(report, indent=1, default=str))
    (args.out / "speed.md").write_text(markdown(report))
    print(f"wrote {args.out / 'speed.md'} and {args.out / 'speed.json'}")
    return 1 if any("error" in r for r in records + exact) else 0


if __name__ == "__main__":
    sys.exit(main())
