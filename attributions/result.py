"""What every attribution method returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Attributions", "relative_delta", "RELATIVE_DELTA_EPSILON"]

# Floor on |F(x) - F(baseline)| in the relative completeness error, so that a row whose output did
# not move does not divide by ~0.
RELATIVE_DELTA_EPSILON = 1e-6


@dataclass(frozen=True)
class Attributions:
    """Per-example attributions for a batch of B examples.

    attributions: tuple, one float32 array per model input, each (B, *input_shape).
    convergence_delta: float32 (B,) for path methods: sum(attributions) - (F(x) - F(baseline));
      None for methods without a completeness axiom (gradient, gradient x input, SmoothGrad).
    output_change: float32 (B,), F(x) - F(baseline) (or F(x) - E[F(background)]); None as above.
    stderr: float32 (B,) for Monte-Carlo methods that report it (expected gradients): the largest
      per-feature standard error of the row's attributions; None otherwise.
    targets, target_scores: int32 / float32 (B,), the output index explained and F(x)[target],
      from methods that compute them anyway (gradient methods, where targets < 0 mean the argmax).
    """

    attributions: tuple
    convergence_delta: Optional[np.ndarray] = None
    output_change: Optional[np.ndarray] = None
    stderr: Optional[np.ndarray] = None
    targets: Optional[np.ndarray] = None
    target_scores: Optional[np.ndarray] = None


def relative_delta(delta: np.ndarray, output_change: np.ndarray) -> np.ndarray:
    """|delta| / max(|F(x) - F(baseline)|, 1e-6), float32 (B,). Flag rows above 0.05."""
    denom = np.maximum(np.abs(output_change), RELATIVE_DELTA_EPSILON)
    return (np.abs(delta) / denom).astype(np.float32)


def attribution_sums(attributions: tuple) -> np.ndarray:
    """Sum of every attribution of each example over all inputs, float64 (B,)."""
    total = 0.0
    for attr in attributions:
        total = total + attr.reshape(attr.shape[0], -1).sum(axis=1, dtype=np.float64)
    return np.asarray(total, dtype=np.float64)
