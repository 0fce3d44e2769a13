"""Segment new sequences with a trained model.

    python -m pyro_dssm.decode checkpoint=PATH input=PATH output=PATH [plot=PATH.png] [plot_states=viterbi|guide]
    python -m pyro_dssm.decode checkpoint=PATH input=-|PATH output=-|PATH.csv [follow=true] [lag=L] [poll=S] [idle=S]

``checkpoint`` is a ``.pt`` file or a run directory (its ``checkpoints/best.pt``,
else ``last.pt``). ``input`` is read like the training data: a CSV with the
column names stored in the checkpoint's config, or an NPZ (either layout, see
:func:`pyro_dssm.data.npz.read_npz`), and goes through the stored features and
training-split standardisation. ``output`` gets one row per input time step:
sequence id, time, the guide's state (greedy, noise-free), the Viterbi state
under the learned HMM and the exact posterior marginals p(c_t = k | X)
(``p_0 .. p_{K-1}``), plus the true label when the input has one; CSV or NPZ by
its extension. ``plot`` draws each sequence with its decoded states as coloured
bands (and the labels as a second band). A bad argument, input file or
checkpoint prints one line on stderr and exits with status 2, before anything
is written; outputs are written atomically, so an existing ``output`` is either
left as it was or replaced whole. ``HYDRA_FULL_ERROR=1`` shows the traceback.

The second form streams (:mod:`pyro_dssm.stream`): ``input=-`` reads CSV rows from standard input, ``follow=true``
a file still being written (``tail -f``), and each row's filtered state goes out as it arrives, ``lag`` rows
behind with ``lag=L`` (fixed-lag smoothing), to standard output (``output=-``) or a CSV file written line by
line (not atomically). For example::

    tail -f log.csv | python -m pyro_dssm.decode checkpoint=runs/x input=- output=- lag=5

The arguments are the fields of :class:`DecodeArgs`, parsed by
:func:`pyro_dssm.cli.parse` like ``pyro_dssm.gather``'s: an unknown key, a
missing required one or a value of the wrong type is such a one-line error.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import MISSING

from pyro_dssm import cli, stream
from pyro_dssm.config import settings
from pyro_dssm.config import FileDataConfig
from pyro_dssm.data.files import append_inputs, append_known
from pyro_dssm.model.known import state_names
from pyro_dssm.data.npz import read_npz
from pyro_dssm.data.readers import Sequences, check_input_file, read_csv
from pyro_dssm.evaluation.metrics import clustering_scores
# loading a checkpoint and exact decoding are shared with the Python API (pyro_dssm.fitted)
from pyro_dssm.fitted import Decoded, decode, input_preprocessing_of, load_model, preprocessing_of
from pyro_dssm.inference.threads import choose_threads, intra_op_threads, model_width
from pyro_dssm.io.outputs import atomic_write, check_writable_dir

log = logging.getLogger(__name__)

PLOT_MAX = 8  # sequences drawn in one plot
PLOT_FORMATS = (".png", ".pdf", ".svg")
PLOT_STATES = ("viterbi", "guide")


@dataclasses.dataclass
class DecodeArgs:
    """The command line (module docstring); ``MISSING`` fields are required."""

    checkpoint: str = MISSING  # a .pt file, or a run directory (its best.pt)
    input: str = MISSING  # .csv or .npz; - (standard input) streams
    output: str = MISSING  # .csv or .npz; - (standard output) when streaming
    lag: int = 0  # streaming: fixed-lag smoothing, each row's states from the L rows after it too
    follow: bool = False  # streaming: input is a file still being written (tail -f)
    poll: float = 0.2  # follow: seconds between looks for new lines
    idle: Optional[float] = None  # streaming: end after this many seconds without new data (None: never)
    plot: Optional[str] = None  # .png, .pdf or .svg
    plot_states: str = "viterbi"  # the states the plot shows: viterbi or guide


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
    cfg = settings(FileDataConfig, data_cfg, "data")  # the data group of a csv run is exactly FileDataConfig
    # the columns the model was trained on, also when data.feature_columns was null (inferred)
    columns = payload["preprocessing"]["feature_names"] if "preprocessing" in payload else cfg.feature_columns
    inputs = payload.get("input_preprocessing", {}).get("feature_names")  # data.input_columns of the training run
    seqs = read_csv(path, cfg.id_column, cfg.time_column, columns, cfg.label_column, names, labels_optional=True,
                    key="input", known_column=cfg.known_states_column, known_names=payload.get("known_names"),
                    known_optional=True, input_columns=inputs)
    check_known_classes(seqs, payload.get("known_names"), str(path))
    return seqs, data_cfg


def check_known_classes(seqs: Sequences, known_names: list[str] | None, path: str) -> None:
    """ValueError naming the first known state of ``seqs`` that is not a class of the training run."""
    if seqs.known is None or known_names is None:
        return
    for name, codes in zip(seqs.names, seqs.known):
        bad = np.flatnonzero(codes >= len(known_names))
        if len(bad):
            raise ValueError(f"input={path!r}: sequence {name!r} step {int(bad[0])} has the known state "
                             f"{seqs.known_names[codes[bad[0]]]!r}, not a class of the training run {known_names}")



def write_output(path: str | Path, seqs: Sequences, decoded: list[Decoded], id_column: str, time_column: str,
                 label_column: str, names: list[str] | None = None) -> int:
    """One row per time step to ``path`` (.csv or .npz); returns the number of rows. ``names``: what to write for
    each state (:func:`state_names`), None for their numbers."""
    K = decoded[0].probs.shape[-1]
    ids = np.concatenate([np.full(len(d.guide), name) for name, d in zip(seqs.names, decoded)])
    times = np.concatenate(seqs.times)
    guide = np.concatenate([d.guide for d in decoded])
    viterbi = np.concatenate([d.viterbi for d in decoded])
    if names is not None:
        guide, viterbi = np.array(names)[guide], np.array(names)[viterbi]
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
            row = [ids[r], times[r], guide[r], viterbi[r]] + [f"{p:.6g}" for p in probs[r]]
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


def parse_args(argv: list[str]) -> DecodeArgs:
    """``key=value`` arguments -> :class:`DecodeArgs`; ValueError naming a bad or missing one."""
    args = cli.parse(DecodeArgs, argv)
    streaming = stream.check_args(args)  # input=- or follow=true: the streaming options are checked there
    if not streaming and Path(args.output).suffix.lower() not in (".csv", ".npz"):
        raise ValueError(f"output={args.output!r} must end in .csv or .npz")
    if args.plot is not None and Path(args.plot).suffix.lower() not in PLOT_FORMATS:
        raise ValueError(f"plot={args.plot!r} must end in one of {PLOT_FORMATS}")
    if args.plot_states not in PLOT_STATES:
        raise ValueError(f"plot_states must be one of {PLOT_STATES}, got {args.plot_states!r}")
    for key in ("output", "plot"):
        path = getattr(args, key)
        if path is None or path == stream.STDIO:
            continue
        if Path(path).is_dir():
            raise ValueError(f"{key}={path!r} is a directory; expected a file name")
        if Path(path).resolve() == Path(args.input).resolve():
            raise ValueError(f"{key}={path!r} is the input file; choose another name")
        try:
            check_writable_dir(Path(path).absolute().parent, "directory")
        except ValueError as exc:
            raise ValueError(f"{key}={path!r} cannot be written: {exc}") from None
    return args


def run(args: DecodeArgs) -> dict[str, float]:
    """Decode ``args.input`` into ``args.output`` (and ``args.plot``); returns the scores when labelled."""
    if stream.is_streaming(args):
        return stream.run(args)
    model, payload = load_model(args.checkpoint)
    seqs, data_cfg = read_input(args.input, payload)
    expected = (payload["preprocessing"]["feature_names"] if "preprocessing" in payload else
                [f"x{j}" for j in range(model.config.obs_dim)])  # synthetic data: the features are the columns
    if seqs.x[0].shape[-1] != len(expected):
        raise ValueError(f"input={args.input!r} has D={seqs.x[0].shape[-1]} feature columns "
                         f"{seqs.feature_names}; the checkpoint expects D={len(expected)} ({expected})")
    prep = preprocessing_of(payload, seqs.x[0].shape[-1])
    has_known = "known_names" in payload  # the model observes known states: given where the input has them
    in_prep = input_preprocessing_of(payload)  # exogenous inputs: read from their columns, standardised as in training
    xs = [append_known(append_inputs(prep.apply(x), seqs.inputs and seqs.inputs[i], in_prep),
                       seqs.known and seqs.known[i], has_known) for i, x in enumerate(seqs.x)]
    # checked: from here on decoding writes
    with intra_op_threads(choose_threads("auto", next(model.parameters()).device, 64, model_width(model.config))):
        decoded = decode(model, xs)
    for path in (args.output, args.plot):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    is_csv = Path(args.input).suffix.lower() == ".csv"  # then the columns are named as in the input
    n_rows = write_output(args.output, seqs, decoded, data_cfg.get("id_column") if is_csv else "sequence",
                          (data_cfg.get("time_column") if is_csv else None) or "t",
                          (data_cfg.get("label_column") if is_csv else None) or "label",
                          state_names(model.n_states, payload.get("known_names")))
    print(f"decoded {len(seqs)} sequences, {n_rows} steps, K={model.n_states} -> {args.output}")
    scores = {}
    true = None if seqs.labels is None else np.concatenate(seqs.labels)
    if true is not None and (true >= 0).any():
        keep = true >= 0
        for which in ("guide", "viterbi"):
            pred = np.concatenate([getattr(d, which) for d in decoded])
            scores.update(clustering_scores(true[keep], pred[keep], model.n_states, prefix=f"{which}_"))
        print("labels: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
    if args.plot is not None:
        plot_states(args.plot, seqs, decoded, model.n_states, args.plot_states)
        print(f"plot -> {args.plot}")
    return scores


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0, 2 for bad input, 1 for an OSError)."""
    return cli.main(parse_args, run, sys.argv[1:] if argv is None else argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
