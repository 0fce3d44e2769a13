"""Exact log p(X) of the validation set: pyro_dssm.model.hmm against hmmlearn's ``score``, and peak memory of a run.

    python benchmarks/exact_eval.py --repeats 7 --out benchmarks/results/exact_eval.md

Same parameters (the true HMM of the default data, seed 0) and the same
sequences for both; timings interleaved in one process, median of repeats.
``--rss`` also runs ``python -m pyro_dssm.train`` (defaults) in a subprocess and
reports its peak resident memory (ru_maxrss of the child).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyro_dssm.model import hmm  # noqa: E402
from pyro_dssm.data.synthetic import make_synthetic  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rss", action="store_true", help="also measure a default training run's peak memory")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1, help="torch threads (hmmlearn's score is single-threaded C)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from hmmlearn.hmm import GaussianHMM

    data = make_synthetic(seed=0)
    prm, val = data.params, data.val
    K, D = prm.means.shape
    peer = GaussianHMM(n_components=K, covariance_type="spherical", init_params="", params="")
    peer.n_features = D
    peer.startprob_, peer.transmat_ = prm.initial.double().numpy(), prm.transition.double().numpy()
    peer.means_, peer.covars_ = prm.means.double().numpy(), np.full(K, prm.noise_std**2)
    X, lengths = val.x.reshape(-1, D).double().numpy(), [val.x.shape[1]] * len(val)
    log_init, log_trans = prm.initial.log(), prm.transition.log()

    def ours():
        with torch.no_grad():
            ll = hmm.gaussian_log_likelihood(val.x, prm.means, prm.noise_std)
            return float(hmm.log_likelihood(log_init, log_trans, ll).sum())

    def theirs():
        return peer.score(X, lengths)

    assert abs(ours() - theirs()) < 1e-3 * abs(theirs()), (ours(), theirs())
    t_ours, t_theirs = [], []
    for r in range(args.repeats):
        for fn, sink in ((ours, t_ours), (theirs, t_theirs)) if r % 2 == 0 else ((theirs, t_theirs), (ours, t_ours)):
            start = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - start)
    ratios = [a / b for a, b in zip(t_ours, t_theirs)]
    steps = val.x.shape[0] * val.x.shape[1]
    lines = [f"# Exact log p(X) of {len(val)} x {val.x.shape[1]} validation steps (K={K}, D={D}), "
             f"torch {torch.__version__} ({torch.get_num_threads()} threads)", "",
             "| | median ms | time steps / s |", "|---|---|---|",
             f"| pyro_dssm.model.hmm.log_likelihood (float32) | {statistics.median(t_ours) * 1e3:.1f} | "
             f"{steps / statistics.median(t_ours):.3g} |",
             f"| hmmlearn GaussianHMM.score (float64) | {statistics.median(t_theirs) * 1e3:.1f} | "
             f"{steps / statistics.median(t_theirs):.3g} |",
             "", f"ratio ours / hmmlearn: median {statistics.median(ratios):.3f} "
             f"[{min(ratios):.3f}, {max(ratios):.3f}] over {args.repeats} interleaved repeats"]
    if args.rss:
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pyro_dssm.train", f"hydra.run.dir={tmp}"], cwd=REPO,
                           check=True, capture_output=True)
            wall = time.perf_counter() - start
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        lines += ["", f"Default training run (`python -m pyro_dssm.train`): peak resident memory {rss_mb:.0f} MB, "
                  f"wall time {wall:.0f} s"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
