"""What every attribution method returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = [
    "Attributions", "relative_delta", "RELATIVE_DELTA_EPSILON", "completeness_error", "attribution_mass",
    "COMPLETENESS_FLOOR", "MONTE_CARLO_Z", "COMPLETENESS_MEASURE",
]

# Floor on |F(x) - F(baseline)| in the relative completeness error, so that a row whose output did
# not move does not divide by ~0.
RELATIVE_DELTA_EPSILON = 1e-6
# Absolute floor of the completeness error's scale: a row whose output did not move and whose
# attributions are all ~0 (an input equal to its baseline) reads 0, not 0/0. float32 outputs near
# 1 are resolved to ~1e-7, so a smaller scale would only measure rounding.
COMPLETENESS_FLOOR = 1e-6
# Expected gradients: a delta within this many Monte-Carlo standard errors of Σattr is what
# sampling explains (3: a row of pure sampling noise is flagged with probability 0.3 %).
MONTE_CARLO_Z = 3.0
# What `completeness_error` is, in the words the summaries, the manifest and the report show.
COMPLETENESS_MEASURE = (
    "completeness_error = |delta| / max(|F(x) - F(baseline)|, sum_i |attr_i|, 1e-6), delta = sum(attr) - (F(x) - F(baseline)); "
    "expected gradients: max(|delta| - 3 x the Monte-Carlo standard error of sum(attr), 0) / the same scale"
)


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
    # float32 (B,) path methods: `completeness_error` (below), the measure rows, summaries, the
    # report and compare all use.
    completeness_error: Optional[np.ndarray] = None
    # float32 (B,) expected gradients: the Monte-Carlo standard error of sum(attributions).
    delta_stderr: Optional[np.ndarray] = None
    # Completeness-driven integrated gradients only (attributions.adaptive_ig): int32 (B,)
    # gradient evaluations spent on the row and bool (B,) completeness_error <= target.
    steps_used: Optional[np.ndarray] = None
    completeness_met: Optional[np.ndarray] = None
    # Grad-CAM only (attributions.grad_cam): float32 (B, h, w) maps at the layer's resolution.
    layer_maps: Optional[np.ndarray] = None


def relative_delta(delta: np.ndarray, output_change: np.ndarray) -> np.ndarray:
    """|delta| / max(|F(x) - F(baseline)|, 1e-6), float32 (B,). Flag rows above 0.05."""
    denom = np.maximum(np.abs(output_change), RELATIVE_DELTA_EPSILON)
    return (np.abs(delta) / denom).astype(np.float32)


def attribution_mass(attributions: tuple) -> np.ndarray:
    """Sum of |attribution| of each example over all inputs, float64 (B,)."""
    total = 0.0
    for attr in attributions:
        total = total + np.abs(attr.reshape(attr.shape[0], -1)).sum(axis=1, dtype=np.float64)
    return np.asarray(total, dtype=np.float64)


def completeness_error(
    delta: np.ndarray, output_change: np.ndarray, mass: np.ndarray, delta_stderr: Optional[np.ndarray] = None
) -> np.ndarray:
    """The completeness error every report uses, float32 (B,):

        completeness_error = |delta| / max(|F(x) - F(baseline)|, sum_i |attr_i|, 1e-6)

    i.e. the unexplained part as a share of what the row's attributions say (their L1 mass) or of
    the output change, whichever is larger. Unlike |delta| / |F(x) - F(baseline)| it does not
    explode when the output barely moves (a row whose large attributions cancel, F(x) ~ F(b)), and
    it is bounded: |delta| <= sum|attr| + |dF| <= 2 x scale, so it lies in [0, 2]. Where the
    attributions do not cancel (all one sign) it is the relative error |delta| / |dF| (when
    sum(attr) falls short of dF) or that over (1 + itself) (when it overshoots).

    With delta_stderr (Monte-Carlo methods: the standard error of sum(attributions)), only the part
    of |delta| beyond MONTE_CARLO_Z standard errors counts: max(|delta| - 3 se, 0) / scale, so
    sampling noise alone reads 0 and only what sampling cannot explain is flagged.

    delta, output_change, mass: (B,) (mass from `attribution_mass`); delta_stderr: (B,) or None.
    """
    delta = np.abs(np.asarray(delta, dtype=np.float64))
    if delta_stderr is not None:
        delta = np.maximum(delta - MONTE_CARLO_Z * np.asarray(delta_stderr, dtype=np.float64), 0.0)
    scale = np.maximum(np.maximum(np.abs(np.asarray(output_change, dtype=np.float64)), mass), COMPLETENESS_FLOOR)
    return (delta / scale).astype(np.float32)


def attribution_sums(attributions: tuple) -> np.ndarray:
    """Sum of every attribution of each example over all inputs, float64 (B,)."""
    total = 0.0
    for attr in attributions:
        total = total + attr.reshape(attr.shape[0], -1).sum(axis=1, dtype=np.float64)
    return np.asarray(total, dtype=np.float64)
