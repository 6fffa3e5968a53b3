"""Mergeable statistics of rows of numbers: grouped moments and a uniform bottom-k sample.

Both merge exactly in any order (what a Beam combiner needs), and are computed per batch with a
handful of vectorised numpy calls, not per row.

- `Moments`: count, mean, M2 (sum of squared deviations) and sum |x| per column, float64, merged
  with Chan et al.'s parallel update, so the variance does not suffer from the cancellation of
  sum(x^2) - n mean^2.
- `RowSample`: at most k rows chosen uniformly at random, by keeping the k smallest random
  priorities (bottom-k sampling). Quantiles read from it are approximate: for a sample of k rows
  the rank of the sample q-quantile has standard deviation sqrt(q(1-q)/k) <= 0.5/sqrt(k) (1.1 % at
  k = 2,048), and they are exact when a group has at most k rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Moments", "RowSample", "grouped_moments", "group_rows"]


@dataclass
class Moments:
    """Per-column moments of n rows: mean (D,), m2 (D,) sum of squared deviations, abs_sum (D,)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    abs_sum: np.ndarray

    @classmethod
    def empty(cls, width: int) -> "Moments":
        zeros = np.zeros(width, dtype=np.float64)
        return cls(0, zeros, zeros.copy(), zeros.copy())

    def merge(self, other: "Moments") -> "Moments":
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean  # (D,)
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + delta * delta * (self.count * other.count / count)
        return Moments(count, mean, m2, self.abs_sum + other.abs_sum)

    @property
    def mean_abs(self) -> np.ndarray:
        return self.abs_sum / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0); 0 for fewer than 2 rows."""
        if self.count < 2:
            return np.zeros_like(self.mean)
        return np.sqrt(np.maximum(self.m2, 0.0) / self.count)


def group_rows(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorts rows by group code. codes (R,) int -> (order (R,), group codes (G,), starts (G,))."""
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]) if len(codes) else np.zeros(0, int)
    return order, sorted_codes[starts], starts


def grouped_moments(values: np.ndarray, order: np.ndarray, starts: np.ndarray) -> list[Moments]:
    """Moments of each group of rows. values (R, D); order, starts from `group_rows`."""
    if len(order) == 0:
        return []
    x = values[order].astype(np.float64, copy=False)  # (R, D), grouped rows adjacent
    counts = np.diff(np.r_[starts, len(order)])  # (G,)
    means = np.add.reduceat(x, starts, axis=0) / counts[:, None]  # (G, D)
    deviations = x - np.repeat(means, counts, axis=0)  # (R, D)
    m2 = np.add.reduceat(deviations * deviations, starts, axis=0)  # (G, D)
    abs_sum = np.add.reduceat(np.abs(x), starts, axis=0)  # (G, D)
    return [Moments(int(counts[g]), means[g], m2[g], abs_sum[g]) for g in range(len(starts))]


@dataclass
class RowSample:
    """A uniform sample of at most `capacity` rows: priorities (k,) in [0, 1) and the rows' values
    (k, D). The rows kept are those with the smallest priorities."""

    capacity: int
    priorities: np.ndarray
    values: np.ndarray

    @classmethod
    def empty(cls, capacity: int, width: int) -> "RowSample":
        return cls(capacity, np.zeros(0), np.zeros((0, width)))

    @classmethod
    def of(cls, capacity: int, priorities: np.ndarray, values: np.ndarray) -> "RowSample":
        """priorities (R,), values (R, D): keeps the `capacity` rows of smallest priority."""
        if len(priorities) > capacity:
            keep = np.argpartition(priorities, capacity - 1)[:capacity]
            priorities, values = priorities[keep], values[keep]
        return cls(capacity, priorities, values)

    def merge(self, other: "RowSample") -> "RowSample":
        return RowSample.of(
            self.capacity, np.concatenate([self.priorities, other.priorities]), np.concatenate([self.values, other.values])
        )

    def quantiles(self, qs: np.ndarray, column: Optional[int] = None) -> np.ndarray:
        """Sample quantiles (len(qs), D), or (len(qs),) of one column; NaN rows are ignored
        (all-NaN or empty: NaN)."""
        values = self.values if column is None else self.values[:, column : column + 1]
        result = np.full((len(qs), values.shape[1]), np.nan)
        for d in range(values.shape[1]):
            finite = values[:, d][np.isfinite(values[:, d])]
            if len(finite):
                result[:, d] = np.quantile(finite, qs)
        return result[:, 0] if column is not None else result
