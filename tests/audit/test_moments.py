"""Mergeable moments and the bottom-k sample against numpy over all rows."""

import numpy as np

from audit.moments import Moments, RowSample, _rows_by_cell, grouped_moments, stacked_moments


def _moments_of(values):
    return grouped_moments(values, [(np.zeros(len(values), dtype=np.int64), 1)])[0][0]


def test_merged_moments_equal_numpy_over_all_rows_in_any_split():
    rng = np.random.default_rng(0)
    # a large mean (float32 sums of x^2 would lose the variance entirely), in float32 like attributions
    values = rng.normal(loc=1e4, scale=3.0, size=(1000, 4)).astype(np.float32).astype(np.float64)
    parts = [values[:1], values[1:377], values[377:378], values[378:]]
    merged = Moments.empty(4)
    for part in reversed(parts):
        merged = merged.merge(_moments_of(part))
    assert merged.count == 1000
    # float32 sums within a batch (~1e-7 relative), float64 across batches
    np.testing.assert_allclose(merged.mean, values.mean(axis=0), rtol=1e-7)
    np.testing.assert_allclose(merged.std, values.std(axis=0), rtol=1e-4)
    np.testing.assert_allclose(merged.mean_abs, np.abs(values).mean(axis=0), rtol=1e-6)


def test_grouped_moments_of_several_groupings_match_each_group_alone():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(200, 3)).astype(np.float32).astype(np.float64)
    codes = rng.integers(0, 5, size=200)
    other = rng.integers(0, 2, size=200)
    by_code, by_other = grouped_moments(values, [(codes, 6), (other, 2)])  # code 5 never occurs
    assert by_code[5].count == 0
    for grouping, labels in ((by_code, codes), (by_other, other)):
        for code, moments in enumerate(grouping):
            rows = values[labels == code]
            assert moments.count == len(rows)
            if len(rows):
                np.testing.assert_allclose(moments.mean, rows.mean(axis=0), rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(moments.std, rows.std(axis=0), rtol=1e-5)


def test_stacked_moments_per_cell_and_by_one_hot_product_equal_float64_sums():
    # overall x 4 classes = 4 cells (sums per cell); x 40 slice values = more than _MOST_CELLS
    # cells (one one-hot product instead). Both must give every group's moments.
    rng = np.random.default_rng(4)
    rows = 600
    blocks = [rng.normal(loc=50.0, size=(rows, 1)), rng.normal(size=(rows, 5)).astype(np.float32)]
    values = np.concatenate([b.astype(np.float32).astype(np.float64) for b in blocks], axis=1)
    classes, slices = rng.integers(0, 4, rows), rng.integers(0, 40, rows)
    for codes, groups in (([np.zeros(rows, dtype=np.int64), classes + 1], 5), ([np.zeros(rows, dtype=np.int64), classes + 1, slices + 5], 45)):
        assert (_rows_by_cell(codes, groups) is None) == (groups == 45)  # both ways taken
        stacked = stacked_moments(blocks, codes, groups)
        for g in range(groups):
            in_group = np.any([c == g for c in codes], axis=0)
            part = values[in_group]
            assert stacked.counts[g] == len(part)
            np.testing.assert_allclose(stacked.means[g], part.mean(axis=0), rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(stacked.m2[g], ((part - part.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-5)
            np.testing.assert_allclose(stacked.abs_sums[g], np.abs(part).sum(axis=0), rtol=1e-6)
    empty = stacked_moments([np.zeros((0, 2))], [np.zeros(0, dtype=np.int64)], 3)
    assert empty.counts.tolist() == [0, 0, 0] and empty.means.shape == (3, 2)


def test_bottom_k_sample_keeps_the_smallest_priorities_whatever_the_merge_order():
    rng = np.random.default_rng(2)
    priorities = rng.random(500)
    values = np.arange(500, dtype=np.float64)[:, None]
    parts = [RowSample.of(32, priorities[i : i + 50], values[i : i + 50]) for i in range(0, 500, 50)]
    forward, backward = parts[0], parts[-1]
    for part in parts[1:]:
        forward = forward.merge(part)
    for part in reversed(parts[:-1]):
        backward = backward.merge(part)
    expected = set(np.argsort(priorities)[:32])
    assert set(forward.values[:, 0].astype(int)) == expected == set(backward.values[:, 0].astype(int))


def test_sample_quantiles_ignore_nan_and_are_exact_below_capacity():
    values = np.array([[1.0, np.nan], [2.0, np.nan], [3.0, 5.0], [4.0, np.nan]])
    sample = RowSample.of(10, np.linspace(0, 1, 4), values)
    np.testing.assert_allclose(sample.quantiles(np.array([0.5]), 0), [2.5])
    np.testing.assert_allclose(sample.quantiles(np.array([0.5]), 1), [5.0])
    assert np.isnan(RowSample.empty(10, 2).quantiles(np.array([0.5]), 0)).all()


def test_a_merge_skips_rows_that_cannot_beat_a_full_sample_and_keeps_the_same_rows():
    rng = np.random.default_rng(7)
    full = RowSample.of(8, rng.random(20), rng.normal(size=(20, 2)))
    assert full.bound == full.priorities.max() and RowSample.of(8, rng.random(5), rng.normal(size=(5, 2))).bound is None
    other = RowSample.of(8, rng.random(30), rng.normal(size=(30, 2)))
    merged = full.merge(other)
    priorities = np.concatenate([full.priorities, other.priorities])
    values = np.concatenate([full.values, other.values])
    expected = np.sort(priorities)[:8]
    np.testing.assert_array_equal(np.sort(merged.priorities), expected)
    by_priority = dict(zip(priorities, map(tuple, values)))
    assert all(by_priority[p] == tuple(v) for p, v in zip(merged.priorities, merged.values))
    kept = full.below(0.5)
    assert (kept.priorities < 0.5).all() and len(kept.priorities) == (full.priorities < 0.5).sum()
