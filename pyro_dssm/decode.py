"""Segment new sequences with a trained model.

    python -m pyro_dssm.decode checkpoint=PATH input=PATH output=PATH [plot=PATH.png] [plot_states=viterbi|guide]

``checkpoint`` is a ``.pt`` file or a run directory (its ``checkpoints/best.pt``,
else ``last.pt``). ``input`` is read like the training data: a CSV with the
column names stored in the checkpoint's config, or an NPZ (either layout, see
:func:`pyro_dssm.data.files.read_npz`), and goes through the stored features and
training-split standardisation. ``output`` gets one row per input time step:
sequence id, time, the guide's state (greedy, noise-free), the Viterbi state
under the learned HMM and the exact posterior marginals p(c_t = k | X)
(``p_0 .. p_{K-1}``), plus the true label when the input has one; CSV or NPZ by
its extension. ``plot`` draws each sequence with its decoded states as coloured
bands (and the labels as a second band). A bad argument, input file or
checkpoint prints one line on stderr and exits with status 2, before anything
is written; outputs are written atomically, so an existing ``output`` is either
left as it was or replaced whole. ``HYDRA_FULL_ERROR=1`` shows the traceback.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from pyro_dssm.model import hmm
from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.data.files import FileDataConfig, Sequences, check_input_file, pad_sequences, read_csv, read_npz
from pyro_dssm.data.features import Preprocessing
from pyro_dssm.evaluation.metrics import clustering_scores
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.io.outputs import atomic_write, check_writable_dir

log = logging.getLogger(__name__)

KEYS = ("checkpoint", "input", "output", "plot", "plot_states")
PLOT_MAX = 8  # sequences drawn in one plot
PLOT_FORMATS = (".png", ".pdf", ".svg")


@dataclasses.dataclass
class Decoded:
    """States of one sequence of length T: ``guide`` (T,) and ``viterbi`` (T,) int64, ``probs`` (T, K)."""

    guide: np.ndarray
    viterbi: np.ndarray
    probs: np.ndarray


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory -> ``checkpoints/best.pt`` (else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / "checkpoints" / name).is_file():
                return path / "checkpoints" / name
        raise ValueError(f"checkpoint={str(path)!r}: a directory without checkpoints/best.pt or last.pt")
    return path


def load_model(path: str | Path) -> tuple[DSSM, dict]:
    """The trained DSSM (on CPU, eval mode) and the checkpoint's payload."""
    path = find_checkpoint(path)
    payload = load_checkpoint(path)
    try:
        model = DSSM(ModelConfig(**payload["model_config"]))
        model.load_state_dict(payload["model"])
    except (TypeError, RuntimeError, ValueError) as exc:  # another version's config, or weights of another shape
        lines = [line.strip() for line in str(exc).strip().splitlines()]
        detail = next((line for line in lines[1:] if line), lines[0])[:300]  # torch's first line is a title
        raise ValueError(f"checkpoint {str(path)!r}: its weights do not fit its model_config "
                         f"{payload['model_config']} ({detail})") from None
    return model.eval(), payload


def read_input(path: str | Path, payload: dict) -> tuple[Sequences, dict]:
    """Read ``path`` (.csv or .npz) as the checkpoint's data source did; returns the sequences and the data config."""
    data_cfg = dict(payload.get("config", {}).get("data", {}))
    suffix = Path(path).suffix.lower()
    if suffix not in (".csv", ".npz"):
        raise ValueError(f"input={str(path)!r} must end in .csv or .npz")
    check_input_file(path, "input")
    # label classes keep their training codes when the format is the training one
    names = payload.get("label_names") if suffix == f".{data_cfg.get('name')}" else None
    if suffix == ".npz":
        return read_npz(path, label_names=names, key="input"), data_cfg
    if data_cfg.get("name") != "csv":
        raise ValueError(f"input={str(path)!r} is a CSV, but the model was trained on data={data_cfg.get('name')!r}, "
                         "so its column names are unknown; give an .npz input")
    fields = {f.name for f in dataclasses.fields(FileDataConfig)}
    cfg = FileDataConfig(**{k: v for k, v in data_cfg.items() if k in fields})
    # the columns the model was trained on, also when data.feature_columns was null (inferred)
    columns = payload["preprocessing"]["feature_names"] if "preprocessing" in payload else cfg.feature_columns
    return read_csv(path, cfg.id_column, cfg.time_column, columns, cfg.label_column, names,
                    labels_optional=True, key="input"), data_cfg


def preprocessing_of(payload: dict, n_columns: int) -> Preprocessing:
    """The stored feature transform; identity for a model trained on synthetic data."""
    if "preprocessing" in payload:
        return Preprocessing.from_state_dict(payload["preprocessing"])
    return Preprocessing(["raw"], np.zeros(n_columns), np.ones(n_columns), [f"x{j}" for j in range(n_columns)])


@torch.no_grad()
def decode(model: DSSM, xs: list[np.ndarray], batch_size: int = 64) -> list[Decoded]:
    """Guide states, Viterbi path and exact posterior marginals of each (T_i, D) sequence (model inputs)."""
    log_init, log_trans, means = model.hmm_parameters()
    out = []
    for start in range(0, len(xs), batch_size):
        batch = pad_sequences(xs[start: start + batch_size])
        x, mask = batch.x, batch.mask
        guide = model.guide_logits(x, mask).argmax(-1)
        ll = hmm.gaussian_log_likelihood(x, means, model.config.noise_std)
        path, _ = hmm.viterbi(log_init, log_trans, ll, mask)
        probs = hmm.posterior_marginals(log_init, log_trans, ll, mask)
        for i, n in enumerate(batch.lengths.tolist()):
            out.append(Decoded(guide[i, :n].numpy(), path[i, :n].numpy(), probs[i, :n].double().numpy()))
    return out


def write_output(path: str | Path, seqs: Sequences, decoded: list[Decoded], id_column: str, time_column: str,
                 label_column: str) -> int:
    """One row per time step to ``path`` (.csv or .npz); returns the number of rows."""
    K = decoded[0].probs.shape[-1]
    ids = np.concatenate([np.full(len(d.guide), name) for name, d in zip(seqs.names, decoded)])
    times = np.concatenate(seqs.times)
    guide = np.concatenate([d.guide for d in decoded])
    viterbi = np.concatenate([d.viterbi for d in decoded])
    probs = np.concatenate([d.probs for d in decoded])
    labels = None
    if seqs.labels is not None:
        names = np.array(list(seqs.label_names) + [""])  # code -1 -> ""
        labels = np.concatenate([names[z] for z in seqs.labels])
    path = Path(path)
    if path.suffix.lower() == ".npz":
        arrays = {"sequence": ids, "time": times, "guide_state": guide, "viterbi_state": viterbi, "probs": probs}
        if labels is not None:
            arrays["label"] = labels
        with atomic_write(path) as f:
            np.savez_compressed(f, **arrays)
        return len(ids)
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f)
        header = [id_column, time_column, "guide_state", "viterbi_state"] + [f"p_{k}" for k in range(K)]
        writer.writerow(header + ([label_column] if labels is not None else []))
        for r in range(len(ids)):
            row = [ids[r], times[r], int(guide[r]), int(viterbi[r])] + [f"{p:.6g}" for p in probs[r]]
            writer.writerow(row + ([labels[r]] if labels is not None else []))
    return len(ids)


def plot_states(path: str | Path, seqs: Sequences, decoded: list[Decoded], n_states: int, which: str) -> None:
    """PNG of the first :data:`PLOT_MAX` sequences: input columns, decoded states (matched to the labels, if
    any, over all sequences) and labels as bands."""
    from pyro_dssm.io.figures import class_colours, relabel, segmentation_figure
    from pyro_dssm.evaluation.metrics import confusion_matrix

    pred = [getattr(d, which) for d in decoded]
    n_classes = len(seqs.label_names)
    if seqs.labels is not None:
        true_all, pred_all = np.concatenate(seqs.labels), np.concatenate(pred)
        keep = true_all >= 0
        cm = confusion_matrix(true_all[keep], pred_all[keep], max(n_classes, 1), n_states)
        colours = class_colours(cm)
        pred = [relabel(p, colours) for p in pred]
    rows = [(f"{name} ({which} states)", x, p, None if seqs.labels is None else z)
            for name, x, p, z in zip(seqs.names, seqs.x, pred, seqs.labels or [None] * len(seqs))][:PLOT_MAX]
    if len(seqs) > PLOT_MAX:
        log.info("plotting the first %d of %d sequences", PLOT_MAX, len(seqs))
    fig = segmentation_figure(rows, n_states, n_classes, seqs.label_names or None, seqs.feature_names)
    with atomic_write(path) as f:
        fig.savefig(f, dpi=100, format=Path(path).suffix[1:].lower())


def parse_args(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments -> dict; ValueError naming a bad or missing one."""
    args = {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in KEYS:
            raise ValueError(f"expected arguments key=value with key in {KEYS}, got {arg!r}")
        args[key] = value
    missing = [k for k in ("checkpoint", "input", "output") if k not in args]
    if missing:
        raise ValueError(f"missing {', '.join(f'{k}=PATH' for k in missing)}")
    if Path(args["output"]).suffix.lower() not in (".csv", ".npz"):
        raise ValueError(f"output={args['output']!r} must end in .csv or .npz")
    if "plot" in args and Path(args["plot"]).suffix.lower() not in PLOT_FORMATS:
        raise ValueError(f"plot={args['plot']!r} must end in one of {PLOT_FORMATS}")
    if args.get("plot_states", "viterbi") not in ("viterbi", "guide"):
        raise ValueError(f"plot_states must be viterbi or guide, got {args['plot_states']!r}")
    for key in ("output", "plot"):
        if key not in args:
            continue
        if Path(args[key]).is_dir():
            raise ValueError(f"{key}={args[key]!r} is a directory; expected a file name")
        if Path(args[key]).resolve() == Path(args["input"]).resolve():
            raise ValueError(f"{key}={args[key]!r} is the input file; choose another name")
        try:
            check_writable_dir(Path(args[key]).absolute().parent, "directory")
        except ValueError as exc:
            raise ValueError(f"{key}={args[key]!r} cannot be written: {exc}") from None
    return args


def run(args: dict[str, str]) -> dict[str, float]:
    """Decode ``args['input']`` into ``args['output']`` (and ``args['plot']``); returns the scores when labelled."""
    model, payload = load_model(args["checkpoint"])
    seqs, data_cfg = read_input(args["input"], payload)
    expected = (payload["preprocessing"]["feature_names"] if "preprocessing" in payload else
                [f"x{j}" for j in range(model.config.obs_dim)])  # synthetic data: the features are the columns
    if seqs.x[0].shape[-1] != len(expected):
        raise ValueError(f"input={args['input']!r} has D={seqs.x[0].shape[-1]} feature columns "
                         f"{seqs.feature_names}; the checkpoint expects D={len(expected)} ({expected})")
    prep = preprocessing_of(payload, seqs.x[0].shape[-1])
    xs = [prep.apply(x) for x in seqs.x]
    # checked: from here on decoding writes
    decoded = decode(model, xs)
    for key in ("output", "plot"):
        if key in args:
            Path(args[key]).parent.mkdir(parents=True, exist_ok=True)
    is_csv = Path(args["input"]).suffix.lower() == ".csv"  # then the columns are named as in the input
    n_rows = write_output(args["output"], seqs, decoded, data_cfg.get("id_column") if is_csv else "sequence",
                          (data_cfg.get("time_column") if is_csv else None) or "t",
                          (data_cfg.get("label_column") if is_csv else None) or "label")
    print(f"decoded {len(seqs)} sequences, {n_rows} steps, K={model.n_states} -> {args['output']}")
    scores = {}
    true = None if seqs.labels is None else np.concatenate(seqs.labels)
    if true is not None and (true >= 0).any():
        keep = true >= 0
        for which in ("guide", "viterbi"):
            pred = np.concatenate([getattr(d, which) for d in decoded])
            scores.update(clustering_scores(true[keep], pred[keep], model.n_states, prefix=f"{which}_"))
        print("labels: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    if "plot" in args:
        plot_states(args["plot"], seqs, decoded, model.n_states, args.get("plot_states", "viterbi"))
        print(f"plot -> {args['plot']}")
    return scores


def main(argv: list[str] | None = None) -> None:
    # stderr is kept for the one error line; progress goes to stdout
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.captureWarnings(True)
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except (ValueError, TypeError, OSError) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(" ".join(f"error: {exc}".split("\n")), file=sys.stderr)
        sys.exit(1 if isinstance(exc, OSError) else 2)


if __name__ == "__main__":
    main()
