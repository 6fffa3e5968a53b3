"""The Poisson bootstrap behind the summaries' intervals (audit.bootstrap, issue 27)."""

import numpy as np

from audit.bootstrap import BUCKETS, buckets_of, key_hashes, percentile_interval, poisson_weights, replicate_means, replicate_sums


def test_weights_are_poisson_one_and_depend_only_on_the_key_and_the_replicate():
    keys = [f"file.parquet:{i}" for i in range(20000)]
    weights = poisson_weights(key_hashes(keys), 64)  # (R, B)
    assert weights.shape == (20000, 64) and weights.min() == 0 and np.all(weights == np.round(weights))
    assert abs(weights.mean() - 1) < 0.01 and abs(weights.var() - 1) < 0.02
    assert abs((weights == 0).mean() - np.exp(-1)) < 0.005 and abs((weights == 2).mean() - np.exp(-1) / 2) < 0.005
    # the same key weighs the same in any batch, order or replicate count; keys differ from each other
    shuffled = np.random.default_rng(0).permutation(len(keys))[:500]
    np.testing.assert_array_equal(poisson_weights(key_hashes([keys[i] for i in shuffled]), 64), weights[shuffled])
    np.testing.assert_array_equal(poisson_weights(key_hashes(keys[:100]), 16), weights[:100, :16])
    assert abs(np.corrcoef(weights[:, 0], weights[:, 1])[0, 1]) < 0.03  # replicates independent
    assert abs(np.corrcoef(weights[:-1, 0], weights[1:, 0])[0, 1]) < 0.03  # neighbouring keys independent


def test_percentile_intervals_of_a_mean_cover_the_true_mean_about_95_percent_of_the_time():
    """300 samples of 2,000 rows from a skewed distribution (exponential, mean 2), bucketed by key
    as the summaries do: the 95 % interval from 200 replicates holds the true mean in 90-99 % of
    them, and its width is the textbook one (2 x 1.96 x sd / sqrt(n)) within 15 %."""
    rng = np.random.default_rng(1)
    covered, widths = 0, []
    for trial in range(300):
        x = rng.exponential(2.0, size=2000)
        buckets = buckets_of([f"t{trial}:{i}" for i in range(2000)])
        sums = np.zeros((BUCKETS, 3))
        np.add.at(sums, buckets, np.column_stack([np.abs(x), x, np.ones(len(x))]))
        mean_abs, mean = replicate_means(replicate_sums(sums, 200), 1)
        np.testing.assert_array_equal(mean_abs, mean)  # x > 0
        low, high = percentile_interval(mean)[:, 0]
        covered += low <= 2.0 <= high
        widths.append((high - low) / (2 * 1.96 * x.std() / np.sqrt(len(x))))
    assert 0.90 <= covered / 300 <= 0.99, covered
    assert abs(np.median(widths) - 1) < 0.15, np.median(widths)


def test_key_hashes_see_only_each_keys_value_whatever_array_holds_it():
    import pyarrow as pa

    texts = ["", "a", "ab", "ba", "é", "rows.parquet:17", "x" * 300] + [f"k{i}" for i in range(100000)]
    hashes = key_hashes(pa.array(texts))
    assert len(set(hashes.tolist())) == len(texts)  # no two keys alike, "ab" != "ba", "" has its own
    chunked = pa.chunked_array([pa.array(texts[:5]), pa.array(texts[5:])])
    np.testing.assert_array_equal(key_hashes(chunked), hashes)
    np.testing.assert_array_equal(key_hashes(pa.array(texts).slice(3, 50)), hashes[3:53])  # an Arrow slice (offset)
    np.testing.assert_array_equal(key_hashes(texts[10:20]), hashes[10:20])  # a Python list
    np.testing.assert_array_equal(key_hashes(pa.array(texts[:7], pa.large_string())), hashes[:7])
    ints = key_hashes(pa.array(np.arange(1000, 101000, dtype=np.int64)))
    assert len(set(ints.tolist())) == 100000
    np.testing.assert_array_equal(key_hashes(pa.array(np.arange(1000, 1010, dtype=np.int32))), ints[:10])
