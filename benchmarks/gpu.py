"""SVI steps per second on the GPU against the CPU, and host syncs in the hot loop.

    python benchmarks/gpu.py --B 1024 --T 100 --steps 20 --out benchmarks/results/gpu.md

For each device (cpu, and cuda when available) and objective: the trainer's
step (``pyro_dssm.inference.loop.train_epochs`` over one epoch of ``--steps`` minibatches,
logging off), timed after a warm-up, CUDA synchronised. On CUDA the step also
runs under ``torch.cuda.set_sync_debug_mode("warn")`` and the number of host
synchronisations it triggers is counted (logging does call ``loss.item()``
once per step: that one is expected).
"""

from __future__ import annotations

import argparse
from collections import Counter
import platform
import sys
import time
import warnings
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyro_dssm.data.synthetic import make_synthetic  # noqa: E402
from pyro_dssm.model.dssm import DSSM, ModelConfig  # noqa: E402
from pyro_dssm.inference.objectives import make_elbo  # noqa: E402
from pyro_dssm.io.tracking import Tracker  # noqa: E402
from pyro_dssm.config import TrainerConfig  # noqa: E402
from pyro_dssm.inference.batches import n_valid  # noqa: E402
from pyro_dssm.inference.faults import SkippedSteps  # noqa: E402
from pyro_dssm.inference.loop import SGDStep, train_epochs  # noqa: E402
from pyro_dssm.inference.batches import device_mask  # noqa: E402
from pyro_dssm.inference.state import TrainingState  # noqa: E402


def time_steps(device: str, objective: str, B: int, T: int, steps: int, validate: bool) -> tuple[float, int]:
    """Seconds per SVI step and the number of host-sync warnings per step (CUDA only)."""
    data = make_synthetic(seq_len=T, n_train=B * steps, n_val=1, seed=0)
    torch.manual_seed(0)
    model = DSSM(ModelConfig()).to(device)
    cfg = TrainerConfig(batch_size=B, objective=objective, device=device)
    elbo, optim = make_elbo(objective), torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x, mask = data.train.x.to(device), device_mask(data.train, torch.device(device))
    tracker = Tracker("/nonexistent", enabled=False)

    tau = torch.tensor(0.5, device=device)  # on the device once, as the trainer's schedule is

    def loss_fn(xb, mb, step):
        return elbo.differentiable_loss(model.model, model.guide, xb, mb, tau) / n_valid(xb, mb), {}

    gen = torch.Generator().manual_seed(0)

    def sgd_epoch(xs, ms):  # one epoch of the trainer's loop, no hooks
        state = TrainingState(optim, gen, SkippedSteps(cfg.max_consecutive_skips))
        train_epochs(state, SGDStep(model, loss_fn, xs, ms, cfg.grad_clip, tracker), 1, cfg.batch_size)

    sgd_epoch(x[: 2 * B], None if mask is None else mask[: 2 * B])
    syncs = 0
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught, pyro.validation_enabled(validate):
        warnings.simplefilter("always")
        start = time.perf_counter()
        sgd_epoch(x, mask)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    if device == "cuda":
        torch.cuda.set_sync_debug_mode(0)
        sync_warnings = [w for w in caught if "synchroniz" in str(w.message)]
        syncs = len(sync_warnings)
        where = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in sync_warnings)
        print(f"  host syncs ({objective}, validation {validate}): "
              f"{dict(where.most_common(8))}", flush=True)
    return seconds, syncs / steps


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--B", type=int, default=1024)
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    lines = [f"# GPU vs CPU, B={args.B}, T={args.T}, K=5, D=10, hidden 32, {args.steps} steps after warm-up", "",
             f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads, {gpu}; "
             f"torch {torch.__version__}, pyro {pyro.__version__}", "",
             "| objective | validation | device | ms/step | steps/s | host syncs/step |", "|---|---|---|---|---|---|"]
    results = {}
    for objective in ("trace", "analytic"):
        for validate in (True, False):
            for device in devices:
                sec, syncs = time_steps(device, objective, args.B, args.T, args.steps, validate)
                results[device] = sec
                lines.append(f"| {objective} | {'on' if validate else 'off'} | {device} | {sec * 1000:.1f} | "
                             f"{1 / sec:.2f} | {syncs:.1f} |" if device == "cuda" else
                             f"| {objective} | {'on' if validate else 'off'} | {device} | {sec * 1000:.1f} | "
                             f"{1 / sec:.2f} | - |")
                print(lines[-1], flush=True)
            if "cuda" in devices:
                lines.append(f"| {objective} | {'on' if validate else 'off'} | GPU speed-up | "
                             f"{results['cpu'] / results['cuda']:.2f}x | | |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
