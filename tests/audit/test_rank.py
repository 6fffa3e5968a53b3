"""Rank agreement statistics against scipy's (a test-only dependency) on data with ties."""

import numpy as np
import pytest
from scipy import stats

from audit.rank import average_ranks, kendall_tau_b, spearman, top_k_overlap


@pytest.mark.parametrize("n, levels", [(7, 3), (300, 1000), (5000, 40)])
def test_spearman_and_kendall_tau_b_equal_scipy_with_ties(n, levels):
    rng = np.random.default_rng(n)
    a = rng.integers(0, levels, size=n).astype(float)
    b = a + rng.integers(0, levels, size=n)  # correlated, with ties in both
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)
    assert kendall_tau_b(a, b) == pytest.approx(stats.kendalltau(a, b).statistic, abs=1e-12)


def test_perfect_and_reversed_orders_and_constant_vectors():
    x = np.arange(10.0)
    assert spearman(x, x * 2) == pytest.approx(1.0) and kendall_tau_b(x, x * 2) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0) and kendall_tau_b(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones(10))) and np.isnan(kendall_tau_b(x, np.ones(10)))


def test_average_ranks_share_ties():
    np.testing.assert_allclose(average_ranks(np.array([10.0, 20.0, 10.0, 30.0])), [1.5, 3.0, 1.5, 4.0])


def test_top_k_overlap():
    a = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    b = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert top_k_overlap(a, b, 2) == 0.5 and top_k_overlap(a, b, 3) == pytest.approx(2 / 3)
    assert top_k_overlap(a, b, 10) == 1.0  # k is capped at the number of features


def test_ndcg_against_its_definition_and_edge_cases():
    from audit.rank import ndcg

    relevance = np.array([3.0, 2.0, 1.0, 0.0])
    assert ndcg(relevance, relevance) == 1.0 and ndcg(relevance, relevance * 7 + 1) == 1.0  # only B's order counts
    swapped = np.array([2.0, 3.0, 1.0, 0.0])  # B ranks the first two the other way round
    discounts = 1 / np.log2(np.arange(4) + 2)
    assert ndcg(relevance, swapped) == pytest.approx((2 * discounts[0] + 3 * discounts[1] + 1 * discounts[2]) / (relevance @ discounts))
    assert ndcg(relevance, relevance[::-1].copy()) < ndcg(relevance, swapped) < 1
    assert np.isnan(ndcg(np.zeros(3), np.arange(3.0))) and np.isnan(ndcg(np.zeros(0), np.zeros(0)))
