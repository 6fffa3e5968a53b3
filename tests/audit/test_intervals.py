"""Intervals beyond the per-feature means (issue 27): class shares (bootstrap), tensor elements (their
moments) and the share of rows over the completeness threshold (binomial), in the summaries and in
compare's drift decisions. Summaries of synthetic attribution rows through the pipeline's own
accumulator."""

import numpy as np
import pyarrow as pa
import pytest

from audit.compare import DriftThresholds, compare_runs
from audit.runs import RunResult
from audit.summary import FeatureSpec, SummarySpec
from audit.summary_accumulator import SummaryAccumulator
from audit.summary_output import exemplars_table, features_table, summary_document

# Rankings over five equally important leaves are random: not judged here.
NO_RANKS = {"min_spearman": 0.0, "min_top_k_overlap": 0.0, "min_ndcg": 0.0}
SPEC = SummarySpec(features=(FeatureSpec("a", 1), FeatureSpec("img", 4, (2, 2))), path_method=True, bootstrap_replicates=200,
                   completeness_threshold=0.05)


def _run(name: str, targets: np.ndarray, a: np.ndarray, img: np.ndarray, errors: np.ndarray) -> RunResult:
    """A RunResult of rows with these targets (n,), attributions a (n,), img (n, 4) and completeness errors (n,)."""
    accumulator = SummaryAccumulator(SPEC)
    n = len(targets)
    for start in range(0, n, 500):
        part = slice(start, min(start + 500, n))
        rows = len(targets[part])
        table = pa.table({
            "key": pa.array([f"{name}:{i}" for i in range(start, start + rows)]),
            "target": pa.array(targets[part].astype(np.int32)),
            "target_score": pa.array(np.ones(rows, np.float32)),
            "attr_a": pa.array(a[part].astype(np.float32)),
            "attr_img": pa.ListArray.from_arrays(pa.array(np.arange(0, 4 * rows + 1, 4, dtype=np.int32)),
                                                 pa.array(img[part].astype(np.float32).reshape(-1))),
            "convergence_delta": pa.array(np.zeros(rows, np.float32)),
            "completeness_error": pa.array(errors[part].astype(np.float32)),
            "attributions_finite": pa.array(np.ones(rows, bool)),
        })
        accumulator.add(table, (np.zeros((rows, 1), np.float32), np.zeros((rows, 2, 2), np.float32)), np.arange(rows))
    summary = accumulator.result()
    settings = {"method": "integrated_gradients", "target": "predicted", "output_name": None, "explain_logits": False}
    manifest = {"status": "complete", "settings": settings, "model": {"sha256": "0" * 64, "path": "m.keras"}}
    return RunResult(name, manifest, summary_document(summary, 0, settings), features_table(summary), exemplars_table(summary))


def _rows(rng, n, class_probabilities=(0.5, 0.3, 0.2), over_threshold=0.1, img_scale=(1.0, 1.0, 1.0, 1.0)):
    targets = rng.choice(len(class_probabilities), size=n, p=class_probabilities)
    errors = np.where(rng.random(n) < over_threshold, 0.5, 0.0)
    return targets, rng.normal(size=n), rng.normal(size=(n, 4)) * np.array(img_scale), errors


def test_class_shares_carry_bootstrap_intervals_as_wide_as_the_binomial_error():
    rng = np.random.default_rng(1)
    n = 4000
    run = _run("r", *_rows(rng, n))
    classes = [g for g in run.summary["groups"] if g["kind"] == "target"]
    assert [g["value"] for g in classes] == ["0", "1", "2"]
    for g in classes:
        share = g["rows"] / n
        assert g["share"] == pytest.approx(share)
        low, high = g["share_interval"]
        assert low < share < high
        binomial = np.sqrt(share * (1 - share) / n)  # records are independent draws: the share's sampling error
        assert g["share_se"] == pytest.approx(binomial, rel=0.25)


def test_tensor_elements_carry_standard_errors_from_their_moments():
    rng = np.random.default_rng(2)
    targets, a, img, errors = _rows(rng, 3000, img_scale=(1.0, 2.0, 0.5, 4.0))
    run = _run("r", targets, a, img, errors)
    table = run.features.to_pydict()
    overall = [i for i, (kind, feature, element) in enumerate(zip(table["group_kind"], table["feature"], table["element"]))
               if kind == "overall" and feature == "img" and element >= 0]
    for e, i in enumerate(overall):
        values = img[:, e].astype(np.float32).astype(np.float64)
        assert table["mean_abs_se"][i] == pytest.approx(np.abs(values).std(ddof=1) / np.sqrt(len(values)), rel=1e-4)
        assert table["mean_se"][i] == pytest.approx(values.std(ddof=1) / np.sqrt(len(values)), rel=1e-4)
    # A feature's standard error is its bootstrap's, close to the same moment formula.
    a_row = next(i for i, (kind, f, e) in enumerate(zip(table["group_kind"], table["feature"], table["element"])) if kind == "overall" and f == "a")
    assert table["mean_abs_se"][a_row] == pytest.approx(np.abs(a).std(ddof=1) / np.sqrt(len(a)), rel=0.25)


def test_element_changes_get_intervals_and_only_a_real_change_is_flagged():
    rng = np.random.default_rng(3)
    tight = DriftThresholds(max_relative_change=0.02, min_share=0.0, max_class_share_change=1.0, **NO_RANKS)
    run_a = _run("a", *_rows(rng, 2000))
    noise = compare_runs(run_a, _run("b", *_rows(rng, 2000)), tight)
    overall = next(g for g in noise["groups"] if g["kind"] == "overall")
    pixels = [f for f in overall["features"] if f["feature"].startswith("img[")]
    assert len(pixels) == 4 and all(f["change_interval"] is not None for f in pixels)
    assert overall["spearman_interval"] is not None  # the ranking over the leaves (pixels) has its interval too
    assert sum(f["drift"] for f in pixels) <= 1  # noise: past the 2 % threshold alone, but not beyond its interval
    doubled = compare_runs(run_a, _run("c", *_rows(rng, 2000, img_scale=(1.0, 1.0, 2.0, 1.0))), tight)
    overall = next(g for g in doubled["groups"] if g["kind"] == "overall")
    flagged = {f["feature"] for f in overall["features"] if f["drift"]}
    assert "img[2]" in flagged and len(flagged - {"img[2]"}) <= 1


def test_class_share_drift_needs_a_change_beyond_noise():
    rng = np.random.default_rng(4)
    tight = DriftThresholds(max_class_share_change=0.005, max_relative_change=10.0, **NO_RANKS)
    run_a = _run("a", *_rows(rng, 1000))
    same = compare_runs(run_a, _run("b", *_rows(rng, 1000)), tight)
    shares = same["class_shares"]
    assert shares["total_variation"] > 0.005  # past the threshold by chance ...
    assert shares["beyond_noise"] is False and not same["drift"]  # ... and within every class's interval
    assert all(low < 0 < high for low, high in shares["change_intervals"].values())
    moved = compare_runs(run_a, _run("c", *_rows(rng, 1000, class_probabilities=(0.3, 0.3, 0.4))), tight)
    assert moved["class_shares"]["beyond_noise"] is True
    assert any("explained-class shares moved" in r for r in moved["reasons"])


def test_a_rise_of_rows_over_the_completeness_threshold_counts_only_beyond_noise():
    rng = np.random.default_rng(5)
    tight = DriftThresholds(max_completeness_increase=0.001, max_relative_change=10.0, max_class_share_change=1.0, **NO_RANKS)
    run_a = _run("a", *_rows(rng, 1000))
    same = compare_runs(run_a, _run("b", *_rows(rng, 1000)), tight)
    overall = next(g for g in same["groups"] if g["kind"] == "overall")
    low, high = overall["completeness"]["change_interval"]
    assert low < overall["completeness"]["change"] < high
    assert overall["completeness"]["beyond_noise"] is (low > 0)
    assert any("completeness threshold" in r for r in same["reasons"]) is overall["completeness"]["beyond_noise"]
    worse = compare_runs(run_a, _run("c", *_rows(rng, 1000, over_threshold=0.3)), tight)
    overall = next(g for g in worse["groups"] if g["kind"] == "overall")
    assert overall["completeness"]["beyond_noise"] is True
    assert any("completeness threshold rose" in r for r in worse["reasons"])


def test_rankings_over_more_leaves_than_the_cap_are_judged_by_their_thresholds_alone(monkeypatch):
    import audit.compare

    rng = np.random.default_rng(6)
    run_a, run_b = _run("a", *_rows(rng, 500)), _run("b", *_rows(rng, 500))
    monkeypatch.setattr(audit.compare, "MAX_RANK_INTERVAL_LEAVES", 4)  # these runs have 5 leaves: a and img[0..3]
    overall = next(g for g in compare_runs(run_a, run_b)["groups"] if g["kind"] == "overall")
    assert overall["spearman_interval"] is None and overall["ndcg_interval"] is None
    assert all(f["change_interval"] is not None for f in overall["features"])  # the features keep theirs
