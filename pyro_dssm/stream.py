r"""Streaming decode: the states of a live CSV, written row by row as its rows arrive.

    python -m pyro_dssm.decode checkpoint=RUN input=- output=-|PATH.csv [lag=L] [idle=S]
    python -m pyro_dssm.decode checkpoint=RUN input=PATH follow=true output=-|PATH.csv [lag=L] [poll=0.2] [idle=S]
    tail -f log.csv | python -m pyro_dssm.decode checkpoint=runs/x input=- output=- lag=5

``pyro_dssm.decode`` streams when ``input=-`` (standard input) or ``follow=true`` (a file still being written, read
as ``tail -f`` does: every ``poll`` seconds it looks for new complete lines). The rows before a bad row are written.

**Input**: a CSV as the model was trained on (``data=csv``: the checkpoint's ``payload['config']['data']`` and
``payload['preprocessing']['feature_names']``): a header line, then one row per time step with the id column, the time
column if training had one, the feature columns and the input columns of a model trained with
``data.input_columns`` (each a finite number), one record per line (other columns are ignored). A model trained
with known states reads their column where the input has one: a class there clamps the filter (empty: not known).
Sequences may be interleaved; each one's rows must come in time order. An empty or ``NaN`` cell is missing (passed
on). A line counts once its newline has arrived (a last line without one: when standard input ends; dropped with a
warning when a followed file idles). The lines that have arrived (up to :data:`pyro_dssm.io.lines.READ_BYTES`) are
one batch, filtered with one :func:`~pyro_dssm.online.filter_chunk` call per sequence: chunks of any sizes give one
pass.

**Output**: one CSV row per input row: id, time (without a time column: the step 0, 1, ... of its sequence),
``filter_state`` (the most probable state; its class with known states) and ``p_0 .. p_{K-1}``, the filtered
marginals :math:`p(c_t = k \mid x_{1:t})`; with ``lag=L`` :math:`p(c_t = k \mid x_{1:t+L})`: row t comes with row t + L,
the last L rows at the end (:func:`pyro_dssm.online.flush`), in the order of the input rows that complete them.
``output=-`` is standard output (logs go to stderr); a file is written line by line, flushed after each batch.

**The end**: standard input's end, ``idle`` seconds without new data (default: never), Ctrl-C or SIGTERM flush the
lagged rows, exit status 0. A bad argument, header or row, a model not trained on a CSV, or features that read later
rows (``model=motion``'s windows, :func:`pyro_dssm.online.causal_reach`) are one line on stderr, exit status 2.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import logging
import math
import os
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from pyro_dssm import online
from pyro_dssm.config import FileDataConfig, settings
from pyro_dssm.data.readers import DELIMITERS
from pyro_dssm.fitted import input_preprocessing_of, load_model, preprocessing_of
from pyro_dssm.inference.threads import intra_op_threads
from pyro_dssm.io.lines import STDIO, LineReader, stop_on_signals
from pyro_dssm.model.known import state_names

log = logging.getLogger(__name__)


def is_streaming(args) -> bool:
    """Whether the decode arguments ask for streaming: ``input=-`` or ``follow=true``."""
    return args.input == STDIO or args.follow


def check_args(args) -> bool:
    """:func:`is_streaming`, after checking :class:`pyro_dssm.decode.DecodeArgs`' streaming options: ValueError naming
    ``lag``, ``idle`` or ``output=-`` without streaming, ``follow=true`` with ``input=-`` or no file, ``lag`` < 0,
    ``poll`` or ``idle`` <= 0, a ``plot``, or an output that is neither a ``.csv`` file nor ``-``."""
    if not is_streaming(args):
        for key, given in (("lag", args.lag != 0), ("idle", args.idle is not None), ("output", args.output == STDIO)):
            if given:
                raise ValueError(f"{key}={getattr(args, key)!r} is for streaming decoding (input=- or follow=true); "
                                 f"input={args.input!r} is decoded whole")
        return False
    if args.follow and args.input == STDIO:
        raise ValueError("follow=true follows a growing file; input=- (standard input) is read as it comes already")
    online.check_lag(args.lag)
    for key in ("poll", "idle"):
        value = getattr(args, key)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{key} must be a number of seconds > 0, got {value!r}")
    if args.plot is not None:
        raise ValueError(f"plot={args.plot!r} draws whole sequences; it does not stream (input=- or follow=true)")
    if args.follow and not Path(args.input).is_file():
        what = "is a directory" if Path(args.input).is_dir() else "does not exist"
        raise ValueError(f"input={args.input!r} {what}; follow=true needs a file (it may be empty)")
    if args.output != STDIO and Path(args.output).suffix.lower() != ".csv":
        raise ValueError(f"output={args.output!r}: streaming writes CSV rows as they come; give a .csv file "
                         "or - (standard output)")
    return True  # decode.parse_args checks that an output file can be written


# --- rows -> states ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Header:
    """Where the columns a model reads are in the input's rows."""

    delimiter: str
    n_fields: int
    id: int
    time: int | None
    features: list[int]  # the D0 columns of the model, in its order
    time_name: str | None = None
    inputs: tuple[int, ...] = ()  # the U columns of its exogenous inputs (data.input_columns), in its order
    known: int | None = None  # the known-states column (data.known_states_column) of a model trained with one


def parse_header(line: str, cfg: FileDataConfig, feature_names: list[str], source: str,
                 input_names: list[str] = (), known: bool = False) -> Header:
    """The header line -> :class:`Header`; ValueError naming a column the model needs that the header lacks
    (``input_names``: the exogenous inputs of a model trained with ``data.input_columns``). ``known``: the model
    was trained with known states; their column is read where the input has it (optional, as in whole decoding)."""
    delimiter = max(DELIMITERS, key=line.count)  # as pyro_dssm.data.readers reads a file
    columns = next(csv.reader([line], delimiter=delimiter))
    for what, name in (("id_column", cfg.id_column), ("time_column", cfg.time_column)):
        if name is not None and name not in columns:
            raise ValueError(f"data.{what}={name!r} of the model is not a column of input={source!r} "
                             f"(header: {columns})")
    for what, names in (("feature column(s)", feature_names), ("input column(s)", input_names)):
        missing = [c for c in names if c not in columns]
        if missing:
            setting = " (data.input_columns)" if names is input_names else ""
            raise ValueError(f"input={source!r} lacks the {what} {missing}{setting} the model reads; header: {columns}")
    return Header(delimiter, len(columns), columns.index(cfg.id_column),
                  None if cfg.time_column is None else columns.index(cfg.time_column),
                  [columns.index(c) for c in feature_names], cfg.time_column,
                  tuple(columns.index(c) for c in input_names),
                  columns.index(cfg.known_states_column) if known and cfg.known_states_column in columns else None)


@dataclasses.dataclass
class Row:
    """One input row: its sequence id, time (as written), (D0,) features in the user's units (NaN = missing) and
    (U,) exogenous inputs (empty for a model without), and the code of its known state (-1: none given)."""

    id: str
    time: str
    x: np.ndarray
    u: np.ndarray
    known: int = -1


@dataclasses.dataclass
class Track:
    """One sequence of the stream: what reading and filtering it need of its past."""

    n_read: int = 0
    last_time: str | None = None  # as written
    carry: online.FilterState | None = None
    n_filtered: int = 0
    waiting: collections.deque = dataclasses.field(default_factory=collections.deque)  # times whose row is to come


def _time_key(cell: str) -> tuple:
    """Times compare as numbers where both are, else as text (numbers first)."""
    try:
        return 0, float(cell), ""
    except ValueError:
        return 1, 0.0, cell


class StreamDecoder:
    """Filters the rows of interleaved sequences, one :class:`~pyro_dssm.online.FilterState` per sequence id.

    ``model``, ``prep``: the trained DSSM and its (causal) feature transform; ``lag``: L >= 0 (module docstring);
    ``input_prep``: the standardisation of its exogenous inputs (:func:`pyro_dssm.fitted.input_preprocessing_of`),
    None for a model without; ``known_names``: the classes of a model trained with known states (None: without).
    """

    def __init__(self, model, prep, header: Header, lag: int, source: str, input_prep=None, known_names=None):
        self.model, self.prep, self.header, self.lag, self.source = model, prep, header, lag, source
        self.input_prep, self.known_names = input_prep, known_names
        self.tracks: dict[str, Track] = {}

    def parse(self, lines: list[str], first_line: int) -> tuple[list[Row], ValueError | None]:
        """The rows of ``lines`` (numbered from ``first_line``; blank lines skipped) up to the first bad one, and
        the ValueError naming that one (None when all are good)."""
        rows = []
        for number, line in enumerate(lines, first_line):
            if line.strip():
                try:
                    rows.append(self._row(line, number))
                except ValueError as exc:
                    return rows, exc
        return rows, None

    def _row(self, line: str, number: int) -> Row:
        """One line -> :class:`Row`; ValueError naming its line when it is malformed or goes back in time."""
        h, where = self.header, f"input={self.source!r} line {number}"
        try:
            cells = next(csv.reader([line], delimiter=h.delimiter))
        except csv.Error as exc:
            raise ValueError(f"{where}: {exc}") from None
        if len(cells) != h.n_fields:
            raise ValueError(f"{where}: {len(cells)} fields, but the header has {h.n_fields}")
        track = self.tracks.setdefault(cells[h.id], Track())
        time_ = str(track.n_read) if h.time is None else cells[h.time]
        if h.time is not None:
            if track.last_time is not None and _time_key(time_) <= _time_key(track.last_time):
                raise ValueError(f"{where}: sequence {cells[h.id]!r} goes back in time, {h.time_name}={time_!r} "
                                 f"after {track.last_time!r}; rows must come in time order per sequence")
            track.last_time = time_
        x = self._numbers(cells, h.features, self.prep.feature_names, where, missing=True)
        u = self._numbers(cells, h.inputs, self.input_prep.feature_names if self.input_prep else [], where,
                          missing=False)
        track.n_read += 1
        return Row(cells[h.id], time_, x, u, -1 if h.known is None else self._known(cells[h.known].strip(), where))

    def _known(self, cell: str, where: str) -> int:
        """A known-state cell -> its class's code (-1 when empty); ValueError naming a class the model lacks."""
        if not cell:
            return -1
        if cell not in self.known_names:
            raise ValueError(f"{where}: the known state {cell!r} is not a class of the training run {self.known_names}")
        return self.known_names.index(cell)

    @staticmethod
    def _numbers(cells: list[str], columns, names: list[str], where: str, missing: bool) -> np.ndarray:
        """The cells of ``columns`` as numbers; an empty or NaN cell is NaN where ``missing`` (features), an error
        otherwise (inputs: conditioned on, not modelled); ValueError naming the column for text or infinity."""
        out = np.empty(len(columns))
        for j, col in enumerate(columns):
            cell = cells[col].strip()
            try:
                value = float(cell) if cell else math.nan  # empty or NaN: a missing value
            except ValueError:
                blank = " (or be empty)" if missing else ""
                raise ValueError(f"{where}: column {names[j]!r} must hold a number{blank}, got {cell!r}") from None
            if math.isinf(value) or (math.isnan(value) and not missing):
                why = "" if missing else " (an input is conditioned on, not modelled: it cannot be missing)"
                raise ValueError(f"{where}: column {names[j]!r} must hold a finite number{why}, got {cell!r}")
            out[j] = value
        return out

    def step(self, rows: list[Row]) -> list[tuple[str, str, np.ndarray]]:
        """Filter ``rows`` (one chunk per sequence); returns (id, time, probs (K,)) of the rows answered now."""
        groups: dict[str, list[int]] = {}
        for j, row in enumerate(rows):
            groups.setdefault(row.id, []).append(j)
        out = []  # (index of the row that completes it, id, time, probs)
        for name, idx in groups.items():
            track = self.tracks[name]
            x = np.stack([rows[j].x for j in idx])  # (T, D0)
            u = np.stack([rows[j].u for j in idx]) if self.input_prep is not None else None  # (T, U)
            known = np.array([rows[j].known for j in idx]) if self.header.known is not None else None  # (T,)
            probs, track.carry = online.filter_chunk(self.model, self.prep, x, track.carry, self.lag, inputs=u,
                                                     input_prep=self.input_prep, known=known)
            track.waiting.extend(rows[j].time for j in idx)
            first = max(0, self.lag - track.n_filtered)  # chunk rows t <= L answer no step (module docstring)
            track.n_filtered += len(idx)
            out += [(idx[i], name, track.waiting.popleft(), probs[i]) for i in range(first, len(idx))]
        out.sort(key=lambda item: item[0])
        return [item[1:] for item in out]

    def finish(self) -> list[tuple[str, str, np.ndarray]]:
        """The rows still waiting for their lag at the stream's end, sequence by sequence (first seen first)."""
        out = []
        for name, track in self.tracks.items():
            probs = online.flush(self.model, track.carry)  # (len(track.waiting), K)
            out += [(name, track.waiting.popleft(), p) for p in probs]
        return out


# --- the command ------------------------------------------------------------------------------------------------------


def csv_settings(payload: dict, source: str) -> FileDataConfig:
    """The checkpoint's ``data=csv`` settings; ValueError when it was trained on other data."""
    data_cfg = dict(payload.get("config", {}).get("data", {}))
    if data_cfg.get("name") != "csv" or "preprocessing" not in payload:
        raise ValueError(f"input={source!r} streams CSV rows, but the model was trained on "
                         f"data={data_cfg.get('name')!r}, so its column names are unknown; decode an .npz file whole")
    return settings(FileDataConfig, data_cfg, "data")


def write_rows(out: TextIO, rows: list[tuple[str, str, np.ndarray]], names: list[str] | None = None) -> None:
    """CSV rows id, time, filter_state (its name with known states: ``names``), p_0 .. p_{K-1}, then flushed."""
    csv.writer(out, lineterminator="\n").writerows(
        [name, t, int(np.argmax(p)) if names is None else names[int(np.argmax(p))]] + [f"{v:.6g}" for v in p]
        for name, t, p in rows)
    out.flush()


def run(args) -> dict[str, float]:
    """Stream ``args.input`` into ``args.output`` (:class:`pyro_dssm.decode.DecodeArgs`, checked by
    :func:`check_args`); returns {} (there are no scores without the whole sequences)."""
    if args.output == STDIO:  # standard output holds the rows only: the logs cli.main sends there go to stderr
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
                handler.setStream(sys.stderr)
    model, payload = load_model(args.checkpoint)
    cfg = csv_settings(payload, args.input)
    prep = preprocessing_of(payload, model.config.obs_dim)
    online.causal_reach(prep)  # ValueError naming the features that read later rows
    input_prep = input_preprocessing_of(payload)  # a model with exogenous inputs reads them from their columns
    reader = LineReader(args.input, args.follow, args.poll, args.idle)
    decoder, out, n_rows = None, None, 0
    names = state_names(model.n_states, payload.get("known_names"))  # known states: their classes' names
    try:
        with stop_on_signals(reader), intra_op_threads(1):  # chunks are small: one thread is fastest
            for lines in reader.batches():
                first_line = reader.line_no - len(lines) + 1
                if decoder is None:  # the first line that is not blank is the header
                    k = next((i for i, line in enumerate(lines) if line.strip()), None)
                    if k is None:
                        continue
                    header = parse_header(lines[k], cfg, prep.feature_names, args.input,
                                          input_prep.feature_names if input_prep is not None else [],
                                          known="known_names" in payload)
                    decoder = StreamDecoder(model, prep, header, args.lag, args.input, input_prep,
                                            payload.get("known_names"))
                    out = _open_output(args.output, model.n_states, cfg)
                    lines, first_line = lines[k + 1:], first_line + k + 1
                rows, error = decoder.parse(lines, first_line)
                if rows:
                    answered = decoder.step(rows)
                    write_rows(out, answered, names)
                    n_rows += len(answered)
                if error is not None:
                    raise error
            if decoder is None:
                raise ValueError(f"input={args.input!r} ended without a header line")
            answered = decoder.finish()
            write_rows(out, answered, names)
            n_rows += len(answered)
    except BrokenPipeError:  # the reader of standard output left (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return {}
    finally:
        if out is not None and out is not sys.stdout:
            out.close()
    log.info("streamed %d sequences, %d rows, K=%d%s -> %s", len(decoder.tracks), n_rows, model.n_states,
             f", lag={args.lag}" if args.lag else "", args.output)
    return {}


def _open_output(path: str, K: int, cfg: FileDataConfig) -> TextIO:
    """Standard output or a new file (replacing one of that name), its header written."""
    if path != STDIO:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    out = sys.stdout if path == STDIO else open(path, "w", encoding="utf-8")
    header = [cfg.id_column, cfg.time_column or "t", "filter_state"] + [f"p_{k}" for k in range(K)]
    csv.writer(out, lineterminator="\n").writerow(header)
    out.flush()
    return out
