"""Reading your own sequences from a long-format CSV, and the :class:`Sequences` every reader returns.

:func:`read_csv` (and :func:`pyro_dssm.data.npz.read_npz`) return :class:`Sequences` (one (T_i, D0) array
per sequence, times, optional labels as integer codes with their names); every malformed input is a
``ValueError`` naming the file, line or sequence. The pipeline that turns them into training data is
:mod:`pyro_dssm.data.files`.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Sequences:
    """Ragged sequences as read from a file.

    Attributes:
        names: one id per sequence.
        x: (T_i, D) float64 arrays.
        times: (T_i,) arrays, the time column (numbers or strings) or 0..T_i-1.
        labels: (T_i,) int64 class codes (-1 = unlabelled step), or None when the file has no labels.
        label_names: class code -> original label, as text.
        feature_names: the D column names.
        delimiter: the field separator of a CSV file (``,`` ``;`` or tab), None for other sources.
        known: (T_i,) int64 codes of the known states (-1 = not known), or None without a known-states column.
        known_names: known-state code -> its class, as text (state k of the model is class k).
        inputs: (T_i, U) float64 exogenous inputs (``data.input_columns``), or None without them.
        input_names: the U input column names, or None.
    """

    names: list[str]
    x: list[np.ndarray]
    times: list[np.ndarray]
    labels: list[np.ndarray] | None
    label_names: list[str]
    feature_names: list[str]
    delimiter: str | None = None
    known: list[np.ndarray] | None = None
    known_names: list[str] | None = None
    inputs: list[np.ndarray] | None = None
    input_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.x)


def label_codes(raw: list[list[str]], known: list[str] | None) -> tuple[list[np.ndarray], list[str]]:
    """Map text labels (empty = unlabelled) to codes; new classes extend ``known`` in sorted order."""
    names = list(known or [])
    new = {v for seq in raw for v in seq if v != "" and v not in names}
    try:
        new = sorted(new, key=float)  # integer-like labels sort numerically: "2" before "10"
    except ValueError:
        new = sorted(new)
    names += new
    index = {name: k for k, name in enumerate(names)}
    return [np.array([index.get(v, -1) for v in seq], dtype=np.int64) for seq in raw], names


def check_input_file(path: str | Path, key: str) -> Path:
    """``path`` as a Path if it is a file with something in it; else ValueError naming ``key`` (e.g. ``data.path``)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{key}={str(path)!r} is a directory; expected a .csv or .npz file")
    if not path.is_file():
        raise ValueError(f"{key}={str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"{key}={str(path)!r} is an empty file (0 bytes)")
    return path


def _where(rows: list[dict], i: int, id_column: str, time_column: str | None) -> str:
    """Row ``i`` as a place in the data: its sequence and time step (the time column's value if there is one)."""
    name = rows[i][id_column]
    if time_column is not None:
        return f"sequence {name!r} at {time_column}={rows[i][time_column]!r}"
    return f"sequence {name!r} at time step {sum(1 for r in rows[:i] if r[id_column] == name)}"


DELIMITERS = (",", ";", "\t")


def _read_rows(path: Path, key: str) -> tuple[list[str], list[dict[str, str]], list[int], str]:
    """A CSV file's header, its rows (column -> cell), the line number of each row and the delimiter.

    Excel's "CSV UTF-8" starts with a byte-order mark, dropped here (``utf-8-sig``),
    and where the decimal mark is a comma it separates fields with ``;``: the
    delimiter is whichever of ``,`` ``;`` tab the header line holds most often
    (``,`` for a single column). Blank lines are skipped; a row with another
    number of fields than the header is a ValueError naming its line.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            delimiter = max(DELIMITERS, key=f.readline().count)  # a tie goes to the first, ","
            f.seek(0)
            reader = csv.reader(f, delimiter=delimiter)
            columns = next(reader, [])
            rows, lines = [], []
            for cells in reader:
                if not cells:
                    continue
                if len(cells) != len(columns):
                    raise ValueError(f"{path} line {reader.line_num}: {len(cells)} fields, but the header has "
                                     f"{len(columns)} ({delimiter!r}-separated: {columns}); a stray {delimiter!r} "
                                     "in a value needs quotes")
                rows.append(dict(zip(columns, cells)))
                lines.append(reader.line_num)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise ValueError(f"{key}={str(path)!r} is not a CSV text file ({exc})") from None
    return columns, rows, lines, delimiter


def read_csv(
    path: str | Path, id_column: str, time_column: str | None = None, feature_columns: list[str] | None = None,
    label_column: str | None = None, label_names: list[str] | None = None, labels_optional: bool = False,
    key: str = "data.path", missing: str = "marginalise", known_column: str | None = None,
    known_names: list[str] | None = None, known_optional: bool = False, input_columns: list[str] | None = None,
) -> Sequences:
    """Read a long-format CSV: one row per time step, a header row, sequences told apart by ``id_column``.

    Rows are grouped by id (in order of first appearance) and, within a sequence,
    ordered by ``time_column`` (numeric if every value parses, else as text)
    or kept in file order. ``feature_columns`` None takes every other column
    whose values are all numbers (a column of numbers and text is an error).
    Empty label cells are unlabelled steps. A feature cell that is empty, ``NaN`` or ``NA``
    (:data:`MISSING_CELLS`) is a missing value: NaN in x with ``missing="marginalise"``, an error
    naming its line with ``missing="error"``. ``known_column``: a column of known states (empty = not known),
    coded like labels (``known_names`` first, in that order: a decoded file keeps the training codes);
    ``known_optional`` reads a file without it as knowing none. ``input_columns``: exogenous inputs
    (:mod:`pyro_dssm.model.inputs`), each cell a finite number (no missing input: it is conditioned on, not
    modelled). ``key`` names the setting that gave ``path`` in error messages.
    """
    path = check_input_file(path, key)
    columns, rows, lines, delimiter = _read_rows(path, key)
    if not columns:
        raise ValueError(f"{key}={str(path)!r} has no header row; expected column names on the first line")
    if not rows:
        raise ValueError(f"{key}={str(path)!r} has a header but no data rows; expected one row per time step")
    if label_column is not None and label_column not in columns and labels_optional:
        label_column = None
    if known_column is not None and known_column not in columns and known_optional:
        known_column = None
    input_columns = list(input_columns or [])
    _check_columns(path, key, columns, {"id_column": id_column, "time_column": time_column,
                                        "label_column": label_column, "known_states_column": known_column},
                   input_columns)
    special = {id_column, time_column, label_column, known_column, *input_columns}
    feature_columns = _feature_columns(path, key, columns, rows, lines, feature_columns, special, id_column,
                                       time_column)
    overlap = [c for c in input_columns if c in feature_columns]
    if overlap:
        raise ValueError(f"{overlap} are both features (data.feature_columns) and inputs (data.input_columns); a column "
                         "is modelled or conditioned on, not both")
    values = _feature_values(path, rows, lines, feature_columns, id_column, time_column, missing)
    input_values = (_feature_values(path, rows, lines, input_columns, id_column, time_column, "error", role="input")
                    if input_columns else None)
    names, xs, times, raw_labels, raw_known, inputs = [], [], [], [], [], []
    for name, idx, t in _sequences(path, rows, id_column, time_column):
        names.append(name)
        xs.append(values[idx])
        if input_values is not None:
            inputs.append(input_values[idx])
        times.append(t)
        if label_column is not None:
            raw_labels.append([rows[i][label_column].strip() for i in idx])
        if known_column is not None:
            raw_known.append([rows[i][known_column].strip() for i in idx])
    check_missing(names, xs, str(path))
    labels, label_names = label_codes(raw_labels, label_names) if label_column is not None else (None, [])
    known, known_names = label_codes(raw_known, known_names) if known_column is not None else (None, known_names)
    return Sequences(names, xs, times, labels, label_names, feature_columns, delimiter, known, known_names,
                     inputs if input_columns else None, input_columns or None)


def _check_columns(path: Path, key: str, columns: list[str], named: dict[str, str | None],
                   input_columns: list[str]) -> None:
    """ValueError naming the first setting (``named``: setting -> column, None = not set; the input columns) whose
    column the file lacks."""
    for what, name in named.items():
        if name is not None and name not in columns:
            raise ValueError(f"data.{what}={name!r} is not a column of {path} (columns: {columns})")
    absent = [c for c in input_columns if c not in columns]
    if absent:
        raise ValueError(f"{key}={str(path)!r} lacks the input column(s) {absent} (data.input_columns); its columns: "
                         f"{columns}")


def _feature_columns(path: Path, key: str, columns: list[str], rows: list[dict], lines: list[int],
                     feature_columns: list[str] | None, special: set, id_column: str,
                     time_column: str | None) -> list[str]:
    """The feature columns: as given (each must exist), or every non-special column whose cells are all numbers."""
    if feature_columns is not None:
        missing = [c for c in feature_columns if c not in columns]
        if missing:
            raise ValueError(f"{key}={str(path)!r} lacks the feature column(s) {missing} (data.feature_columns); "
                             f"its columns: {columns}")
        return list(feature_columns)
    found = []
    for c in (c for c in columns if c not in special):
        numeric = [_is_number(r[c]) or is_missing_cell(r[c]) for r in rows]
        if all(numeric) and not all(is_missing_cell(r[c]) for r in rows):
            found.append(c)
        elif any(numeric) and not all(numeric):  # numbers with a stray cell: a damaged feature, not a text column
            i = numeric.index(False)
            raise ValueError(f"{path} line {lines[i]}, {_where(rows, i, id_column, time_column)}: column {c!r} "
                             f"holds numbers and {rows[i][c]!r}; expected a number (or list the numeric "
                             "columns in data.feature_columns)")
    if not found:
        raise ValueError(f"{path}: no numeric feature column besides {sorted(c for c in special if c)}")
    return found


MISSING_CELLS = ("", "nan", "na", "n/a", "null")  # (case-insensitive, stripped) a missing value in a feature column


def is_missing_cell(cell: str) -> bool:
    """Whether a CSV cell is a missing value (:data:`MISSING_CELLS`)."""
    return cell.strip().lower() in MISSING_CELLS


def _feature_values(path: Path, rows: list[dict], lines: list[int], feature_columns: list[str], id_column: str,
                    time_column: str | None, missing: str = "marginalise", role: str = "feature") -> np.ndarray:
    """(rows, features) float64 values, NaN for a missing cell with ``missing="marginalise"``; any other cell that
    is not a finite number is an error naming its line (a missing one too with ``missing="error"``; ``role``
    ``input``: the columns are exogenous inputs, whose missing cells cannot be summed out)."""
    values = np.empty((len(rows), len(feature_columns)))
    for i, row in enumerate(rows):
        for j, c in enumerate(feature_columns):
            cell = row[c]
            if is_missing_cell(cell) and missing == "marginalise":
                values[i, j] = np.nan
                continue
            if not _is_number(cell) or not math.isfinite(float(cell)):
                hint = ("" if not is_missing_cell(cell) else " (a missing value: data.missing=marginalise sums it out)"
                        if role == "feature" else " (an input is conditioned on, not modelled: a missing one cannot "
                        "be summed out; fill it in)")
                raise ValueError(f"{path} line {lines[i]}, {_where(rows, i, id_column, time_column)}: column {c!r} "
                                 f"must hold a finite number, got {cell!r}{hint}")
            values[i, j] = float(cell)
    return values


def check_missing(names: list[str], xs: list[np.ndarray], where: str) -> None:
    """ValueError naming the first sequence of ``xs`` (T_i, D) whose every cell is missing (nothing to segment)."""
    for name, x in zip(names, xs):
        if x.size and bool(np.isnan(x).all()):
            raise ValueError(f"{where}: sequence {name!r} has no observed value ({x.shape[0]} steps, every cell "
                             "missing); drop it or fill some cells")


def _sequences(path: Path, rows: list[dict], id_column: str, time_column: str | None):
    """Per sequence id (in order of first appearance): its name, row indices in time order and times."""
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row[id_column], []).append(i)
    numeric_time = time_column is not None and all(_is_number(r[time_column]) for r in rows)
    for name, idx in groups.items():
        if time_column is None:
            yield name, idx, np.arange(len(idx))
            continue
        t = [float(rows[i][time_column]) if numeric_time else rows[i][time_column] for i in idx]
        order = sorted(range(len(idx)), key=t.__getitem__)
        idx, t = [idx[k] for k in order], [t[k] for k in order]
        dup = next((a for a, b in zip(t, t[1:]) if a == b), None)
        if dup is not None:
            raise ValueError(f"{path}: sequence {name!r} has two rows at {time_column}={dup!r}")
        t = np.array(t)
        if numeric_time and np.all(t == np.round(t)):
            t = t.astype(np.int64)
        yield name, idx, t


def _is_number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
