"""Dataset-level importance of tokens and categories: per (explained class, token id) totals of the
position attributions of a token or categorical input, accumulated batch by batch and merged
exactly (no Beam, no TensorFlow).

A layer-attributed input (an embedding's ids, one value per position) has one attribution per
position; the position itself means little across rows (token 3 of one sentence is unrelated to
token 3 of another), the token at it does. So per explained class and token id:

    count     positions holding the token (padding positions excluded)
    sum       sum of their attributions           -> mean = sum / count
    sum_abs   sum of their |attributions|         -> mean_abs = sum_abs / count

The ids are bounded by the model (an embedding's input_dim, a vocabulary's size), so the totals
are exact and bounded: at most (classes x vocabulary) entries, kept as sorted arrays; merging two
parts in any order gives the same totals (integer counts; float64 sums up to rounding).
`top_tokens` reads the evidence for and against a class: the tokens with the highest and lowest
mean attribution among those seen at least `min_count` times (rare tokens' means are noise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from audit.rank import spearman, top_k_overlap

__all__ = ["TokenTotals", "top_tokens", "token_rank_agreement"]


@dataclass(frozen=True)
class TokenTotals:
    """Totals of one input's position attributions per (class, token id), sorted by (class, id).

    classes, ids: (K,) int64; counts: (K,) int64; sums, sums_abs: (K,) float64.
    """

    classes: np.ndarray
    ids: np.ndarray
    counts: np.ndarray
    sums: np.ndarray
    sums_abs: np.ndarray

    @classmethod
    def empty(cls) -> "TokenTotals":
        ints, floats = np.zeros(0, np.int64), np.zeros(0, np.float64)
        return cls(ints, ints, ints, floats, floats)

    @classmethod
    def of_batch(cls, targets: np.ndarray, ids: np.ndarray, attributions: np.ndarray, valid: Optional[np.ndarray] = None) -> "TokenTotals":
        """targets: (R,) explained class per row; ids: (R, T) token id per position; attributions:
        (R, T) one value per position; valid: (R, T) bool, False at padding (default: all valid).
        Rows whose attributions are not finite must be left out by the caller."""
        ids = np.asarray(ids, dtype=np.int64)
        attributions = np.asarray(attributions, dtype=np.float64)
        if ids.shape != attributions.shape or ids.ndim != 2:
            raise ValueError(
                f"token ids {ids.shape} and attributions {attributions.shape} must both be (rows, positions)."
            )
        valid = np.ones(ids.shape, bool) if valid is None else np.asarray(valid, bool)
        classes = np.broadcast_to(np.asarray(targets, np.int64)[:, None], ids.shape)  # (R, T)
        return cls.from_entries(classes[valid], ids[valid], np.ones(int(valid.sum()), np.int64), attributions[valid], np.abs(attributions[valid]))

    @classmethod
    def from_entries(cls, classes, ids, counts, sums, sums_abs) -> "TokenTotals":
        """Totals from (N,) entries (class, id, count, sum, sum_abs); entries with equal (class, id)
        are added together, the result sorted by (class, id)."""
        if not len(ids):
            return cls.empty()
        pairs = np.stack([classes, ids], axis=1)  # (N, 2)
        keys, inverse = np.unique(pairs, axis=0, return_inverse=True)  # (K, 2), (N,)
        inverse = inverse.reshape(-1)
        k = len(keys)
        return cls(
            keys[:, 0].copy(), keys[:, 1].copy(),
            np.bincount(inverse, weights=counts, minlength=k).astype(np.int64),
            np.bincount(inverse, weights=sums, minlength=k),
            np.bincount(inverse, weights=sums_abs, minlength=k),
        )

    def merge(self, other: "TokenTotals") -> "TokenTotals":
        return TokenTotals.from_entries(*(np.concatenate([a, b]) for a, b in zip(self._arrays(), other._arrays())))

    def _arrays(self) -> tuple:
        return self.classes, self.ids, self.counts, self.sums, self.sums_abs

    @property
    def positions(self) -> int:
        return int(self.counts.sum())

    def for_class(self, target: Optional[int]) -> "TokenTotals":
        """One class's entries, or every class pooled per token (target None)."""
        if target is not None:
            keep = self.classes == target
            return TokenTotals(*(a[keep] for a in self._arrays()))
        return TokenTotals.from_entries(np.zeros_like(self.ids), self.ids, self.counts, self.sums, self.sums_abs)


def top_tokens(totals: TokenTotals, k: int = 10, min_count: int = 5, vocabulary: Optional[Sequence[str]] = None) -> dict[str, list[dict]]:
    """{'for': the k tokens of highest mean attribution, 'against': the k of lowest} among tokens
    seen at least `min_count` times in `totals` (typically one class's: TokenTotals.for_class).
    Each: {'id', 'token' (from `vocabulary` when given, else the id as text), 'count', 'mean',
    'mean_abs'}. Ties are broken by id (ascending)."""
    keep = totals.counts >= min_count
    ids, counts = totals.ids[keep], totals.counts[keep]
    means, means_abs = totals.sums[keep] / np.maximum(counts, 1), totals.sums_abs[keep] / np.maximum(counts, 1)

    def entries(order: np.ndarray) -> list[dict]:
        return [{
            "id": int(ids[i]),
            "token": _token(vocabulary, int(ids[i])),
            "count": int(counts[i]),
            "mean": float(means[i]),
            "mean_abs": float(means_abs[i]),
        } for i in order[:k]]

    descending = np.lexsort((ids, -means))  # last key first: mean descending, then id
    ascending = np.lexsort((ids, means))
    return {"for": entries(descending), "against": entries(ascending)}


def _token(vocabulary: Optional[Sequence[str]], token_id: int) -> str:
    if vocabulary is not None and 0 <= token_id < len(vocabulary):
        return str(vocabulary[token_id])
    return str(token_id)


def token_rank_agreement(a: TokenTotals, b: TokenTotals, min_count: int = 5, k: int = 10) -> dict:
    """How alike two runs' token importance is (for one class: pass TokenTotals.for_class of each).

    Over the tokens seen at least `min_count` times in both runs, importance = mean |attribution|:
    'tokens' compared, Spearman's rho of the importances (NaN with fewer than 2 tokens or a
    constant one), and the share of A's k most important of them that are among B's k most
    important ('top_k_overlap', NaN without tokens); ties broken by token id."""
    ia, ib = _importance(a, min_count), _importance(b, min_count)
    common = np.array(sorted(set(ia) & set(ib)), dtype=np.int64)  # ascending ids: ties by id
    va = np.array([ia[i] for i in common.tolist()], dtype=np.float64)
    vb = np.array([ib[i] for i in common.tolist()], dtype=np.float64)
    top = min(k, len(common))
    return {"tokens": len(common), "spearman": spearman(va, vb), "top_k": top, "top_k_overlap": top_k_overlap(va, vb, top)}


def _importance(totals: TokenTotals, min_count: int) -> dict[int, float]:
    keep = totals.counts >= min_count
    return dict(zip(totals.ids[keep].tolist(), (totals.sums_abs[keep] / totals.counts[keep]).tolist()))
