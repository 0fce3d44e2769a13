"""Complete lines of a live text source as they arrive: standard input, or a file still being written (read as
``tail -f`` does), in batches of what one read found; and the signal handling that ends such a stream cleanly.
Used by the streaming decode (:mod:`pyro_dssm.stream`)."""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

STDIO = "-"
READ_BYTES = 1 << 20  # the most one read takes, so the most one batch holds


class _Interrupted(Exception):
    """Raised by the signal handler while :class:`LineReader` waits for data."""


class LineReader:
    """The complete lines of ``source`` (``-`` or a path) in batches of what has arrived; ``follow``: the file grows
    (look every ``poll`` s); ``idle``: end after so many seconds without data (None: never). :meth:`stop` (a signal
    handler) ends :meth:`batches` at once if it waits for data, else at its next wait."""

    def __init__(self, source: str, follow: bool = False, poll: float = 0.2, idle: float | None = None):
        self.source, self.follow, self.poll, self.idle = source, follow, poll, idle
        self.line_no = 0  # lines handed out so far
        self.stopped = self._waiting = False

    def stop(self) -> None:
        self.stopped = True
        if self._waiting:
            raise _Interrupted

    def batches(self) -> Iterator[list[str]]:
        """Lists of complete lines (newline removed), each what one read found; :attr:`line_no` counts them."""
        partial = b""
        with (open(sys.stdin.fileno(), "rb", buffering=0, closefd=False) if self.source == STDIO
              else open(self.source, "rb", buffering=0)) as f:
            try:
                while (data := self._read(f)) is not None:
                    *lines, partial = (partial + data).split(b"\n")
                    if lines:
                        yield self._decode(lines)
            except _Interrupted:
                pass
            if partial and self.source == STDIO and not self.stopped:  # the stream ended: its last line is whole
                yield self._decode([partial])
            elif partial:
                log.warning("input=%r: its last %d bytes have no newline yet; not decoded", self.source, len(partial))

    def _read(self, f) -> bytes | None:
        """The next bytes that arrive, or None at the end (module docstring)."""
        since = time.monotonic()
        try:
            self._waiting = True
            while not self.stopped:
                if self.source == STDIO:
                    if self.idle is not None and not select.select([f], [], [], self.idle)[0]:
                        log.info("input=-: no data for idle=%g s; ending", self.idle)
                        return None
                    return f.read(READ_BYTES) or None
                if os.fstat(f.fileno()).st_size < f.tell():
                    raise ValueError(f"input={self.source!r} is shorter than what was read of it (truncated or "
                                     "rotated?); follow=true follows one growing file")
                data = f.read(READ_BYTES)
                if data or not self.follow:
                    return data or None
                if self.idle is not None and time.monotonic() - since >= self.idle:
                    log.info("input=%r: no new data for idle=%g s; ending", self.source, self.idle)
                    return None
                time.sleep(self.poll)
            return None
        finally:
            self._waiting = False

    def _decode(self, lines: list[bytes]) -> list[str]:
        try:
            text = [line.decode("utf-8").rstrip("\r") for line in lines]
        except UnicodeDecodeError as exc:
            raise ValueError(f"input={self.source!r} near line {self.line_no + 1} is not UTF-8 text ({exc})") from None
        if self.line_no == 0:
            text[0] = text[0].removeprefix("\ufeff")  # Excel's byte-order mark
        self.line_no += len(text)
        return text


@contextmanager
def stop_on_signals(reader: LineReader) -> Iterator[None]:
    """SIGINT and SIGTERM stop ``reader`` (so the stream ends cleanly) instead of killing the process."""
    main = threading.current_thread() is threading.main_thread()  # the only one that may set signal handlers
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM) if main}
    for sig in before:
        signal.signal(sig, lambda *_: reader.stop())
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
