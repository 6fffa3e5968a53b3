"""Poisson bootstrap replicates of the summaries, computed in the same pass and merged like them.

Records are hashed by key into BUCKETS random groups; replicate b gives bucket k the weight
w_kb ~ Poisson(1), a pure function of k and b (a counter-based hash, not a random stream). A
replicate of a group's mean is then sum_k w_kb S_k / sum_k w_kb n_k over the group's bucket sums
S_k and counts n_k: the Poisson bootstrap (Hanley & MacGibbon 2006; Chamandy et al. 2012, who
seed each record's weights from its id to bootstrap streams at Google's scale) applied to random
groups of records rather than to single records. Records are independent draws and the groups
random, so the groups are independent draws too and the replicate spread estimates the same
sampling variance (linearised: sum_k (S_k - mean n_k)^2 = sum_r (x_r - mean)^2 up to the
cross terms, which average to 0); what it buys is that a batch adds to B x K sums through
its per-bucket totals (one sort and a reduceat), and the B replicates are formed once per group
at the end: B costs nothing per row. A record lands in the same bucket whatever bundle, worker or
batch it is in, so merging in any order gives the same replicates; the rows of one record (a
top_k run) share its key and bucket, so records are resampled, not rows.

Pure numpy; the accumulator (audit.summary_accumulator) keeps one (K, 2F + 1) block of bucket
sums per group: sum |a_j|, sum a_j, count.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

__all__ = [
    "DEFAULT_REPLICATES", "MAX_REPLICATES", "BUCKETS", "SLICE_BOOTSTRAP_BYTES", "slices_bootstrapped", "key_hashes", "buckets_of", "poisson_weights", "replicate_sums",
    "replicate_means", "percentile_interval",
]

# 200 replicates: a 95 % percentile interval read between the 5th and 6th and the 195th and 196th
# ordered replicates, a bootstrap standard error within about 1/sqrt(2B) = 5 % of itself. They
# are formed once per group at the end (B x K x (2F + 1) multiply-adds), not per row.
DEFAULT_REPLICATES = 200
MAX_REPLICATES = 10000
# Random groups of records: each batch adds its per-bucket sums; enough buckets that the
# variance estimate from them is within ~1/sqrt(2 x 256) = 4 % of the record-level one.
BUCKETS = 256
# Slice groups get bucket sums only while all of them fit in this much per accumulator (each holds
# BUCKETS x (2F + 1) float64 per group: 1,000 slice values of 300 features would need 1.2 GB);
# whole-run, class and rank groups always do. Decided from the settings, so every bundle agrees.
SLICE_BOOTSTRAP_BYTES = 256 << 20

_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)
# Poisson(1) by inverse CDF from 16-bit uniforms: _POISSON_OF[u] is the weight of u in 0..65535
# (u / 65536 against the CDF; P(k >= 8) = 1e-5 is below the resolution and folds into k = 7).
_POISSON_CDF = np.cumsum([np.exp(-1.0) / float(np.prod(np.arange(1, k + 1))) for k in range(17)])
_POISSON_OF = np.searchsorted(_POISSON_CDF, (np.arange(1 << 16) + 0.5) / (1 << 16), side="right").astype(np.float64)


def key_hashes(keys) -> np.ndarray:
    """(R,) uint64: a 64-bit hash of each key, the same on every worker and in any batch. keys: an
    Arrow array (or chunked array) or a sequence; integer keys hash their value, others their UTF-8
    text (a polynomial hash over the bytes, vectorised over Arrow's buffers, then mixed)."""
    array = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys if isinstance(keys, pa.Array) else pa.array(list(keys))
    if pa.types.is_integer(array.type):
        values = array.fill_null(0).cast(pa.int64()).to_numpy(zero_copy_only=False).view(np.uint64)
        return _splitmix64(values)
    text = array.cast(pa.large_string()).fill_null("")
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8) if text.buffers()[2] is not None else np.zeros(0, np.uint8)
    start, end = int(offsets[0]), int(offsets[-1])
    data, offsets = data[start:end].astype(np.uint64), offsets - start
    lengths = np.diff(offsets)
    position = np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1], lengths)  # (N,) index within its key
    with np.errstate(over="ignore"):
        terms = (data + np.uint64(1)) * _powers(int(lengths.max(initial=0)))[position]  # (N,) wrapping
        sums = np.add.reduceat(terms, offsets[:-1][lengths > 0]) if len(data) else np.zeros(0, np.uint64)
    hashed = np.zeros(len(lengths), dtype=np.uint64)
    hashed[lengths > 0] = sums
    return _splitmix64(hashed ^ (lengths.astype(np.uint64) << np.uint64(48)))


def _powers(length: int) -> np.ndarray:
    """(length,) uint64: P^0, P^1, ... modulo 2^64 for the polynomial key hash (P odd)."""
    powers = np.full(max(length, 1), np.uint64(0x100000001B3), dtype=np.uint64)
    powers[0] = np.uint64(1)
    with np.errstate(over="ignore"):
        return np.cumprod(powers, dtype=np.uint64)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        return x ^ (x >> np.uint64(31))


def poisson_weights(hashes: np.ndarray, replicates: int) -> np.ndarray:
    """(R, B) float64 Poisson(1) weights: item r's weight in replicate b depends only on hashes[r]
    and b. hashes: (R,) uint64. Each 64-bit hash of (key, b // 4) gives four 16-bit
    uniforms (a quarter of the hashing; the same on every platform: taken by shifts, not views)."""
    words = -(-replicates // 4)
    counters = np.arange(words, dtype=np.uint64)[None, :]  # (1, W)
    with np.errstate(over="ignore"):
        mixed = _splitmix64((np.asarray(hashes, dtype=np.uint64)[:, None] * np.uint64(0xD1342543DE82EF95)) ^ counters)  # (R, W)
    quarters = np.stack([(mixed >> np.uint64(16 * i)) & np.uint64(0xFFFF) for i in range(4)], axis=2)  # (R, W, 4)
    uniform16 = quarters.reshape(len(mixed), 4 * words)[:, :replicates].astype(np.intp)  # (R, B) in 0..65535
    return _POISSON_OF[uniform16]


def slices_bootstrapped(features: int, slice_columns: int, max_slice_values: int) -> bool:
    """Whether slice groups keep bootstrap sums: all of them at most SLICE_BOOTSTRAP_BYTES."""
    return slice_columns * (max_slice_values + 1) * BUCKETS * (2 * features + 1) * 8 <= SLICE_BOOTSTRAP_BYTES


def buckets_of(keys) -> np.ndarray:
    """(R,) int64 in 0..BUCKETS-1: each key's random group (the top byte of its hash)."""
    return (key_hashes(keys) >> np.uint64(56)).astype(np.int64) % BUCKETS


def replicate_sums(bucket_sums: np.ndarray, replicates: int) -> np.ndarray:
    """(BUCKETS, D) per-bucket sums of one group -> (B, D) replicate sums, bucket k weighted
    Poisson(1) in replicate b (the same weights for every group and run)."""
    return _bucket_weights(replicates).T @ bucket_sums


@functools.lru_cache(maxsize=4)
def _bucket_weights(replicates: int) -> np.ndarray:
    """(K, B) the buckets' Poisson weights, made once per B (every group of a summary uses them:
    a run of 1,000 slice groups drew them 2,000 times, 0.85 ms each). Read-only."""
    weights = poisson_weights(np.arange(BUCKETS, dtype=np.uint64) + np.uint64(0x5EED), replicates)
    weights.flags.writeable = False
    return weights


def replicate_means(sums: np.ndarray, features: int) -> tuple[np.ndarray, np.ndarray]:
    """sums (B, 2F + 1) of one group (sum |a_j|, sum a_j, count) -> (B, F) replicate mean
    |attribution| and (B, F) mean attribution; a replicate that weighs no record is NaN."""
    weight = sums[:, 2 * features : 2 * features + 1]  # (B, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(weight > 0, 1.0 / weight, np.nan)
    return sums[:, :features] * scale, sums[:, features : 2 * features] * scale


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> np.ndarray:
    """(2, ...) the (1 - level)/2 and (1 + level)/2 quantiles over axis 0, NaN replicates left out."""
    tail = (1.0 - level) / 2.0
    return np.nanquantile(replicates, [tail, 1.0 - tail], axis=0)
