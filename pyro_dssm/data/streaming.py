"""Training data larger than memory: an (N, T, D) ``.npy`` file read one minibatch at a time (``data=npy``).

The file is memory-mapped, never loaded whole. A minibatch copies its rows
(sorted, so the reads go forward through the file) into a (B, T, D) float32
tensor, and the pages it touched are then dropped from this process's
mapping (``madvise(MADV_DONTNEED)``): the process holds one minibatch, and
the operating system's page cache keeps, or gives back under memory
pressure, whatever it likes. Without that, every page read over an epoch
stays mapped and the resident set grows towards the file's size.

Validation sequences (the last ``n_val`` rows, or a second small file) are
loaded into memory. Features are standardised with the training rows' mean and
standard deviation, computed in one streaming pass and stored in the
checkpoint like those of ``data=csv`` / ``data=npz``. Every sequence has T
steps (no padding); cut long recordings into equal windows when writing the
file.
"""

from __future__ import annotations

import logging
import mmap
from pathlib import Path

import numpy as np
import torch

from pyro_dssm.config import NpyDataConfig  # noqa: F401 (re-exported: the streamed source's settings)
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.data.files import FileData
from pyro_dssm.data.features import Preprocessing

log = logging.getLogger(__name__)


def _read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, byte offset of the data) of a C-ordered ``.npy`` file."""
    with path.open("rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read(f)
        except ValueError as exc:
            raise ValueError(f"data.path={str(path)!r} is not a .npy file: {exc}") from exc
        offset = f.tell()
    if fortran_order:
        raise ValueError(f"{path}: Fortran-ordered array; save it in C order (np.ascontiguousarray) to read rows")
    if len(shape) != 3 or not np.issubdtype(dtype, np.floating):
        raise ValueError(f"{path}: expected a float (N, T, D) array, got shape {shape} of {dtype}")
    return shape, dtype, offset


class NpyRows:
    """Rows ``start .. stop-1`` of the (N, T, D) array in a ``.npy`` file, memory-mapped.

    ``rows[idx]`` (idx (B,) integers, relative to ``start``) -> (B, T, D)
    float32 tensor on ``device``, ``(x - mean) / std`` when statistics are set.
    ``shape``, ``len`` and ``to(device)`` make it stand in for the (N, T, D)
    tensor of :class:`pyro_dssm.data.sequences.SequenceData` in training.
    """

    def __init__(self, path: str | Path, start: int = 0, stop: int | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"data.path={str(self.path)!r} is not a file")
        shape, self.dtype, offset = _read_header(self.path)
        N, T, D = shape
        stop = N if stop is None else stop
        if not 0 <= start < stop <= N:
            raise ValueError(f"{self.path}: rows {start}..{stop} outside its {N} sequences")
        self.start, self.shape = start, torch.Size([stop - start, T, D])
        self.row_bytes = T * D * self.dtype.itemsize
        with self.path.open("rb") as f:
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._array = np.ndarray(shape, self.dtype, buffer=self._mmap, offset=offset)
        self._offset = offset
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.shape[0]

    def to(self, device) -> "NpyRows":
        """The same rows, delivered on ``device`` (shares the mapping)."""
        other = object.__new__(NpyRows)
        other.__dict__.update(self.__dict__, device=torch.device(device))
        return other

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Raw rows lo..hi-1 (relative to ``start``) as an in-memory array, pages released."""
        out = np.array(self._array[self.start + lo: self.start + hi])
        self._release(self.start + lo, self.start + hi)
        return out

    def __getitem__(self, idx) -> torch.Tensor:
        idx = torch.as_tensor(idx).cpu().numpy().reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range 0..{len(self) - 1}")
        # read in file order, return in the order asked for
        rows, inverse = np.unique(idx + self.start, return_inverse=True)
        batch = self._array[rows]  # fancy indexing copies just these rows
        if rows.size:
            self._release(int(rows[0]), int(rows[-1]) + 1)
        x = torch.from_numpy(batch[inverse]).float()
        if self.mean is not None:
            x = (x - self.mean) / self.std
        return x.to(self.device)

    def _release(self, lo: int, hi: int) -> None:
        """Drop the mapped pages of absolute rows lo..hi-1 from this process (the page cache may keep them)."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        first = (self._offset + lo * self.row_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        last = min(self._offset + hi * self.row_bytes, len(self._mmap))
        self._mmap.madvise(mmap.MADV_DONTNEED, first, last - first)


def feature_moments(rows: NpyRows, chunk_bytes: int = 64 * 2**20) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (D,) of every step of ``rows``, one pass of chunks (Chan et al.'s merge)."""
    per_chunk = max(1, chunk_bytes // rows.row_bytes)
    count, mean, m2 = 0, np.zeros(rows.shape[-1]), np.zeros(rows.shape[-1])
    for lo in range(0, len(rows), per_chunk):
        steps = rows.read(lo, min(lo + per_chunk, len(rows))).reshape(-1, rows.shape[-1]).astype(np.float64)
        n, chunk_mean = steps.shape[0], steps.mean(0)
        delta = chunk_mean - mean
        m2 += ((steps - chunk_mean) ** 2).sum(0) + delta**2 * count * n / (count + n)
        mean += delta * n / (count + n)
        count += n
    std = np.sqrt(m2 / count)
    return mean, np.where(std > 1e-12, std, 1.0)


def load_npy_data(cfg: NpyDataConfig) -> FileData:
    """Training rows streamed from ``cfg.path``; validation in memory (module docstring)."""
    head = NpyRows(cfg.path)
    N, T, D = head.shape
    if cfg.val_path is None:
        if cfg.n_val >= N:
            raise ValueError(f"data.n_val={cfg.n_val} leaves no training sequence of the {N} in {cfg.path}")
        train, val_rows = NpyRows(cfg.path, 0, N - cfg.n_val), NpyRows(cfg.path, N - cfg.n_val)
    else:
        train, val_rows = head, NpyRows(cfg.val_path)
        if val_rows.shape[-1] != D:
            raise ValueError(f"data.val_path {cfg.val_path}: sequences of D={val_rows.shape[-1]}, training D={D}")
    if cfg.standardize:
        mean, std = feature_moments(train)
    else:
        mean, std = np.zeros(D), np.ones(D)
    train.mean, train.std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
    val_x = torch.as_tensor((val_rows.read(0, len(val_rows)) - mean) / std, dtype=torch.float32)
    prep = Preprocessing(["raw"], mean, std, [f"x{j}" for j in range(D)])
    log.info("%s: %d training sequences streamed (T=%d, D=%d, %.2f GB), %d validation sequences in memory",
             cfg.path, len(train), T, D, len(train) * train.row_bytes / 1e9, len(val_x))
    full = lambda n, t: torch.full((n,), t, dtype=torch.long)  # noqa: E731 (every sequence has all its steps)
    return FileData(SequenceData(train, full(len(train), T)), SequenceData(val_x, full(len(val_x), val_x.shape[1])),
                    prep, [], [str(i) for i in range(len(val_x))])
