"""Baselines from the data, and how far a baseline lies from it (no Beam, no TensorFlow).

Integrated gradients explain f(x) - f(baseline). With the all-zeros baseline on tabular features
that sit far from zero, |x - 0| dominates the attributions: a feature's rank follows its offset
from zero, not the model (issue 25: on the wine data the top 4 by mean |attr| were the top 4 by
|mean| / std). A per-feature median (or mean) of a sample of the input puts the baseline inside
the data, so an attribution measures the move from a typical record.

Shapes: `rows` is (N, *shape) float for one model input, a baseline is (*shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["statistic_baseline", "FarFromData", "far_from_data", "ROBUST_SD_PER_MAD", "DATA_STATISTICS"]

DATA_STATISTICS = ("median", "mean")
# A normal distribution's standard deviation per median absolute deviation.
ROBUST_SD_PER_MAD = 1.4826


def statistic_baseline(rows: np.ndarray, statistic: str) -> np.ndarray:
    """(N, *shape) -> (*shape) float32: the per-feature median or mean of the rows (float64 sums)."""
    if statistic not in DATA_STATISTICS:
        raise ValueError(f"statistic {statistic!r} is not one of {DATA_STATISTICS}")
    if len(rows) == 0:
        raise ValueError("a data baseline needs at least one row; the sample is empty")
    values = np.asarray(rows, dtype=np.float64)
    result = np.median(values, axis=0) if statistic == "median" else values.mean(axis=0)
    return result.astype(np.float32)


@dataclass(frozen=True)
class FarFromData:
    """far: features whose baseline lies more than `robust_sds` robust standard deviations
    (1.4826 x MAD) from the sample's median (a feature constant in the sample: any other value);
    total: features; farthest: (flat index, robust distance) of the farthest, inf when constant."""

    far: int
    total: int
    farthest: tuple[int, float]
    robust_sds: float

    @property
    def share(self) -> float:
        return self.far / self.total if self.total else 0.0


def far_from_data(baseline: np.ndarray, rows: np.ndarray, robust_sds: float = 3.0) -> FarFromData:
    """How many features of `baseline` (*shape) lie far from `rows` (N, *shape); see FarFromData."""
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)  # (N, D)
    point = np.asarray(baseline, dtype=np.float64).reshape(-1)  # (D,)
    median = np.median(values, axis=0)
    spread = ROBUST_SD_PER_MAD * np.median(np.abs(values - median), axis=0)  # (D,)
    offset = np.abs(point - median)
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = np.where(spread > 0, offset / np.where(spread > 0, spread, 1.0), np.where(offset > 0, np.inf, 0.0))
    far = int(np.count_nonzero(distance > robust_sds))
    farthest = int(np.argmax(distance)) if distance.size else 0
    return FarFromData(far, int(distance.size), (farthest, float(distance[farthest]) if distance.size else 0.0), robust_sds)
