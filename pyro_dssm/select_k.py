r"""Choose the number of states K: ``python -m pyro_dssm.select_k k=2,3,4,5,6,7 [out=DIR] [overrides ...]``.

Trains one model per K with the same data, seed and settings (the Hydra
``overrides`` of ``pyro_dssm.train``, e.g. ``data=csv data.path=my.csv`` or
``data.n_states=5 trainer.n_epochs=5``; the command sets ``model.n_states=K``),
each in its own run directory ``DIR/k<K>`` (default
``outputs/select_k/DATE/TIME``), then prints a markdown table and recommends
the K of least BIC:

| column | what |
|---|---|
| BIC | :math:`-2 \log p(X_{train}) + p \log n`: exact log-likelihood of the training split (the
  sequences or windows training saw, as model inputs), n its time steps, p the parameter count of
  ``FittedDSSM.bic`` (:func:`pyro_dssm.fitted.n_parameters`: the families' own counts of the HMM the
  networks define, not their weight count; K(K-1) + KD for ``gaussian``) |
| AIC | :math:`-2 \log p(X_{train}) + 2p` |
| held-out log p(X)/step | ``val_loglik_per_step`` of the run: exact log p(X) per step of the validation
  split (with ``data.val_fraction=0``, of the training sequences) |
| train s | ``train_seconds`` of the run |

The same table goes to ``DIR/select_k.md`` and the numbers to ``DIR/select_k.json``.
Each run directory is a normal run (``metrics.json``, ``checkpoints/best.pt``,
``.hydra/overrides.yaml``), so ``python -m pyro_dssm.gather DIR`` lists the runs
and ``pyro_dssm.load(DIR/k5)`` loads one. Note that ``data.n_states`` of the
synthetic data is the true K of the generator; only ``model.n_states`` varies.
The command's own arguments are ``k`` and ``out`` (:class:`SelectKArgs`, parsed
by :func:`pyro_dssm.cli.parse` like decode's and gather's); every other
``key=value`` argument is a Hydra override of ``pyro_dssm.train``. A bad
argument prints one line on stderr and exits with status 2.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from omegaconf import MISSING

from pyro_dssm import cli
from pyro_dssm.api import compose_config, trained_model
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.fitted import exact_log_px, n_parameters
from pyro_dssm.train import load_data, train

log = logging.getLogger(__name__)


@dataclass
class SelectKArgs:
    """The command's own arguments: ``k`` the comma-separated numbers of states to try, ``out`` the directory
    of the runs ``k<K>`` and the table (default ``outputs/select_k/DATE/TIME``)."""

    k: str = MISSING
    out: str | None = None


def _as_arrays(data: SequenceData) -> list:
    """Padded (N, T, D) sequences -> N arrays (T_i, D), padding dropped."""
    return [x[:n].numpy() for x, n in zip(data.x, data.lengths.tolist())]


def sweep(ks: list[int], overrides: list[str], out: str | Path) -> list[dict]:
    """Train one model per K in ``out/k<K>``; returns one record per K with ``K``, ``bic``, ``aic``,
    ``heldout_loglik_per_step``, ``train_seconds``, ``n_parameters`` and ``run_dir``."""
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 2 for k in ks) or len(set(ks)) < len(ks):
        raise ValueError(f"k must list distinct integers >= 2, got {ks}")
    fixed = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in ("model.n_states", "hydra.run.dir")]
    if fixed:
        raise ValueError(f"overrides {fixed}: select_k sets model.n_states (k=) and the run directories (out=)")
    cfg = compose_config(overrides)
    data = load_data(cfg.data, cfg.seed)  # what train() reads, with the same seed: for the training log p(X)
    train_x = _as_arrays(data.train)
    rows = []
    for K in ks:
        run_overrides = [*overrides, f"model.n_states={K}"]
        run_dir = Path(out) / f"k{K}"
        metrics = train(compose_config(run_overrides), run_dir, run_overrides)
        model, _ = trained_model(run_dir, cfg, metrics)
        log_px, n = exact_log_px(model, train_x)
        p = n_parameters(model)
        rows.append({"K": K, "bic": -2 * log_px + p * math.log(n), "aic": -2 * log_px + 2 * p,
                     "heldout_loglik_per_step": metrics["val_loglik_per_step"],
                     "train_seconds": metrics["train_seconds"], "n_parameters": p, "run_dir": str(run_dir)})
    return rows


def best_k(rows: list[dict]) -> int:
    """The K of least BIC."""
    return min(rows, key=lambda r: r["bic"])["K"]


def markdown(rows: list[dict]) -> str:
    """The table of :func:`sweep`'s records, the least BIC marked, and the recommendation."""
    k = best_k(rows)
    lines = ["| K | BIC | AIC | held-out log p(X)/step | train s |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        mark = " **(min)**" if r["K"] == k else ""
        lines.append(f"| {r['K']} | {r['bic']:.1f}{mark} | {r['aic']:.1f} | {r['heldout_loglik_per_step']:.4f} "
                     f"| {r['train_seconds']:.1f} |")
    return "\n".join(lines) + f"\n\nrecommended: K = {k} (least BIC)\n"


def parse_args(argv: list[str]) -> tuple[list[int], Path, list[str]]:
    """The numbers of states, the output directory and the Hydra overrides (every other ``key=value``)."""
    own = {f.name for f in fields(SelectKArgs)}
    mine = [a for a in argv if a.partition("=")[0] in own]
    args = cli.parse(SelectKArgs, mine)
    try:
        ks = [int(k) for k in args.k.split(",")]
    except ValueError:
        raise ValueError(f"k must list distinct integers >= 2 separated by commas, got {args.k!r}") from None
    out = Path(args.out or time.strftime("outputs/select_k/%Y-%m-%d/%H-%M-%S"))
    return ks, out, [a for a in argv if a not in mine]


def run(parsed: tuple[list[int], Path, list[str]]) -> None:
    """Sweep, then print the table and write it with the records beside the runs."""
    ks, out, overrides = parsed
    rows = sweep(ks, overrides, out)
    table = markdown(rows)
    (out / "select_k.md").write_text(table)
    (out / "select_k.json").write_text(json.dumps(rows, indent=1))
    print(table)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0, 2 for bad input, 1 for an OSError)."""
    return cli.main(parse_args, run, sys.argv[1:] if argv is None else argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
