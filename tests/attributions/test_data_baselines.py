import numpy as np
import pytest

from attributions.data_baselines import ROBUST_SD_PER_MAD, far_from_data, statistic_baseline


def test_median_and_mean_baselines_are_numpys_per_feature_statistics():
    rows = np.random.default_rng(0).normal(loc=[100.0, -3.0, 0.0], scale=[5.0, 1.0, 0.1], size=(501, 3)).astype(np.float32)
    np.testing.assert_array_equal(statistic_baseline(rows, "median"), np.median(rows.astype(np.float64), axis=0).astype(np.float32))
    np.testing.assert_allclose(statistic_baseline(rows, "mean"), rows.astype(np.float64).mean(axis=0), rtol=1e-6)
    images = rows[:500].reshape(125, 2, 2, 3)
    assert statistic_baseline(images, "median").shape == (2, 2, 3)
    with pytest.raises(ValueError, match="at least one row"):
        statistic_baseline(rows[:0], "median")


def test_far_from_data_counts_features_beyond_three_robust_standard_deviations():
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.normal(100, 1, 2000), rng.normal(50, 2, 2000), rng.normal(0, 1, 2000), np.full(2000, 7.0)])
    zeros = far_from_data(np.zeros(4), rows)
    assert (zeros.far, zeros.total) == (3, 4) and zeros.share == 0.75  # 100, 50 and the constant 7 are far from 0
    assert zeros.farthest == (3, float("inf"))  # a constant feature: any other value is infinitely far
    at_constant = far_from_data(np.array([100.0, 50.0, 0.0, 7.0]), rows)
    assert at_constant.far == 0
    off_constant = far_from_data(np.array([100.0, 50.0, 0.0, 8.0]), rows)
    assert off_constant.far == 1 and off_constant.farthest == (3, float("inf"))
    # exactly the robust distance: median +- 3 x 1.4826 x MAD is the edge
    column = rows[:, 2]
    edge = np.median(column) + 2.99 * ROBUST_SD_PER_MAD * np.median(np.abs(column - np.median(column)))
    assert far_from_data(np.array([edge]), column[:, None]).far == 0
