"""What the model-agnostic methods (sampled Shapley, occlusion) share: checking their arguments
and evaluating the target score at many points per row, in blocks of bounded size. Pure numpy
plus `ModelFunctions.predict`; no Beam.

A method asks for M points per row (row b's point m is whatever its `build_points(rows, ms)`
returns for that pair). The B x M points are evaluated in row-major order in blocks of at most
`chunk_size` points, each block one `predict` call (the blocks of a row may span several calls,
and a call holds the points of several rows), so memory is bounded by the chunk size, never by
B x M, and only the (B, M) float32 target scores are kept. A point's score does not depend on
which block it was evaluated in, so a row's results do not depend on its batch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from attributions.model_functions import ModelFunctions
from attributions.players import blend, player_count
from attributions.sampling import validate_chunk_size

__all__ = ["check_inputs", "check_players", "target_scores_at_points", "coalition_points"]

# build_points(rows int64 (n,), ms int64 (n,)) -> one float32 (n, *shape_i) array per model input:
# point ms[j] of row rows[j], for each j.
PointBuilder = Callable[[np.ndarray, np.ndarray], tuple]


def check_inputs(
    fns: ModelFunctions, inputs: Sequence[np.ndarray], baselines: Sequence[np.ndarray], targets: np.ndarray, method: str
) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], np.ndarray]:
    """inputs as float32 (B, *shape_i), baselines as float32 (B or 1, *shape_i) (a baseline given
    as (*shape_i) is one row for every example), targets as int32 (B,) in [0, C)."""
    inputs = tuple(np.asarray(x, dtype=np.float32) for x in inputs)
    if len(inputs) != len(fns.input_shapes) or len(baselines) != len(inputs):
        raise ValueError(
            f"{method}: the model has {len(fns.input_shapes)} inputs; got {len(inputs)} input arrays and "
            f"{len(baselines)} baselines: pass one array of each per model input, in the model's order."
        )
    rows = len(inputs[0]) if inputs else 0
    if rows == 0:
        raise ValueError(f"{method}: got a batch of 0 rows; call it with at least one row (skip empty batches).")
    checked = []
    for i, (x, r, shape) in enumerate(zip(inputs, baselines, fns.input_shapes)):
        if x.shape != (rows, *shape):
            raise ValueError(
                f"{method}: input {i} has shape {x.shape}; expected (B={rows}, *{shape}) (the model's input shape "
                "with the batch first, the same B for every input)."
            )
        r = np.asarray(r, dtype=np.float32)
        if r.shape == shape:
            r = r[None]
        if r.shape[1:] != shape or len(r) not in (1, rows):
            raise ValueError(
                f"{method}: baseline {i} has shape {r.shape}; expected {shape}, (1, *{shape}) or (B={rows}, *{shape}): "
                "one baseline for every row, or one per row."
            )
        checked.append(r)
    targets = np.asarray(targets)
    if targets.shape != (rows,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{method}: targets must be integers of shape (B,) = ({rows},); got {targets.dtype} {targets.shape}.")
    if (targets.min() < 0 or targets.max() >= fns.num_outputs):
        raise ValueError(
            f"{method}: targets must lie in [0, {fns.num_outputs}) (the model's outputs); got values from "
            f"{targets.min()} to {targets.max()}: resolve argmax targets (< 0) before calling it."
        )
    return inputs, tuple(checked), targets.astype(np.int32)


def check_players(players: Sequence[np.ndarray], inputs: Sequence[np.ndarray], method: str) -> tuple[tuple[np.ndarray, ...], int]:
    """players as int32 arrays, one per input of its shape without the batch axis, and P."""
    if len(players) != len(inputs):
        raise ValueError(
            f"{method}: got {len(players)} player arrays for {len(inputs)} model inputs: pass one per input "
            "(attributions.players.element_players or patch_players)."
        )
    checked = []
    for i, (p, x) in enumerate(zip(players, inputs)):
        p = np.asarray(p)
        if p.shape != x.shape[1:] or not np.issubdtype(p.dtype, np.integer):
            raise ValueError(
                f"{method}: players of input {i} are {p.dtype} {p.shape}; expected integers of the input's shape "
                f"without the batch axis, {x.shape[1:]}."
            )
        checked.append(p.astype(np.int32))
    return tuple(checked), player_count(checked)


def target_scores_at_points(
    fns: ModelFunctions, targets: np.ndarray, points_per_row: int, build_points: PointBuilder, chunk_size: int
) -> np.ndarray:
    """float32 (B, M): the target score of each row at each of its M points (module docstring)."""
    chunk_size = validate_chunk_size(chunk_size)
    rows = len(targets)
    total = rows * points_per_row
    step = fns.rows_per_call(total, chunk_size)
    starts = range(0, total, step)

    def block(start: int) -> tuple:
        flat = np.arange(start, min(start + step, total), dtype=np.int64)  # (n,)
        row, m = np.divmod(flat, points_per_row)  # (n,) each
        return row, build_points(row, m)

    def score(job: tuple) -> np.ndarray:
        row, points = job
        outputs = fns.predict(points)  # (n, C), one call
        return outputs[np.arange(len(row)), targets[row]]  # (n,)

    # Points are built on the calling thread in block order; only the model calls run side by side.
    scores = list(fns.map(score, (block(s) for s in starts)))
    flat_scores = np.concatenate(scores)  # (B * M,)
    return flat_scores.astype(np.float32).reshape(rows, points_per_row)


def coalition_points(
    inputs: tuple, baselines: tuple, players: tuple, coalitions_of: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> PointBuilder:
    """A PointBuilder whose points are coalitions: coalitions_of(rows, ms) -> bool (n, P), True
    where the player takes the row's value, False where it takes the baseline's (`blend`)."""

    def build(rows: np.ndarray, ms: np.ndarray) -> tuple:
        coalitions = coalitions_of(rows, ms)[:, None, :]  # (n, 1, P)
        own = tuple(x[rows] for x in inputs)  # (n, *shape) each
        refs = tuple(r if len(r) == 1 else r[rows] for r in baselines)  # (1 or n, *shape) each
        return blend(own, refs, players, coalitions)  # (n, *shape) each

    return build
