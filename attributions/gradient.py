"""Vanilla input gradients (saliency): d F_target(x) / d x."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attributions.model_functions import ModelFunctions
from attributions.result import Attributions
from attributions.sampling import validate_chunk_size

__all__ = ["gradient", "batched_gradients"]


def batched_gradients(
    fns: ModelFunctions, inputs: Sequence[np.ndarray], targets: np.ndarray, chunk_size: int
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """Gradients of B examples in chunks of at most `chunk_size` rows (side by side on
    `fns.concurrent_calls` threads).

    Returns (scores (B,), grads one (B, *shape_i) per input, used_targets (B,)); targets < 0 mean
    the argmax class at x (see `ModelFunctions.gradients`).
    """
    num_examples = len(targets)
    step = fns.rows_per_call(num_examples, validate_chunk_size(chunk_size))
    if num_examples <= step:
        return fns.gradients(inputs, targets, pad_to=step)
    parts = list(fns.map(
        lambda i: fns.gradients([x[i : i + step] for x in inputs], targets[i : i + step], pad_to=step),
        range(0, num_examples, step),
    ))
    scores = np.concatenate([p[0] for p in parts])
    grads = tuple(np.concatenate([p[1][k] for p in parts]) for k in range(len(inputs)))
    used = np.concatenate([p[2] for p in parts])
    return scores, grads, used


def gradient(
    fns: ModelFunctions, inputs: Sequence[np.ndarray], targets: np.ndarray, chunk_size: int = 1024
) -> Attributions:
    """Input gradients of each example's target score.

    inputs: one float32 array per model input, (B, *shape_i); targets: int32 (B,), < 0 for the
    argmax class. Returns attributions one (B, *shape_i) float32 array per input, with the targets
    used and their scores.
    """
    scores, grads, used = batched_gradients(fns, inputs, targets, chunk_size)
    return Attributions(attributions=grads, targets=used, target_scores=scores)
