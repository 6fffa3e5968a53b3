"""Records read (decoded or dead-lettered by the decoder) and finished (attributed or
dead-lettered) in this process, for the launcher's progress line.

Workers of an in-process runner (the DirectRunner's default) share the launcher's process, so the
launcher reads this counter while the pipeline runs. Other runners' workers count into their own
process; the launcher shows their metrics instead. A display aid only: a retried bundle counts twice
here, the record counts of the manifest come from the data (transforms.count).
"""

from __future__ import annotations

import threading

__all__ = ["add_done", "records_done", "add_read", "records_read"]

_lock = threading.Lock()
_done = 0
_read = 0


def add_done(records: int) -> None:
    global _done
    with _lock:
        _done += records


def records_done() -> int:
    with _lock:
        return _done


def add_read(records: int) -> None:
    global _read
    with _lock:
        _read += records


def records_read() -> int:
    with _lock:
        return _read
