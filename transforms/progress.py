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


class _Counter:
    """A count shared by the worker threads and the launcher's progress thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._value = 0

    def add(self, records: int) -> None:
        with self._lock:
            self._value += records

    def value(self) -> int:
        with self._lock:
            return self._value


_done, _read = _Counter(), _Counter()
add_done, records_done = _done.add, _done.value
add_read, records_read = _read.add, _read.value
