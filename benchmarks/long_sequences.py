"""Exact inference on ONE long sequence, on CPU with one thread: wall seconds and peak memory of each method.

    OMP_NUM_THREADS=1 python benchmarks/long_sequences.py --sizes 1e4 1e5 1e6  # -> results/long_sequences.json
    python benchmarks/long_sequences.py --sizes 1e4 --methods scan_loglik chunked --K 16

Methods, all on the same (1, T, K) table of log-likelihoods (K = 4 by default, standard normal draws from a
fixed seed, in blocks of 1000 steps so that any chunk can be drawn alone), under ``torch.no_grad()``:

- ``forward``: log p(X) by the scaled forward loop, :func:`pyro_dssm.model.hmm.log_likelihood`;
- ``marginals``: smoothed marginals (forward and backward loops), :func:`pyro_dssm.model.hmm.posterior_marginals`;
- ``viterbi``: the most probable path, :func:`pyro_dssm.model.hmm.viterbi`;
- ``chunked``: log p(X) in bounded memory, :func:`pyro_dssm.model.scan.chunked_log_likelihood`, drawing each
  chunk of the table when asked (its time includes those draws, the others' does not: their table is
  drawn before the clock starts, but it counts in their memory);
- ``scan_loglik`` / ``scan_forward``: the parallel reduction / scan,
  :func:`pyro_dssm.model.scan.parallel_log_likelihood` and :func:`~pyro_dssm.model.scan.parallel_forward`
  (all T filtered alphas).

Each (method, T) runs in its own child process: after the imports and a warm-up on 256 steps, the baseline is
``resource.getrusage(RUSAGE_SELF).ru_maxrss``; the peak reported is the high-water mark after all repeats minus
that baseline, in MiB (the child's own ``VmHWM`` is recorded beside it as a check). The parent never imports
torch, so the high-water mark a child inherits across ``exec`` stays below its baseline. Wall seconds: median
[min, max] of ``--repeats`` runs (``--repeats-long`` from T = 10^6 on). A method is skipped at a size where its
time or memory, extrapolated linearly from the previous size, would pass ``--max-seconds`` or 80 % of the
available memory; a child that runs past ``--timeout`` or fails is reported as such. Prints a markdown table with
the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine_info import cpu_model  # noqa: E402

METHODS = ["forward", "marginals", "viterbi", "chunked", "scan_loglik", "scan_forward"]
BLOCK = 1000  # steps per seeded block of the log-likelihood table


def log_lik_steps(start: int, stop: int, K: int, seed: int):
    """(1, stop - start, K) log-likelihoods of steps start .. stop - 1: the same numbers whatever the chunking."""
    import torch

    blocks = []
    for b in range(start // BLOCK, (stop - 1) // BLOCK + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        blocks.append(torch.randn(1, BLOCK, K, generator=g))
    table = torch.cat(blocks, 1)
    offset = (start // BLOCK) * BLOCK
    return table[:, start - offset: stop - offset]


def make_run(method: str, T: int, K: int, chunk: int, seed: int):
    """A function of no arguments that runs ``method`` once on T steps and returns (B,) its value, or None."""
    import torch

    from pyro_dssm.model import hmm, scan

    g = torch.Generator().manual_seed(seed)
    log_trans = torch.randn(K, K, generator=g).log_softmax(-1)
    log_init = hmm.uniform_log_init(K, log_trans)
    if method == "chunked":
        return lambda: scan.chunked_log_likelihood(
            log_init, log_trans, lambda a, b: log_lik_steps(a, b, K, seed), T, chunk=chunk)
    log_lik = log_lik_steps(0, T, K, seed)
    return {
        "forward": lambda: hmm.log_likelihood(log_init, log_trans, log_lik),
        "marginals": lambda: (hmm.posterior_marginals(log_init, log_trans, log_lik), None)[1],
        "viterbi": lambda: hmm.viterbi(log_init, log_trans, log_lik)[1],
        "scan_loglik": lambda: scan.parallel_log_likelihood(log_init, log_trans, log_lik),
        "scan_forward": lambda: scan.parallel_forward(log_init, log_trans, log_lik)[1],
    }[method]


def vm_hwm_mib() -> float:
    """This process's own peak resident set (VmHWM, reset at exec), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(method: str, T: int, K: int, chunk: int, seed: int, repeats: int) -> dict:
    """Child process: time ``repeats`` runs of ``method`` on T steps and measure its peak memory beyond the imports."""
    import torch

    torch.set_num_threads(1)
    with torch.no_grad():
        make_run(method, 256, K, min(chunk, 256), seed)()  # warm-up: lazy initialisations out of the numbers
        base_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run = make_run(method, T, K, chunk, seed)
        seconds, value = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            value = run()
            seconds.append(time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_mib": (peak_kib - base_kib) / 1024, "baseline_mib": base_kib / 1024,
            "vm_hwm_mib": vm_hwm_mib(), "value_per_step": None if value is None else float(value[0]) / T,
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def measure(method: str, T: int, args, repeats: int) -> dict:
    """Run one worker child; its record, or the reason it gave none."""
    cmd = [sys.executable, __file__, "--worker", method, "--T", str(T), "--K", str(args.K), "--chunk", str(args.chunk),
           "--seed", str(args.seed), "--repeats", str(repeats)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timed out after {args.timeout} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": f"failed (exit {proc.returncode}): {last}"}
    return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def skip_reason(previous: dict | None, T: int, args) -> str | None:
    """Why not to run at T, extrapolating linearly from the previous size's run (None: run it)."""
    if previous is None or previous["status"] != "ok":
        return None if previous is None else f"skipped: failed at T={previous['T']:,}"
    scale = T / previous["T"]
    seconds = statistics.median(previous["seconds"]) * scale
    mib = (previous["peak_mib"] + previous["baseline_mib"]) * scale
    if seconds > args.max_seconds:
        return f"skipped: about {seconds:.0f} s per run expected (> {args.max_seconds:.0f} s)"
    if mib > 0.8 * available_mib():
        return f"skipped: about {mib:.0f} MiB expected (> 80 % of the {available_mib():.0f} MiB available)"
    return None


def table(records: list[dict]) -> str:
    rows = ["| method | T | wall s, median [min, max] | peak MiB | value / T |", "|---|---|---|---|---|"]
    for r in records:
        if r["status"] != "ok":
            rows.append(f"| {r['method']} | {r['T']:,} | {r['status']} | | |")
            continue
        s = r["seconds"]
        value = "" if r["value_per_step"] is None else f"{r['value_per_step']:.6f}"
        rows.append(f"| {r['method']} | {r['T']:,} | {statistics.median(s):.3f} [{min(s):.3f}, {max(s):.3f}] "
                    f"| {r['peak_mib']:.1f} | {value} |")
    return "\n".join(rows)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=lambda s: int(float(s)), nargs="+", default=[10**4, 10**5, 10**6],
                   help="sequence lengths T (1e5 and 100000 both work)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    p.add_argument("--K", type=int, default=4)
    p.add_argument("--chunk", type=int, default=4096, help="steps per chunk of the chunked method")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--repeats-long", type=int, default=1, help="repeats from T = 10^6 on")
    p.add_argument("--max-seconds", type=float, default=300.0, help="skip a run expected to take longer")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a child is stopped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "long_sequences.json")
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--T", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.T, args.K, args.chunk, args.seed, args.repeats)))
        return 0
    records, last = [], {}
    for T in sorted(args.sizes):
        repeats = args.repeats_long if T >= 10**6 else args.repeats
        for method in args.methods:
            reason = skip_reason(last.get(method), T, args)
            record = {"status": reason} if reason else measure(method, T, args, repeats)
            record = {"method": method, "T": T, "repeats": repeats, **record}
            print(f"{method} T={T:,}: {record['status']}"
                  + (f", {statistics.median(record['seconds']):.3f} s, {record['peak_mib']:.1f} MiB"
                     if record["status"] == "ok" else ""), file=sys.stderr, flush=True)
            records.append(record)
            last[method] = record
    torch_version = next((r["torch"] for r in records if r["status"] == "ok"), "unknown")
    machine = {"cpu": cpu_model(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
               "torch": torch_version, "torch_threads": 1, "python": platform.python_version(),
               "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}
    print(f"Exact inference on one sequence: K={args.K}, chunk={args.chunk}, {machine['cpu']} "
          f"({machine['cpu_count']} cores, 1 torch thread), torch {torch_version}; wall seconds over "
          f"{args.repeats} repeats ({args.repeats_long} from T = 10^6); peak MiB above the imports; "
          f"value / T = log p(X) / T (Viterbi: log p(path, X) / T)\n")
    print(table(records))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python {' '.join(sys.argv)}"
    settings = {k: getattr(args, k) for k in ("sizes", "methods", "K", "chunk", "repeats", "repeats_long",
                                              "max_seconds", "timeout", "seed")}
    args.out.write_text(json.dumps({"machine": machine, "settings": settings, "command": command,
                                    "results": records}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
