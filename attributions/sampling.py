"""Evaluating gradients at many points per example, in chunks of bounded size.

Sampling methods (SmoothGrad, expected gradients) need the gradient
at S points per example. `gradients_at_points` evaluates them as (examples x points) in one call per
chunk, never more than `chunk_size` rows at once, so memory is bounded by the chunk size and not by
batch size x steps.
"""

from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from attributions.model_functions import ModelFunctions

__all__ = ["gradients_at_points", "sample_moments", "example_rng", "per_example_points", "validate_chunk_size"]

# build_points(example_slice, point_slice) -> tuple, one float32 array per model input, each
# (e, s, *input_shape) for e examples and s points.
PointBuilder = Callable[[slice, slice], tuple]


def validate_chunk_size(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(
            f"chunk_size must be a positive integer (rows per gradient call); got {chunk_size!r}."
        )
    return int(chunk_size)


def gradients_at_points(
    fns: ModelFunctions,
    build_points: PointBuilder,
    targets: np.ndarray,
    num_points: int,
    chunk_size: int,
) -> Iterator[tuple[slice, slice, tuple]]:
    """Yields (example_slice, point_slice, grads) with grads one array per input, (e, s, *shape).

    Blocks hold e examples x s points with e * s <= chunk_size; when num_points > chunk_size an
    example's points are split over several blocks.
    """
    chunk_size = validate_chunk_size(chunk_size)
    num_examples = len(targets)
    examples_per_block = fns.rows_per_call(num_examples, max(1, chunk_size // num_points))
    points_per_block = min(num_points, chunk_size)
    blocks = [
        (slice(e0, min(e0 + examples_per_block, num_examples)), slice(s0, min(s0 + points_per_block, num_points)))
        for e0 in range(0, num_examples, examples_per_block) for s0 in range(0, num_points, points_per_block)
    ]

    def block_points(blocks: list) -> Iterator[tuple]:
        # Points are built here, on the calling thread, in block order (build_points may draw from
        # per-example generators); only the gradient calls run side by side.
        for ex, pts in blocks:
            e, s = ex.stop - ex.start, pts.stop - pts.start
            points = build_points(ex, pts)  # each (e, s, *shape)
            flat = tuple(p.reshape(e * s, *p.shape[2:]) for p in points)  # each (e*s, *shape)
            yield flat, np.repeat(targets[ex], s).astype(np.int32)  # (e*s,)

    full_block = examples_per_block * points_per_block  # smaller blocks are padded under XLA
    calls = fns.map(lambda job: fns.gradients(*job, pad_to=full_block)[1], block_points(blocks))
    for (ex, pts), grads in zip(blocks, calls):
        e, s = ex.stop - ex.start, pts.stop - pts.start
        yield ex, pts, tuple(g.reshape(e, s, *g.shape[1:]) for g in grads)  # (e, s, *shape)


def sample_moments(
    blocks: Iterator[tuple[slice, slice, tuple]],
    inputs: Sequence[np.ndarray],
    num_points: int,
    per_sample: Optional[Callable[[int, slice, slice, np.ndarray], np.ndarray]] = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Mean and mean square over each example's points of a per-sample value (by default the
    gradient itself), accumulated in float64 over the blocks of `gradients_at_points`.

    per_sample(input_index, example_slice, point_slice, grads (e, s, *shape)) -> (e, s, *shape).
    Returns (means, mean_squares): one float64 (B, *shape) array per input each.
    """
    sums = [np.zeros(x.shape, dtype=np.float64) for x in inputs]
    squares = [np.zeros(x.shape, dtype=np.float64) for x in inputs]
    for ex, pts, grads in blocks:
        for i, g in enumerate(grads):
            value = (g if per_sample is None else per_sample(i, ex, pts, g)).astype(np.float64)  # (e, s, *shape)
            sums[i][ex] += value.sum(axis=1)
            squares[i][ex] += (value * value).sum(axis=1)
    return [t / num_points for t in sums], [t / num_points for t in squares]


def example_rng(seed: int, example_seed: int) -> np.random.Generator:
    """A generator that depends only on the run seed and the example's own seed (e.g. a hash of
    its key), never on its position in a batch: sampling methods stay batch invariant."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(example_seed) & 0xFFFFFFFFFFFFFFFF])


def per_example_points(
    inputs: Sequence[np.ndarray], num_points: int, sample_one: Callable[[int], tuple]
) -> PointBuilder:
    """A PointBuilder drawing each example's full set of points with `sample_one(b)` (a tuple of
    (num_points, *shape) arrays) and slicing it, so the draws do not depend on the blocking."""
    cache: dict[int, tuple] = {}  # the current example block's draws

    def build(ex: slice, pts: slice) -> tuple:
        if set(cache) != set(range(ex.start, ex.stop)):
            cache.clear()
            cache.update({b: sample_one(b) for b in range(ex.start, ex.stop)})
        return tuple(
            np.stack([cache[b][i][pts] for b in range(ex.start, ex.stop)]).astype(np.float32)
            for i in range(len(inputs))
        )  # each (e, s, *shape)

    return build
