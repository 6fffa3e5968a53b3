"""Gradient x input: x * d F_target(x) / d x (equals IG with a zero baseline for linear models)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attributions.gradient import batched_gradients
from attributions.model_functions import ModelFunctions
from attributions.result import Attributions

__all__ = ["gradient_x_input"]


def gradient_x_input(
    fns: ModelFunctions, inputs: Sequence[np.ndarray], targets: np.ndarray, chunk_size: int = 1024
) -> Attributions:
    """inputs: one (B, *shape_i) array per model input; targets: int32 (B,), < 0 for the argmax
    class. Returns attributions one (B, *shape_i) float32 array per input, with the targets used
    and their scores."""
    scores, grads, used = batched_gradients(fns, inputs, targets, chunk_size)
    attributions = tuple((g * np.asarray(x, dtype=np.float32)).astype(np.float32) for g, x in zip(grads, inputs))
    return Attributions(attributions=attributions, targets=used, target_scores=scores)
