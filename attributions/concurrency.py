"""Running a batch's gradient calls side by side, one per core, instead of one op at a time on all.

TensorFlow splits each op of a call across its intra-op thread pool; the ops of a small model (a
Dense 20-32-16-3 MLP over 65,536 path points) are small for that split. Running whole calls side by
side instead, each on its own rows and each op on the thread that calls it (intra-op parallelism
1), did the same IG work in less CPU time (12.5 s against 15.3 s for 600k rows, in one process).
Measured on 2 cores (`python bench/concurrency.py`, one batch at a time, 3 rounds): IG of that MLP
1.05x, the plain gradient of a 64-256-256-10 MLP 0.97x, a small CNN 1.08x; in the pipeline, with
two batches in flight (transforms.attribute), the default IG job 1.03-1.04x (bench/default_job.py).

Each call computes its own rows only, so a row's values do not depend on the thread that computed
it or on the other calls running: the results are the same as one call at a time, in any order.

Shapes and memory: with N calls in flight the chunk's memory budget is shared by the N calls
(`split_rows` halves a chunk until a batch gives every thread work); at most N calls are in flight,
so at most N chunks' tensors are alive at once.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Executor
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["available_cores", "run_ops_single_threaded", "ordered_map", "split_rows"]

Item = TypeVar("Item")
Result = TypeVar("Result")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; os.cpu_count() where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_ops_single_threaded() -> bool:
    """Sets TensorFlow's intra-op parallelism to 1 (each op runs on the thread that calls it).

    Returns True when it is 1 now, False when TensorFlow had already started with another setting
    (it can be set only before the first op runs; the calls then still run side by side, on
    TensorFlow's own pools, which measured slower than single-threaded ops but faster than one call
    at a time).
    """
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == 1:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # "cannot be modified after initialization"
        return False
    return True


def split_rows(rows: int, chunk_rows: int, calls: int) -> int:
    """Rows per call for `rows` rows: `chunk_rows`, halved (at least 1 row) until the rows give
    `calls` calls, so no thread idles on a batch smaller than `calls` chunks. Halving keeps the call
    shapes to a few powers of two of the chunk (XLA compiles one program per shape)."""
    size = max(1, int(chunk_rows))
    while size > 1 and -(-rows // size) < calls:
        size //= 2
    return size


def ordered_map(
    function: Callable[[Item], Result], items: Iterable[Item], executor: Executor | None, in_flight: int
) -> Iterator[Result]:
    """function(item) for each item, in the items' order, at most `in_flight` running at once on
    `executor` (None or in_flight <= 1: one at a time on the calling thread). Items are drawn
    lazily, so only `in_flight` inputs and results are held; an exception re-raises here."""
    if executor is None or in_flight <= 1:
        for item in items:
            yield function(item)
        return
    pending: deque = deque()
    try:
        for item in items:
            pending.append(executor.submit(function, item))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # a failure or an abandoned generator: drop what has not started
            future.cancel()
