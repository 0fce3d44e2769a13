"""EM's E-step: the scaled forward-backward, autograd of the scaled forward and of the parallel scan, side by side.

    OMP_NUM_THREADS=1 python benchmarks/estep_speed.py

One E-step = the expected transition counts and posterior marginals of one HMM (what
:func:`pyro_dssm.inference.em.baum_welch` needs per iteration), on standard-normal tables, a sticky random matrix and
ragged masks, for each (B, T, K): ``forward-backward`` (:func:`pyro_dssm.model.expected_counts.grouped_statistics`,
the recursions written out), ``autograd`` (the gradients of the scaled forward :func:`pyro_dssm.model.hmm.log_likelihood`,
the E-step before it) and ``scan`` (the gradients of :func:`pyro_dssm.model.scan.parallel_log_likelihood`). Median of
``--repeats`` runs per method, the methods alternating. ``grouped``: the forward-backward of ``--group`` EM
candidates at once (what :func:`pyro_dssm.inference.em.baum_welch_many` runs), its time divided by their number: the
cost per candidate. The last column is the choice :func:`pyro_dssm.inference.em.e_step_log_px` makes for that shape
with one candidate / with ``--group``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from machine_info import cpu_model  # noqa: E402
from pyro_dssm.inference.em import e_step_log_px  # noqa: E402
from pyro_dssm.model import hmm, scan  # noqa: E402
from pyro_dssm.model.expected_counts import grouped_statistics  # noqa: E402

SHAPES = [(100, 100, 5), (100, 300, 5), (100, 100, 3), (64, 200, 3), (30, 200, 6), (43, 400, 6), (22, 400, 4),
          (6, 400, 12), (3, 730, 3), (1, 4579, 4)]


def e_step(log_px, log_init, trans, log_lik, mask):
    """(expected transition counts (K, K), posterior marginals (B, T, K)) by autograd of ``log_px``."""
    log_trans = trans.log().requires_grad_()
    log_lik = log_lik.detach().requires_grad_()
    return torch.autograd.grad(log_px(log_init, log_trans, log_lik, mask).sum(), [log_trans, log_lik])


def forward_backward(group: int, log_init, trans, log_lik, mask):
    """(counts, marginals) of the first of ``group`` candidates (the same tables, stacked) from one grouped pass."""
    log_trans = trans.log().expand(group, *trans.shape).contiguous()
    tables = log_lik.expand(group, *log_lik.shape).contiguous()
    _, counts, gamma = grouped_statistics(log_init, log_trans, tables, mask)
    return counts[0], gamma[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--group", type=int, default=16, help="candidates in the grouped E-step")
    args = parser.parse_args(argv)
    print(f"{cpu_model()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}; median of "
          f"{args.repeats}\n")
    print(f"| B | T | K | forward-backward ms | autograd ms | scan ms | forward-backward / scan "
          f"| grouped ms per candidate (G={args.group}) | max abs diff | e_step_log_px picks (1 / G) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for B, T, K in SHAPES:
        gen = torch.Generator().manual_seed(0)
        log_lik = torch.randn(B, T, K, generator=gen)
        trans = torch.softmax(torch.randn(K, K, generator=gen) + 3 * torch.eye(K), -1)
        log_init = torch.full((K,), -torch.log(torch.tensor(float(K))).item())
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[0, T // 2:] = False
        methods = {"forward-backward": partial(forward_backward, 1, log_init, trans, log_lik, mask),
                   "autograd": partial(e_step, hmm.log_likelihood, log_init, trans, log_lik, mask),
                   "scan": partial(e_step, scan.parallel_log_likelihood, log_init, trans, log_lik, mask),
                   "grouped": partial(forward_backward, args.group, log_init, trans, log_lik, mask)}
        stats = {name: run() for name, run in methods.items()}  # and warm-up
        diff = max(float((a - b).abs().max()) for other in ("autograd", "scan", "grouped")
                   for a, b in zip(stats["forward-backward"], stats[other]))
        times = {name: [] for name in methods}
        for _ in range(args.repeats):
            for name, run in methods.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        fb, auto, par, grouped = (statistics.median(times[n]) for n in methods)
        grouped /= args.group
        pick = " / ".join("scan" if e_step_log_px(B, T, K, g) is scan.parallel_log_likelihood else "forward-backward"
                          for g in (1, args.group))
        print(f"| {B} | {T} | {K} | {fb * 1e3:.1f} | {auto * 1e3:.1f} | {par * 1e3:.1f} | {fb / par:.1f} "
              f"| {grouped * 1e3:.1f} | {diff:.1e} | {pick} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
