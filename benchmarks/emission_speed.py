"""SVI step time of each emission family against the ``gaussian`` step, in one process (the families' speed bar).

    OMP_NUM_THREADS=1 python benchmarks/emission_speed.py                 # T=100, B=64, 31 repeats
    python benchmarks/emission_speed.py --families gaussian autoregressive --repeats 11
    python benchmarks/emission_speed.py --families gaussian --no-messages   # + the guide without beta_t
    OMP_NUM_THREADS=1 python benchmarks/emission_speed.py --families gaussian autoregressive --transition recurrent
        # + each family with model.transition=recurrent, its ratio to the same family's stationary step
    OMP_NUM_THREADS=1 python benchmarks/emission_speed.py --families gaussian --transition inputs --inputs 2
        # model.transition=inputs reads 2 exogenous input columns appended to the batch (the stationary row does not)

One step = the analytic objective's ``differentiable_loss`` (model and guide), backward and Adam, as the
training loop runs it, on the same random (B, T, D) batch for every family (non-negative integer counts
for ``poisson``). The families alternate within every repeat (round-robin, after warm-up steps); the ratio
of a family is its step time over the ``gaussian`` step of the same repeat, and the table gives the median
[min, max] over repeats. Writes ``benchmarks/results/emission_speed.md``.
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
from pyro_dssm.config import ModelConfig  # noqa: E402
from pyro_dssm.inference.objectives import make_elbo  # noqa: E402
from pyro_dssm.model.dssm import DSSM  # noqa: E402
from pyro_dssm.config.families import EMISSIONS  # noqa: E402

TAU = 0.5


def make_step(family: str, x: torch.Tensor, K: int, messages: bool = True, transition: str = "stationary",
              inputs: torch.Tensor | None = None):
    """A closure running one SVI step of a fresh DSSM with emission ``family`` on batch ``x`` (B, T, D)
    (``messages``: ``model.guide_messages``; ``transition``: ``model.transition``; ``inputs`` (B, T, U): exogenous
    inputs, appended to the batch as the model's input columns)."""
    model = DSSM(ModelConfig(n_states=K, obs_dim=x.shape[-1], emission=family, guide_messages=messages,
                             transition=transition, input_dim=0 if inputs is None else inputs.shape[-1]))
    x = x if inputs is None else torch.cat([x, inputs], -1)
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    elbo = make_elbo("analytic")
    tau = torch.tensor(TAU)

    def step() -> None:
        loss = elbo.differentiable_loss(model.model, model.guide, x, None, tau) / x.shape[0] / x.shape[1]
        optim.zero_grad()
        loss.backward()
        optim.step()

    return step


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(EMISSIONS), choices=list(EMISSIONS))
    parser.add_argument("--T", type=int, default=100)
    parser.add_argument("--B", type=int, default=64)
    parser.add_argument("--K", type=int, default=5)
    parser.add_argument("--D", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-messages", action="store_true",
                        help="also time gaussian with model.guide_messages=false (the guide's cost of beta_t)")
    parser.add_argument("--transition", default=None, help="also time each family with this model.transition")
    parser.add_argument("--inputs", type=int, default=1, help="U, the input columns of --transition inputs")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "emission_speed.md")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    x = torch.randn(args.B, args.T, args.D)
    counts = torch.poisson(torch.full((args.B, args.T, args.D), 2.0))
    families = ["gaussian"] + [f for f in args.families if f != "gaussian"]
    steps = {f: make_step(f, counts if f == "poisson" else x, args.K) for f in families}
    if args.no_messages:
        families.append("gaussian, guide_messages=false")
        steps[families[-1]] = make_step("gaussian", x, args.K, messages=False)
    own = {}  # a family with another transition -> its stationary row
    if args.transition is not None:
        for f in list(families):
            name = f"{f}, transition={args.transition}"
            families.append(name)
            u = torch.randn(args.B, args.T, args.inputs) if args.transition == "inputs" else None
            steps[name] = make_step(f, counts if f == "poisson" else x, args.K, transition=args.transition, inputs=u)
            own[name] = f
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times = {f: [] for f in families}
    for _ in range(args.repeats):
        for f, step in steps.items():
            start = time.perf_counter()
            step()
            times[f].append(time.perf_counter() - start)
    lines = ["# SVI step time per emission family", "",
             f"{cpu_model()}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}; "
             f"T={args.T}, B={args.B}, K={args.K}, D={args.D}, analytic objective, tau={TAU}; median [min, max] "
             f"of {args.repeats} interleaved repeats; ratio = family step / gaussian step of the same repeat.", "",
             f"Command: `python benchmarks/emission_speed.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "", "| family | ms per step | ratio to gaussian |", "|---|---|---|"]
    for f in families:
        ratios = [a / b for a, b in zip(times[f], times["gaussian"])]
        lines.append(f"| {f} | {statistics.median(times[f]) * 1e3:.1f} | {statistics.median(ratios):.3f} "
                     f"[{min(ratios):.3f}, {max(ratios):.3f}] |")
    for f, base in own.items():
        ratios = [a / b for a, b in zip(times[f], times[base])]
        lines.append(f"\n{f} / {base} (same repeat): {statistics.median(ratios):.3f} [{min(ratios):.3f}, "
                     f"{max(ratios):.3f}]")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
