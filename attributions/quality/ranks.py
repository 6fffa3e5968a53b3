"""Spearman rank correlation of paired rows, ties given their average rank (as
scipy.stats.spearmanr): the correlation of two attribution maps, or of a map and |x - baseline|."""

from __future__ import annotations

import numpy as np

__all__ = ["average_ranks", "spearman_rows"]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """float64 (R, U): each row's ranks 1..U, tied values sharing the average of their ranks."""
    values = np.asarray(values, dtype=np.float64)
    ranks = np.empty(values.shape, dtype=np.float64)
    for row, v in enumerate(values):
        ordered = np.sort(v)
        below = np.searchsorted(ordered, v, side="left")  # values strictly smaller
        at_or_below = np.searchsorted(ordered, v, side="right")
        ranks[row] = (below + at_or_below + 1) / 2.0  # mean of ranks below+1 .. at_or_below
    return ranks


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 (R,): Spearman's rho of a[r] and b[r] for each row of two (R, U) arrays; NaN where
    either row is constant (no ranking to compare) or U < 2."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"spearman_rows takes two (rows, units) arrays of one shape; got {a.shape} and {b.shape}.")
    ra, rb = average_ranks(a), average_ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = (ra * rb).sum(axis=1) / denominator
    return np.where(denominator > 0, rho, np.nan)
