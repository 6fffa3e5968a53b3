"""Records finished in this process (attributed or dead-lettered), for the launcher's progress line.

Workers of an in-process runner (the DirectRunner's default) share the launcher's process, so the
launcher reads this counter while the pipeline runs. Other runners' workers count into their own
process; the launcher shows their metrics instead. A display aid only: a retried bundle counts twice
here, the record counts of the manifest come from the data (transforms.count).
"""

from __future__ import annotations

import threading

__all__ = ["add_done", "records_done"]

_lock = threading.Lock()
_done = 0


def add_done(records: int) -> None:
    global _done
    with _lock:
        _done += records


def records_done() -> int:
    with _lock:
        return _done
