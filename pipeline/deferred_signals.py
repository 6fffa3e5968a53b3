"""Signals held back while a run commits.

A commit replaces the previous result with the new one in several steps (pipeline.output_dir);
SIGINT, SIGTERM or SIGHUP arriving between them would leave neither result nor a manifest. While
`signals_deferred()` is active they are recorded instead, and delivered again, with the handlers
that were there before, once the block is over: Ctrl-C or a scheduler's stop then ends the
process right after the commit, whose result is whole. (SIGKILL cannot be caught: a run killed
with -9 mid-commit leaves files the ownership record still claims, which the next run replaces.)
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Iterator

__all__ = ["signals_deferred"]

_LOGGER = logging.getLogger(__name__)
_DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Holds SIGINT/SIGTERM/SIGHUP until the block ends (only the main thread can set handlers:
    elsewhere the block runs as is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def record(signum, _frame) -> None:
        received.append(signum)
        _LOGGER.warning("%s received while the run commits its results: stopping once the commit is done",
                        signal.Signals(signum).name)

    previous = {signum: signal.signal(signum, record) for signum in _DEFERRED}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)
