"""Mergeable statistics of rows of numbers: grouped moments and a uniform bottom-k sample.

Both merge exactly in any order (what a Beam combiner needs), and are computed per batch with a
handful of vectorised numpy calls, not per row.

- `Moments`: count, mean, M2 (sum of squared deviations) and sum |x| per column, float64, merged
  with Chan et al.'s parallel update; within a batch (`grouped_moments`) squares are summed about
  the batch's first row, so the variance does not suffer the cancellation of sum(x^2) - n mean^2.
- `RowSample`: at most k rows chosen uniformly at random, by keeping the k smallest random
  priorities (bottom-k sampling). Quantiles read from it are approximate: for a sample of k rows
  the rank of the sample q-quantile has standard deviation sqrt(q(1-q)/k) <= 0.5/sqrt(k) (1.1 % at
  k = 2,048), and they are exact when a group has at most k rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["Moments", "RowSample", "StackedMoments", "grouped_moments", "stacked_moments"]


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

    def columns(self, start: int, end: int) -> "Moments":
        """The moments of columns [start, end)."""
        return Moments(self.count, self.mean[start:end], self.m2[start:end], self.abs_sum[start:end])

    @property
    def mean_abs(self) -> np.ndarray:
        return self.abs_sum / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof=0); 0 for fewer than 2 rows."""
        if self.count < 2:
            return np.zeros_like(self.mean)
        return np.sqrt(np.maximum(self.m2, 0.0) / self.count)


def grouped_moments(values: np.ndarray, groupings: list[tuple[np.ndarray, int]]) -> list[list[Moments]]:
    """Moments of the groups of several groupings of one batch's rows, at once.

    values (R, D); groupings: (codes (R,) ints in [0, G), G) each. Returns, per grouping, G
    Moments (an empty group has count 0). See `stacked_moments` for how they are computed.
    """
    offsets = np.cumsum([0] + [groups for _, groups in groupings])
    stacked = stacked_moments([np.asarray(values)], [codes + offset for (codes, _), offset in zip(groupings, offsets)], int(offsets[-1]))
    return [[stacked.row(g) for g in range(start, end)] for start, end in zip(offsets[:-1], offsets[1:])]


@dataclass
class StackedMoments:
    """The moments of G groups as arrays: counts (G,) int64; means, m2, abs_sums (G, D) float64."""

    counts: np.ndarray
    means: np.ndarray
    m2: np.ndarray
    abs_sums: np.ndarray

    @classmethod
    def empty(cls, groups: int, width: int) -> "StackedMoments":
        zeros = np.zeros((groups, width), dtype=np.float64)
        return cls(np.zeros(groups, dtype=np.int64), zeros, zeros.copy(), zeros.copy())

    def row(self, g: int, start: int = 0, end: Optional[int] = None) -> Moments:
        """Group g's moments of columns [start, end), copied."""
        columns = slice(start, end)
        return Moments(int(self.counts[g]), self.means[g, columns].copy(), self.m2[g, columns].copy(), self.abs_sums[g, columns].copy())

    def merge_into(self, groups: np.ndarray, other: "StackedMoments") -> None:
        """Merges other's group i into this one's group groups[i], in place (groups distinct):
        `Moments.merge`'s arithmetic, element for element, on every group at once."""
        mine, theirs = self.counts[groups], other.counts  # (P,)
        count = mine + theirs
        safe = np.maximum(count, 1)
        delta = other.means - self.means[groups]  # (P, D)
        self.means[groups] = self.means[groups] + delta * (theirs / safe)[:, None]
        self.m2[groups] = self.m2[groups] + other.m2 + delta * delta * (mine * theirs / safe)[:, None]
        self.abs_sums[groups] = self.abs_sums[groups] + other.abs_sums
        self.counts[groups] = count

    def grown(self, groups: int) -> "StackedMoments":
        """The same moments with room for `groups` groups (the new ones empty)."""
        more = groups - len(self.counts)
        if more <= 0:
            return self
        pad = lambda a: np.concatenate([a, np.zeros((more, *a.shape[1:]), dtype=a.dtype)])  # noqa: E731
        return StackedMoments(pad(self.counts), pad(self.means), pad(self.m2), pad(self.abs_sums))


def stacked_moments(blocks: list[np.ndarray], codes: list[np.ndarray], groups: int) -> StackedMoments:
    """The moments of `groups` groups of one batch's rows, of the columns of `blocks` side by side
    ((R, D_i) each, D = sum D_i). codes: (R,) ints in [0, groups) each, one array per grouping
    (each row adds to one group of each; the groupings' groups must be distinct).

    The sums of x - x_0, |x| and (x - x_0)^2 ((3, R, D), each contiguous) are taken per cell of
    the groupings' joint partition (e.g. overall x class: one cell per class), with the rows
    sorted by cell: one float32 BLAS product with a vector of ones per cell (R x D additions in
    all, whatever the number of groups). A group's sums are its cells' sums, added in float64.
    Past `_MOST_CELLS` cells (many slice values) the per-cell calls would cost more than one
    (groups, R) one-hot matrix product, which is used instead. Float32 accumulation over one
    batch (~1e-7 relative; measured 2-4e-7 against float64 on 4,096 rows); batches are merged in
    float64. Squares are summed about one row x_0 of the batch, so they do not cancel like raw x^2
    sums when |mean| >> std.
    """
    rows = len(blocks[0])
    width = sum(block.shape[1] for block in blocks)
    if rows == 0:
        return StackedMoments.empty(groups, width)
    cells = _rows_by_cell(codes, groups)  # (order (R,), starts (C,)) or None
    terms = np.empty((3, rows, width), dtype=np.float32)
    shifted, absolute, squares = terms  # (R, D) each
    side_by_side = shifted if cells is None else squares  # (R, D); squares is scratch until np.square fills it
    start = 0
    for block in blocks:
        side_by_side[:, start : start + block.shape[1]] = block
        start += block.shape[1]
    if cells is not None:
        np.take(side_by_side, cells[0], axis=0, out=shifted)  # rows by cell
    reference = shifted[0].astype(np.float64)  # (D,)
    np.abs(shifted, out=absolute)
    shifted -= shifted[0].copy()
    np.square(shifted, out=squares)
    with _one_blas_thread():
        if cells is None:
            membership = np.zeros((groups, rows), dtype=np.float32)  # (G, R) one-hot
            for group_of_row in codes:
                membership[group_of_row, np.arange(rows)] = 1.0
            counts = membership.sum(axis=1, dtype=np.float64)  # (G,)
            sums, abs_sums, square_sums = np.matmul(membership, terms).astype(np.float64)  # (G, D) each
        else:
            order, starts = cells
            ends = np.r_[starts[1:], rows]
            ones = np.ones(int((ends - starts).max()), dtype=np.float32)
            cell_sums = np.stack([np.matmul(ones[: end - begin], terms[:, begin:end]) for begin, end in zip(starts.tolist(), ends.tolist())], axis=1)  # (3, C, D)
            membership = np.zeros((groups, len(starts)))  # (G, C): the cells of each group
            for group_of_row in codes:
                membership[group_of_row[order[starts]], np.arange(len(starts))] = 1.0
            counts = membership @ (ends - starts).astype(np.float64)  # (G,)
            sums, abs_sums, square_sums = np.matmul(membership, cell_sums.astype(np.float64))  # (G, D) each
    shifted_means = sums / np.maximum(counts, 1.0)[:, None]
    m2 = np.maximum(square_sums - sums * shifted_means, 0.0)
    return StackedMoments(counts.astype(np.int64), shifted_means + reference, m2, abs_sums)


_MOST_CELLS = 32  # per-cell products cost ~4 us of call each: past this, one one-hot product is cheaper


def _rows_by_cell(codes: list[np.ndarray], groups: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The rows sorted by cell of the groupings' joint partition, (order (R,), starts (C,): where
    each cell's rows begin in `order`), or None past `_MOST_CELLS` cells."""
    key = np.zeros(len(codes[0]), dtype=np.int64)  # (R,) the joint cell, mixed radix
    for group_of_row in codes:
        if int(key.max()) >= (1 << 62) // groups:  # keep the radix within int64
            key = np.unique(key, return_inverse=True)[1].reshape(-1)
        key = key * groups + group_of_row
    if int(key.max()) < 1 << 15:
        key = key.astype(np.int16)  # sorted by radix, ~5x faster than int64
    order = np.argsort(key, kind="stable")  # (R,)
    sorted_keys = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])  # (C,)
    return (order, starts) if len(starts) <= _MOST_CELLS else None


_blas = None


def _one_blas_thread():
    """BLAS on one thread for these small products: a multi-threaded BLAS spins its threads
    after each call and took the cores from the model's own work (measured: 1M-record MLP run
    11.4 s with the default threads, 8.8 s with one)."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


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

    @property
    def bound(self) -> Optional[float]:
        """The largest priority kept once the sample is full (no row at or above it can enter a
        merge with this sample), else None."""
        return float(self.priorities.max()) if len(self.priorities) >= self.capacity else None

    def below(self, bound: Optional[float]) -> "RowSample":
        """The rows whose priority is below `bound` (all of them for None)."""
        if bound is None:
            return self
        keep = self.priorities < bound
        return self if keep.all() else RowSample(self.capacity, self.priorities[keep], self.values[keep])

    def merge(self, other: "RowSample") -> "RowSample":
        # Rows that cannot beat a full side's largest priority are dropped before copying.
        mine, theirs = self.below(other.bound), other.below(self.bound)
        if len(theirs.priorities) == 0:
            return mine
        return RowSample.of(
            self.capacity, np.concatenate([mine.priorities, theirs.priorities]), np.concatenate([mine.values, theirs.values])
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
