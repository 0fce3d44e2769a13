"""EM's E-step, sequential scaled forward against the parallel scan, side by side in one process.

    OMP_NUM_THREADS=1 python benchmarks/estep_speed.py

One E-step = autograd of the exact log p(X) with respect to the log transition matrix and the emission table
(what :func:`pyro_dssm.inference.em.baum_welch` runs per iteration), on standard-normal tables, a sticky random
matrix and ragged masks, for each (B, T, K). Median of ``--repeats`` runs per method, the methods alternating; the
last column is the choice :func:`pyro_dssm.inference.em.e_step_log_px` makes for that shape.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine_info import cpu_model  # noqa: E402
from pyro_dssm.inference.em import e_step_log_px  # noqa: E402
from pyro_dssm.model import hmm, scan  # noqa: E402

SHAPES = [(100, 100, 5), (100, 300, 5), (100, 100, 3), (64, 200, 3), (30, 200, 6), (22, 400, 4), (6, 400, 12),
          (3, 730, 3), (1, 4579, 4)]


def e_step(log_px, log_init, trans, log_lik, mask):
    """(expected transition counts (K, K), posterior marginals (B, T, K)) by autograd of ``log_px``."""
    log_trans = trans.log().requires_grad_()
    log_lik = log_lik.detach().requires_grad_()
    return torch.autograd.grad(log_px(log_init, log_trans, log_lik, mask).sum(), [log_trans, log_lik])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{cpu_model()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}; median of "
          f"{args.repeats}\n")
    print("| B | T | K | sequential ms | scan ms | sequential / scan | max abs diff | e_step_log_px picks |")
    print("|---|---|---|---|---|---|---|---|")
    for B, T, K in SHAPES:
        gen = torch.Generator().manual_seed(0)
        log_lik = torch.randn(B, T, K, generator=gen)
        trans = torch.softmax(torch.randn(K, K, generator=gen) + 3 * torch.eye(K), -1)
        log_init = torch.full((K,), -torch.log(torch.tensor(float(K))).item())
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[0, T // 2:] = False
        methods = {"sequential": hmm.log_likelihood, "scan": scan.parallel_log_likelihood}
        grads = {name: e_step(f, log_init, trans, log_lik, mask) for name, f in methods.items()}  # and warm-up
        diff = max(float((a - b).abs().max()) for a, b in zip(grads["sequential"], grads["scan"]))
        times = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, f in methods.items():
                start = time.perf_counter()
                e_step(f, log_init, trans, log_lik, mask)
                times[name].append(time.perf_counter() - start)
        seq, par = (statistics.median(times[n]) for n in methods)
        pick = "scan" if e_step_log_px(B, T, K) is scan.parallel_log_likelihood else "sequential"
        print(f"| {B} | {T} | {K} | {seq * 1e3:.1f} | {par * 1e3:.1f} | {seq / par:.1f} | {diff:.1e} | {pick} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
