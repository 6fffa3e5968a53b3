"""Token/category importance totals against a brute-force pass, merging, ranking and agreement."""

import numpy as np
import pytest

from audit.token_importance import TokenTotals, token_rank_agreement, top_tokens


def _batch(rng, rows=40, positions=7, vocabulary=12, classes=3):
    targets = rng.integers(0, classes, rows)
    ids = rng.integers(0, vocabulary, (rows, positions))
    attributions = rng.normal(size=(rows, positions))
    valid = rng.random((rows, positions)) > 0.2
    return targets, ids, attributions, valid


def _brute_force(batches) -> dict:
    totals = {}
    for targets, ids, attributions, valid in batches:
        for r in range(len(targets)):
            for t in range(ids.shape[1]):
                if valid[r, t]:
                    entry = totals.setdefault((int(targets[r]), int(ids[r, t])), [0, 0.0, 0.0])
                    entry[0] += 1
                    entry[1] += attributions[r, t]
                    entry[2] += abs(attributions[r, t])
    return totals


def _as_dict(totals: TokenTotals) -> dict:
    return {(int(c), int(i)): [int(n), s, a] for c, i, n, s, a in zip(totals.classes, totals.ids, totals.counts, totals.sums, totals.sums_abs)}


def test_totals_equal_a_brute_force_pass_and_padding_is_left_out():
    rng = np.random.default_rng(0)
    batch = _batch(rng)
    got, expected = _as_dict(TokenTotals.of_batch(*batch)), _brute_force([batch])
    assert got.keys() == expected.keys()
    for key, (count, total, total_abs) in expected.items():
        assert got[key][0] == count
        assert got[key][1] == pytest.approx(total, abs=1e-12)
        assert got[key][2] == pytest.approx(total_abs, abs=1e-12)
    assert TokenTotals.of_batch(*batch).positions == int(batch[3].sum())


def test_merge_in_any_order_gives_the_totals_of_the_whole():
    rng = np.random.default_rng(1)
    batches = [_batch(rng, rows=rows) for rows in (5, 30, 1, 17)]
    parts = [TokenTotals.of_batch(*b) for b in batches]
    forward = parts[0].merge(parts[1]).merge(parts[2]).merge(parts[3])
    backward = parts[3].merge(parts[2].merge(parts[1])).merge(parts[0])
    expected = _brute_force(batches)
    for merged in (forward, backward):
        got = _as_dict(merged)
        assert got.keys() == expected.keys()
        assert all(got[k][0] == expected[k][0] and got[k][1] == pytest.approx(expected[k][1], abs=1e-12) for k in expected)
    assert np.array_equal(forward.counts, backward.counts)
    assert TokenTotals.empty().merge(forward).positions == forward.positions


def test_for_class_and_pooled_classes():
    rng = np.random.default_rng(2)
    totals = TokenTotals.of_batch(*_batch(rng))
    one = totals.for_class(1)
    assert set(one.classes.tolist()) == {1}
    pooled = totals.for_class(None)
    assert pooled.positions == totals.positions
    for token in range(12):
        assert pooled.sums[pooled.ids == token].sum() == pytest.approx(totals.sums[totals.ids == token].sum())


def test_top_tokens_orders_by_mean_and_skips_rare_tokens():
    # Token 5 always +2, token 7 always -1, token 3 once at +9 (rare), token 1 mixed (mean 0).
    ids = np.array([[5, 7, 3], [5, 7, 1], [5, 7, 1], [5, 7, 1]])
    attributions = np.array([[2.0, -1.0, 9.0], [2.0, -1.0, 1.0], [2.0, -1.0, -1.0], [2.0, -1.0, 0.0]])
    totals = TokenTotals.of_batch(np.zeros(4, int), ids, attributions)
    ranked = top_tokens(totals, k=2, min_count=2, vocabulary=["pad", "the", "x", "rare", "y", "good", "z", "bad"])
    assert [(e["token"], e["count"], e["mean"]) for e in ranked["for"]] == [("good", 4, 2.0), ("the", 3, 0.0)]
    assert [(e["token"], e["mean"]) for e in ranked["against"]] == [("bad", -1.0), ("the", 0.0)]
    assert ranked["for"][1]["mean_abs"] == pytest.approx(2.0 / 3)
    assert top_tokens(totals, k=1, min_count=1)["for"][0] == {"id": 3, "token": "3", "count": 1, "mean": 9.0, "mean_abs": 9.0}


def test_rank_agreement_is_one_for_equal_runs_and_drops_when_importance_moves():
    rng = np.random.default_rng(3)
    batch = _batch(rng, rows=400, vocabulary=20, classes=1)
    totals = TokenTotals.of_batch(*batch)
    same = token_rank_agreement(totals, totals, min_count=5, k=5)
    assert same["tokens"] == 20 and same["spearman"] == pytest.approx(1.0) and same["top_k_overlap"] == 1.0
    targets, ids, attributions, valid = batch
    flipped = attributions * (1.0 + 5.0 * (ids >= 15))  # tokens 15..19 become the most important
    moved = token_rank_agreement(totals, TokenTotals.of_batch(targets, ids, flipped, valid), min_count=5, k=5)
    assert moved["top_k_overlap"] < 0.5 and moved["spearman"] < same["spearman"]


def test_shape_mismatch_is_refused_with_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        TokenTotals.of_batch(np.zeros(2), np.zeros((2, 3)), np.zeros((2, 4)))
