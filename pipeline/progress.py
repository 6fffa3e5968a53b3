"""The progress line of a run: records done (of how many, when the inputs tell), rate, ETA.

On a terminal, a progress bar (rich, which Keras already depends on) redrawn twice a second; when
stderr is a file or a pipe (logs, CI), a plain line every `PLAIN_INTERVAL_S` seconds, so logs stay
readable. The count comes from a callable: the in-process counter of transforms.progress for the
DirectRunner, the runner's metrics for the others (polled, so it lags by the runner's reporting).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, Optional, Sequence, TextIO

__all__ = ["ProgressReporter", "parquet_total_rows", "PLAIN_INTERVAL_S"]

PLAIN_INTERVAL_S = 10.0
_TTY_INTERVAL_S = 0.5
# Footers read to learn the total: beyond this many files the total is left unknown rather than
# spending launch time on it (object stores answer a footer read in tens of ms).
_MAX_FOOTERS = 2000
# Records arrive a batch at a time (4,096 by default), so the first percent says little about
# the rate: no time-left estimate before this share of the records is done.
_MIN_SHARE_FOR_ETA = 0.05


def parquet_total_rows(paths: Sequence[str]) -> Optional[int]:
    """Rows in the Parquet files, from their footers; None when there are too many to ask."""
    if len(paths) > _MAX_FOOTERS:
        return None
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    total = 0
    for path in paths:
        try:
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        except Exception:  # an unreadable file is the pipeline's to report (dead letters)
            return None
    return total


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def plain_line(done: int, total: Optional[int], elapsed: float, read: Optional[int] = None) -> str:
    """e.g. 'progress: 52,000 of 200,000 records (26 %), 60,000 read, 8,100 records/s, about 18 s
    left'. done: records attributed or dead-lettered; read: records read and decoded (shown while
    ahead of done: a heavy model's first batch moves nothing else for a while)."""
    rate = done / elapsed if elapsed > 0 else 0.0
    text = f"progress: {_count(done)}"
    if total:
        text += f" of {_count(total)} records ({100 * min(done, total) / total:.0f} %)"
    else:
        text += " records"
    if read is not None and read > done:
        text += f", {_count(read)} read"
    text += f", {_count(rate)} records/s"
    if total and rate > 0 and _MIN_SHARE_FOR_ETA * total <= done < total:
        text += f", about {_duration((total - done) / rate)} left"
    return text + f" ({_duration(elapsed)} so far)"


class ProgressReporter:
    """Shows progress on `stream` from a background thread between start() and stop().

    read_done: returns the records finished so far (attributed + dead-lettered); total: the
    records in the input, or None when unknown; read_read: returns the records read and decoded so
    far (None: not shown).
    """

    def __init__(self, read_done: Callable[[], int], total: Optional[int] = None, stream: Optional[TextIO] = None,
                 interval: Optional[float] = None, read_read: Optional[Callable[[], int]] = None):
        self._read_done = read_done
        self._read_read = read_read
        self._offset = self._safe_read()  # the counter may already hold an earlier run's records
        self._read_offset = self._safe_read(read_read) if read_read is not None else 0
        self.total = total
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = interval or (_TTY_INTERVAL_S if self._tty else PLAIN_INTERVAL_S)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._started = 0.0
        self.lines_written = 0

    def _safe_read(self, counter: Optional[Callable[[], int]] = None) -> int:
        try:
            return int((counter or self._read_done)() or 0)
        except Exception:  # a runner that cannot report yet: show nothing rather than fail the run
            return 0

    def done(self) -> int:
        return max(0, self._safe_read() - self._offset)

    def read(self) -> Optional[int]:
        """Records read and decoded so far, or None when not counted."""
        return None if self._read_read is None else max(0, self._safe_read(self._read_read) - self._read_offset)

    def start(self) -> "ProgressReporter":
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        if self._tty:
            self._loop_bar()
            return
        while not self._stop.wait(self._interval):
            self._stream.write(plain_line(self.done(), self.total, time.monotonic() - self._started, self.read()) + "\n")
            self._stream.flush()
            self.lines_written += 1

    def _loop_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        columns = (TextColumn("records"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[read]}"),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
        with Progress(*columns, console=Console(file=self._stream), transient=False) as bar:
            task = bar.add_task("attribute", total=self.total, rate="", read="")
            while True:
                stopping = self._stop.wait(self._interval)
                done, elapsed = self.done(), time.monotonic() - self._started
                rate = f"{_count(done / elapsed)}/s" if elapsed > 0 else ""
                read = self.read()
                read_text = f"({_count(read)} read)" if read is not None and read > done else ""
                bar.update(task, completed=min(done, self.total) if self.total else done, rate=rate, read=read_text)
                if stopping:
                    break
