"""Rank agreement of two importance vectors: Spearman's rho, Kendall's tau-b, top-k overlap.

Plain numpy (no scipy at run time). Kendall's tau-b uses Knight's O(n log n) method (sort by x
then y; discordant pairs are the inversions of y), with inversions counted block-wise, so the
per-pixel importance of a large image stays cheap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["average_ranks", "spearman", "kendall_tau_b", "top_k_overlap"]


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank. values (n,) -> (n,) float64."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # (u,) rank of the last of each distinct value
    return (ends - (counts - 1) / 2.0)[inverse.reshape(-1)]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of average ranks; NaN when either vector is constant or n < 2."""
    if len(a) < 2:
        return float("nan")
    ra, rb = average_ranks(a) - (len(a) + 1) / 2.0, average_ranks(b) - (len(b) + 1) / 2.0
    denominator = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denominator) if denominator > 0 else float("nan")


def _tied_pairs(values: np.ndarray) -> int:
    _, counts = np.unique(values, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def _inversions(values: np.ndarray, block: int = 2048) -> int:
    """Pairs i < j with values[i] > values[j]."""
    total = 0
    seen = np.zeros(0, dtype=values.dtype)  # sorted values before the current block
    for start in range(0, len(values), block):
        chunk = values[start : start + block]
        total += int(len(seen) * len(chunk) - np.searchsorted(seen, chunk, side="right").sum())
        total += int(np.triu(chunk[:, None] > chunk[None, :], k=1).sum())
        seen = np.sort(np.concatenate([seen, chunk]))
    return total


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties in either vector accounted for); NaN when either is constant."""
    n = len(a)
    if n < 2:
        return float("nan")
    order = np.lexsort((b, a))  # by a, then b
    x, y = a[order], b[order]
    pairs = n * (n - 1) // 2
    ties_x, ties_y = _tied_pairs(x), _tied_pairs(y)
    joint = _tied_pairs(np.unique(np.column_stack([x, y]), axis=0, return_inverse=True)[1].reshape(-1))
    discordant = _inversions(y)
    concordant_minus_discordant = pairs - ties_x - ties_y + joint - 2 * discordant
    denominator = np.sqrt(float(pairs - ties_x) * float(pairs - ties_y))
    return float(concordant_minus_discordant / denominator) if denominator > 0 else float("nan")


def ndcg(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Normalised discounted cumulative gain of `candidate`'s ranking (descending) with
    `reference`'s values as the relevance: sum_i rel[order_b[i]] / log2(i + 2) over its ideal
    (the reference's own order), as SageMaker Clarify scores attribution drift (it alerts below
    0.9). 1 for the same order; NaN when every relevance is 0. Ties in `candidate` keep position."""
    relevance = np.asarray(reference, dtype=np.float64)
    if len(relevance) == 0:
        return float("nan")
    discounts = 1.0 / np.log2(np.arange(len(relevance)) + 2.0)  # (n,)
    ideal = float(np.sort(relevance)[::-1] @ discounts)
    if ideal <= 0:
        return float("nan")
    order = np.argsort(-np.asarray(candidate, dtype=np.float64), kind="stable")
    return float(relevance[order] @ discounts / ideal)


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """|top-k of a ∩ top-k of b| / k, the top k by value (ties broken by position)."""
    k = min(k, len(a))
    if k == 0:
        return float("nan")
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(top_a & top_b) / k
