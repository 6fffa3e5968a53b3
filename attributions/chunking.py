"""Choosing the chunk size (rows per gradient call) from a memory budget and the model's own cost.

A fixed chunk is wrong both ways: 1,024 rows are 16 examples x 64 integrated-gradients points, so a
small tabular model spends most of its time in per-call overhead (measured on a 20-32-16-3 MLP:
3.7 s per 20 batches at 1,024 rows per call, 0.9 s at 65,536); while a CNN's activations at a few
thousand rows take gigabytes. So the chunk is sized per model, once per worker:

    chunk_rows = min(MAX_CHUNK_ROWS, budget_bytes // bytes_per_row)

`bytes_per_row` is measured on the model's compiled forward pass (`ModelFunctions.predict_fn`,
traced once per worker; every method calls it anyway, so the probe costs no extra trace): the sum
over every tensor of its graph whose first dimension is the batch of its per-row size in bytes,
times `BACKWARD_FACTOR` for the backward pass (each forward activation is kept for the tape and
gets a gradient of its own size), plus the path's own per-row arrays (the
points in float64 and float32, the gradients, their float64 weighting:
`PATH_BYTES_PER_INPUT_VALUE` per input value). Summing every tensor over-counts (TensorFlow frees
intermediate tensors once consumed), so the budget is an upper bound on the chunk's working set.
It needs no model-specific code: any Keras or SavedModel model that traces works. (Tracing the
gradient graph instead cost 1.1 s at worker start for a path method, which never runs it.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: pipeline.config imports this module without TensorFlow
    from attributions.model_functions import ModelFunctions

__all__ = ["DEFAULT_CHUNK_MEMORY_MIB", "MAX_CHUNK_ROWS", "bytes_per_row", "automatic_chunk_size"]

# Memory for one gradient call's tensors, per worker process: a fixed budget (not a share of the
# machine's memory) so the chosen chunk, and the run's manifest, are the same on every machine.
DEFAULT_CHUNK_MEMORY_MIB = 512
# Rows per call past which small models gain nothing measurable (per-call overhead is < 2 % of a
# 65,536-row call of a 20-32-16-3 MLP) while arrays grow past the CPU caches.
MAX_CHUNK_ROWS = 65536
# The forward graph's tensors x 2 for the gradient call: the backward pass's tensors summed the
# same way were 1.7-2.0x the forward pass's on the bench's MLPs and CNN, forward included.
BACKWARD_FACTOR = 2
# float64 point + float32 point + float32 gradient + float64 weighted copy, per input value.
PATH_BYTES_PER_INPUT_VALUE = 8 + 4 + 4 + 8


def bytes_per_row(fns: ModelFunctions) -> int:
    """Bytes per row of one gradient call: every batch-shaped tensor of the traced forward graph
    (unknown trailing dimensions counted as 1) x BACKWARD_FACTOR, plus the path's arrays."""
    graph = fns.predict_fn.get_concrete_function().graph  # traced once; reused by every predict call
    total = 0
    for op in graph.get_operations():
        for tensor in op.outputs:
            shape = tensor.shape
            if shape.rank is None or shape.rank == 0 or shape[0] is not None:
                continue  # not batch-shaped: weights, constants, scalars
            per_row = int(np.prod([d if d is not None else 1 for d in shape.as_list()[1:]]))
            total += per_row * tensor.dtype.size
    values = sum(int(np.prod(shape)) for shape in fns.input_shapes)
    return BACKWARD_FACTOR * total + PATH_BYTES_PER_INPUT_VALUE * values


def automatic_chunk_size(fns: ModelFunctions, memory_mib: int = DEFAULT_CHUNK_MEMORY_MIB) -> int:
    """Rows per gradient call that fit `memory_mib` MiB, between 1 and MAX_CHUNK_ROWS."""
    rows = (int(memory_mib) * 2**20) // max(bytes_per_row(fns), 1)
    return int(min(MAX_CHUNK_ROWS, max(1, rows)))
