"""summarize_batch, SummaryAccumulator and RunSummary.merge on hand-made rows."""

from dataclasses import replace as dataclasses_replace

import numpy as np
import pyarrow as pa

from audit.summary import Exemplars, FeatureSpec, RunSummary, SummarySpec, best_per_class
from audit.summary_accumulator import SummaryAccumulator, summarize_batch
from audit.summary_output import features_table

SPEC = SummarySpec(features=(FeatureSpec("a", 1), FeatureSpec("img", 4, (2, 2))), path_method=True, slice_columns=("country",),
                   bootstrap_replicates=8)


def _rows(seed, n=12, countries=("DE", "FR", None)):
    rng = np.random.default_rng(seed)
    img = rng.normal(size=(n, 4)).astype(np.float32)
    table = pa.table({
        "key": pa.array([f"k{seed}-{i}" for i in range(n)]),
        "country": pa.array([countries[i % len(countries)] for i in range(n)]),
        "target": pa.array(rng.integers(0, 2, n).astype(np.int32)),
        "target_score": pa.array(rng.random(n).astype(np.float32)),
        "attr_a": pa.array(rng.normal(size=n).astype(np.float32)),
        "attr_img": pa.ListArray.from_arrays(pa.array(np.arange(0, 4 * n + 1, 4, dtype=np.int32)), pa.array(img.reshape(-1))),
        "convergence_delta": pa.array(np.zeros(n, np.float32)),
        "completeness_error": pa.array(rng.random(n).astype(np.float32) * 0.1),
        "attributions_finite": pa.array([i != 3 for i in range(n)]),  # row 3 is not finite
    })
    inputs = (rng.random((n, 1)).astype(np.float32), rng.random((n, 2, 2)).astype(np.float32))
    return table, inputs


def test_null_slice_values_form_their_own_group_and_non_finite_rows_are_only_counted():
    table, inputs = _rows(1)
    summary = summarize_batch(SPEC, table, inputs, np.arange(12))
    assert summary.rows_not_finite == 1 and summary.rows == 12
    assert summary.groups[("overall", "all")].rows == 11
    sizes = {value: group.rows for (kind, value), group in summary.groups.items() if kind == "slice:country"}
    assert sizes == {"DE": 3, "FR": 4, "__null__": 4}  # row 3 (DE) is not finite


def test_merging_in_any_order_gives_the_same_summary():
    parts = [summarize_batch(SPEC, *_rows(seed), np.arange(12)) for seed in range(5)]
    forward, backward = RunSummary.empty(SPEC), RunSummary.empty(SPEC)
    for part in parts:
        forward = forward.merge(part)
    for part in reversed(parts):
        backward = backward.merge(part)
    a, b = features_table(forward).to_pydict(), features_table(backward).to_pydict()
    assert a["group_value"] == b["group_value"] and a["rows"] == b["rows"]
    for column in ("mean", "mean_abs", "std", "q50"):
        np.testing.assert_allclose(np.array(a[column], dtype=float), np.array(b[column], dtype=float), rtol=1e-12)


def _exemplar_keys(summary):
    return {name: list(chosen.keys) for name, chosen in summary.exemplars.items()}


def test_exemplars_are_one_per_class_and_merging_parts_equals_one_pass():
    spec = SummarySpec(features=SPEC.features, path_method=True, exemplars_per_criterion=2)
    parts = [_rows(seed, n=12) for seed in range(4)]
    table = pa.concat_tables([t for t, _ in parts])
    inputs = tuple(np.concatenate([i[j] for _, i in parts]) for j in range(2))
    whole = summarize_batch(spec, table, inputs, np.arange(table.num_rows))
    merged = RunSummary.empty(spec)
    for t, i in reversed(parts):
        merged = merged.merge(summarize_batch(spec, t, i, np.arange(12)))
    assert _exemplar_keys(merged) == _exemplar_keys(whole)
    finite = [r for r in table.to_pylist() if r["attributions_finite"]]
    best = {}
    for r in sorted(finite, key=lambda r: -r["target_score"]):
        best.setdefault(r["target"], r["key"])
    assert _exemplar_keys(whole)["highest_score"] == list(best.values())  # the top row of each of the 2 classes
    for chosen in whole.exemplars.values():
        assert len(set(chosen.targets.tolist())) == len(chosen.targets) == 2


def test_top_k_rows_are_summarized_per_rank_and_exemplars_come_from_rank_one():
    table, inputs = _rows(7, n=12)
    example_index = np.repeat(np.arange(6), 2)  # top_k:2: rows (record 0 rank 1, record 0 rank 2, record 1 rank 1, ...)
    summary = summarize_batch(SPEC, table, (inputs[0][:6], inputs[1][:6]), example_index)
    finite = table.column("attributions_finite").to_pylist()
    ranks = {value: group.rows for (kind, value), group in summary.groups.items() if kind == "rank"}
    assert ranks == {"1": sum(finite[0::2]), "2": sum(finite[1::2])}  # row 3 (rank 2) is not finite
    rank_one_keys = set(table.column("key").to_pylist()[0::2])
    assert all(set(chosen.keys) <= rank_one_keys for chosen in summary.exemplars.values())
    one_row_each = summarize_batch(SPEC, table, inputs, np.arange(12))
    assert not any(kind == "rank" for kind, _ in one_row_each.groups)


def test_steps_used_distribution_is_exact_and_merges_in_any_order():
    from audit.summary_output import steps_document

    spec = dataclasses_replace(SPEC, adaptive=True)
    parts = []
    for seed in range(3):
        table, inputs = _rows(seed)
        steps = np.random.default_rng(seed).choice([16, 32, 48, 1024], size=12).astype(np.int32)
        met = steps < 1024
        table = table.append_column("steps_used", pa.array(steps)).append_column("completeness_met", pa.array(met))
        parts.append((summarize_batch(spec, table, inputs, np.arange(12)), steps, met, table.column("attributions_finite").to_numpy(zero_copy_only=False)))
    merged = parts[2][0].merge(parts[0][0]).merge(parts[1][0])
    steps = np.concatenate([s[f] for _, s, _, f in parts])  # finite rows only are summarized
    met = np.concatenate([m[f] for _, _, m, f in parts])
    overall = merged.groups[("overall", "all")]
    values, counts = np.unique(steps, return_counts=True)
    assert overall.steps_counts == {int(v): int(c) for v, c in zip(values, counts)}
    document = steps_document(overall.steps_counts, overall.rows_met)
    assert document["rows_met"] == met.sum() and document["gradient_evaluations"] == steps.sum()
    assert document["mean"] == steps.mean() and document["quantiles"]["max"] == 1024
    assert document["quantiles"]["q50"] == np.sort(steps)[int(np.ceil(0.5 * len(steps))) - 1]


def _best_per_class_by_sorting(order, targets, capacity):
    """The definition: rank every row with a stable sort (NaN last), keep each class's first."""
    ranked = np.argsort(order, kind="stable")
    _, first = np.unique(targets[ranked], return_index=True)
    return ranked[np.sort(first)][:capacity]


def test_best_per_class_equals_ranking_all_rows_with_ties_nan_and_infinities():
    rng = np.random.default_rng(3)
    for trial in range(2000):
        n = int(rng.integers(0, 40))
        values = [0.0, -0.0, 1.0, -1.0, 0.5, np.nan, np.inf, -np.inf]
        order = rng.choice(values, n) if trial % 2 else rng.normal(size=n)
        targets = rng.integers(0, int(rng.integers(1, 7)), n) * int(rng.choice([1, 1000]))
        capacity = int(rng.integers(1, 8))
        np.testing.assert_array_equal(best_per_class(order, targets, capacity), _best_per_class_by_sorting(order, targets, capacity))


def _assert_same_summary(a: RunSummary, b: RunSummary, exact_groups: bool = True):
    """exact_groups: every group but `__other__` equal element for element. Without it (batches
    whose slice values pool into `__other__` differently in a and b), every group to 1e-6: a
    batch's sums are taken per cell of overall x class x slice value in float32, and pooled
    values make other cells."""
    assert a.rows_not_finite == b.rows_not_finite and a.slice_values == b.slice_values
    assert list(a.groups) == list(b.groups)
    for key, group in a.groups.items():
        other = b.groups[key]
        np.testing.assert_array_equal(np.sort(group.sample.priorities), np.sort(other.sample.priorities))
        assert (group.score_min, group.score_max, group.rows_with_delta, group.rows_over_threshold) == (
            other.score_min, other.score_max, other.rows_with_delta, other.rows_over_threshold)
        assert group.steps_counts == other.steps_counts and group.rows_met == other.rows_met
        np.testing.assert_array_equal(group.delta_histogram, other.delta_histogram)
        np.testing.assert_allclose(group.bootstrap, other.bootstrap, rtol=1e-12)  # sums: the order of additions differs
    a_rows, b_rows = features_table(a).to_pylist(), features_table(b).to_pylist()
    assert len(a_rows) == len(b_rows)
    for mine, theirs in zip(a_rows, b_rows):
        if exact_groups and mine["group_value"] != "__other__":
            assert mine == theirs  # the same arithmetic, element for element
        else:  # summed in float32 per other cells (~1e-7 relative)
            assert mine.keys() == theirs.keys() and mine["rows"] == theirs["rows"]
            for column, value in mine.items():
                np.testing.assert_allclose(value, theirs[column], rtol=1e-6) if isinstance(value, float) else None
    np.testing.assert_array_equal(np.sort(a.points.priorities), np.sort(b.points.priorities))
    np.testing.assert_array_equal(a.points.values[np.argsort(a.points.priorities)], b.points.values[np.argsort(b.points.priorities)])
    assert a.exemplars.keys() == b.exemplars.keys()
    for name, chosen in a.exemplars.items():
        assert chosen.keys == b.exemplars[name].keys
        np.testing.assert_array_equal(chosen.attributions, b.exemplars[name].attributions)


def _with_steps(table, seed):
    steps = np.random.default_rng(seed).choice([16, 32, 48, 1024], size=table.num_rows).astype(np.int32)
    return table.append_column("steps_used", pa.array(steps)).append_column("completeness_met", pa.array(steps < 1024))


def test_accumulating_batches_equals_merging_their_one_batch_summaries():
    # samples of 5 rows fill after the first batch, so later batches only offer rows below the
    # samples' bounds; 3 exemplars per criterion of 2 classes; 6 slice values, 4 admitted.
    spec = dataclasses_replace(SPEC, sample_size=5, adaptive=True, exemplars_per_criterion=3, max_slice_values=4)
    countries = ("DE", "FR", None, "IT", "ES", "NL")
    batches = [(_with_steps(t, seed), i) for seed in range(8) for t, i in [_rows(seed, n=12, countries=countries[seed % 3:])]]
    accumulator, merged = SummaryAccumulator(spec), None
    for table, inputs in batches:
        accumulator.add(table, inputs, np.arange(12))
        part = summarize_batch(spec, table, inputs, np.arange(12))
        merged = part if merged is None else merged.merge(part)
    summary = accumulator.result()
    assert all(g.sample.bound is not None for g in summary.groups.values())  # the samples filled up
    assert ("slice:country", "__other__") in summary.groups
    _assert_same_summary(summary, merged, exact_groups=False)


def test_accumulating_top_k_batches_equals_merging_their_summaries():
    accumulator, merged = SummaryAccumulator(SPEC), RunSummary.empty(SPEC)
    example_index = np.repeat(np.arange(6), 2)
    for seed in range(4):
        table, inputs = _rows(seed, n=12)
        inputs = (inputs[0][:6], inputs[1][:6])
        accumulator.add(table, inputs, example_index)
        merged = merged.merge(summarize_batch(SPEC, table, inputs, example_index))
    _assert_same_summary(accumulator.result(), merged)
    assert SummaryAccumulator(SPEC).result() is None  # nothing added


def test_exemplar_entry_bounds_leave_out_only_rows_a_merge_would_drop():
    rng = np.random.default_rng(5)
    for trial in range(1000):
        capacity = int(rng.integers(1, 5))
        values = [0.0, 1.0, -1.0, 0.5, np.nan, np.inf, -np.inf]
        parts = []
        for _ in range(2):
            n = int(rng.integers(1, 15))
            order = rng.choice(values, n) if trial % 2 else rng.normal(size=n)
            offset = -3 if trial % 3 == 0 else 0  # negative class ids: bounds by a loop, not a lookup table
            parts.append((order, rng.integers(0, int(rng.integers(1, 7)), n) + offset))
        (order, targets), (new_order, new_targets) = parts
        keep = best_per_class(order, targets, capacity)
        kept = _exemplars_of(capacity, order[keep], targets[keep])
        everything = kept.merge(_exemplars_of(capacity, *_best(new_order, new_targets, capacity)))
        entering = ~(new_order >= kept.entry_bounds(new_targets))
        order_in, targets_in, rows_in = _best(new_order[entering], new_targets[entering], capacity)
        filtered = kept.merge(_exemplars_of(capacity, order_in, targets_in, np.flatnonzero(entering)[rows_in]))
        np.testing.assert_array_equal(filtered.order, everything.order)
        np.testing.assert_array_equal(filtered.targets, everything.targets)
        np.testing.assert_array_equal(filtered.scores, everything.scores)  # the same rows, not only equal orders


def _best(order, targets, capacity):
    rows = best_per_class(order, targets, capacity)
    return order[rows], targets[rows], rows


def _exemplars_of(capacity, order, targets, rows=None):
    n = len(order)
    tags = np.arange(n, dtype=np.float64) if rows is None else rows.astype(np.float64) + 1000  # which row: kept or new
    return Exemplars(capacity, order, [str(t) for t in tags], targets, tags, np.zeros(n), np.zeros((n, 1), np.float32), np.zeros((n, 1), np.float32))


def test_distinct_class_ids_by_counting_equal_numpy_unique():
    from audit.summary import distinct_class_ids

    rng = np.random.default_rng(11)
    for values in (rng.integers(0, 10, 500), rng.integers(-3, 4, 50), rng.integers(0, 1 << 20, 50), np.array([7, 7, 2], np.int32), np.zeros(0, np.int64)):
        distinct, codes = distinct_class_ids(values)
        expected, inverse = np.unique(values, return_inverse=True)
        np.testing.assert_array_equal(distinct, expected)
        np.testing.assert_array_equal(codes, inverse.reshape(-1))
        assert distinct.dtype == values.dtype


def test_the_beeswarm_points_pair_each_sampled_rows_attribution_with_its_own_input_value(monkeypatch):
    """RunSummary.points: a uniform sample of finite rows, each row's attribution of the scalar
    feature beside that row's input value (the image feature is a tensor: not in the sample),
    the same by accumulating or by merging; the points file keeps them per feature."""
    import audit.summary_accumulator as accumulator_module
    from audit.summary_output import points_table

    monkeypatch.setattr(accumulator_module, "POINTS_SIZE", 20)
    accumulator, merged, pairs = SummaryAccumulator(SPEC), RunSummary.empty(SPEC), set()
    for seed in range(6):
        table, inputs = _rows(seed)
        accumulator.add(table, inputs, np.arange(12))
        merged = merged.merge(summarize_batch(SPEC, table, inputs, np.arange(12)))
        finite = np.asarray(table.column("attributions_finite"))
        pairs |= set(zip(np.asarray(table.column("attr_a"), dtype=float)[finite], inputs[0][finite, 0].astype(float)))
    summary = accumulator.result()
    assert summary.points.values.shape == (20, 2)  # 66 finite rows offered, 20 kept
    assert set(map(tuple, summary.points.values.tolist())) <= pairs
    np.testing.assert_array_equal(np.sort(summary.points.priorities), np.sort(merged.points.priorities))
    points = points_table(summary).to_pydict()
    assert set(points["feature"]) == {"a"} and sorted(zip(points["attribution"], points["value"])) == sorted(map(tuple, summary.points.values.tolist()))


def test_slice_groups_go_without_bootstrap_sums_when_all_of_them_would_not_fit():
    """1,000 slice values of 300 features would need 1.2 GB of bucket sums per accumulator: slice
    groups then get no interval, the whole run and the classes still do."""
    from audit.bootstrap import slices_bootstrapped

    assert slices_bootstrapped(20, 1, 1000) and not slices_bootstrapped(300, 1, 1000)
    spec = dataclasses_replace(SPEC, max_slice_values=10**6)  # 2 features, but a million slice values allowed
    summary = summarize_batch(spec, *_rows(1), np.arange(12))
    assert summary.groups[("overall", "all")].bootstrap is not None and summary.groups[("target", "0")].bootstrap is not None
    assert all(g.bootstrap is None for (kind, _), g in summary.groups.items() if kind.startswith("slice:"))
    merged = summary.merge(summarize_batch(spec, *_rows(2), np.arange(12)))
    assert all(g.bootstrap is None for (kind, _), g in merged.groups.items() if kind.startswith("slice:"))
