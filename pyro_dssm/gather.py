"""A sweep's runs in one table.

    python -m pyro_dssm.gather dir=SWEEP_DIR [csv=OUT.csv] [metrics=k1,k2,...]
    python -m pyro_dssm.gather SWEEP_DIR [--csv OUT.csv] [--metrics k1,k2,...]    (the same, older form)

A Hydra sweep (``python -m pyro_dssm.train -m ...``, any launcher) leaves one
directory per run under ``SWEEP_DIR`` (``multirun/DATE/TIME/N``), with the
run's overrides in ``.hydra/overrides.yaml`` and, when it finished, its
``metrics.json``. This prints one markdown row per run: the overrides that
vary across the sweep, then the chosen metrics. A run without
``metrics.json`` (failed, or still running) keeps its row, marked in the
``status`` column, so that no failure is hidden. ``metrics`` (comma-separated
``metrics.json`` keys) chooses the columns, by default the main validation
metrics; ``csv`` also writes the table to that file.

The arguments are the fields of :class:`GatherArgs`, parsed by
:func:`pyro_dssm.cli.parse` like ``pyro_dssm.decode``'s: an unknown key, a
missing directory or a sweep without runs prints one line on stderr and exits
with status 2. The older form (the directory as the first argument, ``--csv``,
``--metrics``) is rewritten into ``key=value`` first.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

from omegaconf import MISSING, OmegaConf

from pyro_dssm import cli

DEFAULT_METRICS = ("val_accuracy", "accuracy_over_oracle", "viterbi_accuracy", "val_elbo_per_step",
                   "val_loglik_per_step", "train_seconds", "epochs")


@dataclasses.dataclass
class GatherArgs:
    """The command line (module docstring); ``MISSING`` fields are required."""

    dir: str = MISSING  # the sweep's directory (hydra.sweep.dir, e.g. multirun/DATE/TIME)
    metrics: Optional[str] = None  # comma-separated metrics.json keys
    csv: Optional[str] = None  # also write the table to this CSV file


def _natural(path: Path) -> tuple:
    """Sort key: job directories 0, 1, ..., 10 in numeric order."""
    return tuple(int(p) if p.isdigit() else p for p in path.parts)


def collect(sweep_dir: str | Path) -> list[dict]:
    """One record per run under ``sweep_dir``: ``dir`` (relative), ``overrides`` (key -> value text),
    ``metrics`` (the numbers of ``metrics.json``, or None) and ``status``."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ValueError(f"sweep dir {str(sweep_dir)!r} is not a directory")
    runs = []
    for overrides_file in sorted(sweep_dir.rglob(".hydra/overrides.yaml"), key=_natural):
        run_dir = overrides_file.parent.parent
        overrides = {}
        for item in OmegaConf.to_container(OmegaConf.load(overrides_file)):
            key, _, value = str(item).partition("=")
            overrides[key] = value
        metrics_file = run_dir / "metrics.json"
        metrics = None
        if metrics_file.is_file():
            metrics = {k: v for k, v in json.loads(metrics_file.read_text()).items() if isinstance(v, (int, float))}
        runs.append({"dir": str(run_dir.relative_to(sweep_dir)) or ".", "overrides": overrides, "metrics": metrics,
                     "status": "ok" if metrics is not None else "no metrics.json"})
    if not runs:
        raise ValueError(f"no runs under {str(sweep_dir)!r} (no .hydra/overrides.yaml found)")
    return runs


def table(runs: list[dict], metrics: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of text: run dir, the overrides that differ between runs, status, ``metrics``."""
    keys = list(dict.fromkeys(k for r in runs for k in r["overrides"]))
    varying = [k for k in keys if len({r["overrides"].get(k) for r in runs}) > 1] or keys
    if metrics is None:
        present = {k for r in runs if r["metrics"] for k in r["metrics"]}
        metrics = [m for m in DEFAULT_METRICS if m in present]
    header = ["run", *varying, "status", *metrics]
    rows = []
    for r in runs:
        values = r["metrics"] or {}
        cells = [f"{values[m]:.4g}" if m in values else "" for m in metrics]
        rows.append([r["dir"], *(r["overrides"].get(k, "") for k in varying), r["status"], *cells])
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def key_value_argv(argv: list[str]) -> list[str]:
    """The older form -> ``key=value``: ``SWEEP_DIR`` -> ``dir=SWEEP_DIR``, ``--csv F`` / ``--csv=F`` -> ``csv=F``."""
    keys = {f.name for f in dataclasses.fields(GatherArgs)}
    out, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg.startswith("--") and arg[2:].partition("=")[0] in keys - {"dir"}:
            key, sep, value = arg[2:].partition("=")
            out.append(f"{key}={value if sep else (rest.pop(0) if rest else '')}")
        elif "=" not in arg and not arg.startswith("-"):
            out.append(f"dir={arg}")  # a directory name holding "=" needs dir=
        else:
            out.append(arg)
    return out


def run(args: GatherArgs) -> tuple[list[str], list[list[str]]]:
    """Print the table of the sweep ``args.dir`` (and write ``args.csv``); returns (header, rows)."""
    runs = collect(args.dir)
    header, rows = table(runs, args.metrics.split(",") if args.metrics else None)
    print(markdown(header, rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([header, *rows])
    return header, rows


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0, 2 for bad arguments or an empty sweep, 1 for an OSError)."""
    argv = sys.argv[1:] if argv is None else argv
    return cli.main(lambda a: cli.parse(GatherArgs, key_value_argv(a)), run, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
