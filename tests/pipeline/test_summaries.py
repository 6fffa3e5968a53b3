"""Summaries written by a real run, checked against a brute-force pass over the written Parquet."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import read_parquet_dir, save_nonlinear_model, write_tabular_parquet, write_vector_tfrecord
from pipeline.config import RunConfig
from pipeline.run import run_attribution

QUANTILE_COLUMNS = ["q01", "q05", "q25", "q50", "q75", "q95", "q99"]
QUANTILE_LEVELS = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99]


@pytest.fixture
def image_run(tmp_path):
    """IG over 300 records of a 6-value tensor column in two TFRecord files, plus one bad record,
    summarized per class and per label, in batches of 16 (many partial summaries merged)."""
    model = save_nonlinear_model(tmp_path / "mlp.keras", num_features=6, num_classes=3)
    rng = np.random.default_rng(4)
    features = rng.normal(size=(300, 6)).astype(np.float32)
    labels = rng.integers(0, 4, size=300)
    ids = [f"r{i}" for i in range(300)]
    write_vector_tfrecord(tmp_path / "a.tfrecord", features[:170], ids=ids[:170], labels=labels[:170])
    write_vector_tfrecord(tmp_path / "b.tfrecord", features[170:], ids=ids[170:], labels=labels[170:])
    write_vector_tfrecord(tmp_path / "c.tfrecord", np.zeros((1, 5), np.float32), ids=["short"], labels=[0])
    config = RunConfig.from_mapping({
        "model": model, "input": str(tmp_path / "*.tfrecord"), "output": str(tmp_path / "out"), "key_column": "id",
        "method": "integrated_gradients", "steps": 4, "rule": "riemann_left", "batch_size": 16,
        "slice_columns": ["label"], "completeness_threshold": 0.02,
    })
    manifest = run_attribution(config)
    return tmp_path / "out", manifest, dict(zip(ids, features))


def _groups(rows):
    yield ("overall", "all"), np.ones(len(rows["id"]), dtype=bool)
    for target in np.unique(rows["target"]):
        yield ("target", str(target)), rows["target"] == target
    for label in np.unique(rows["label"]):
        yield ("slice:label", str(label)), rows["label"] == label


def test_feature_statistics_equal_a_brute_force_pass_over_the_written_rows(image_run):
    out, manifest, _ = image_run
    written = read_parquet_dir(out)
    rows = {name: np.asarray(written.column(name).to_pylist()) for name in ("id", "target", "label", "target_score", "completeness_error")}
    attributions = np.asarray(written.column("attr_features").to_pylist(), dtype=np.float64)  # (300, 6)
    totals = attributions.sum(axis=1)
    table = pq.read_table(out / "summary_features.parquet").to_pylist()
    stats = {(r["group_kind"], r["group_value"], r["element"]): r for r in table}
    assert {(k, v) for k, v, _ in stats} == {key for key, _ in _groups(rows)}

    for key, mask in _groups(rows):
        whole = stats[(*key, -1)]
        assert whole["rows"] == mask.sum()
        np.testing.assert_allclose([whole["mean"], whole["mean_abs"], whole["std"]],
                                   [totals[mask].mean(), np.abs(totals[mask]).mean(), totals[mask].std()], rtol=1e-5, atol=1e-7)
        # every group is smaller than the sample size: quantiles are exact
        np.testing.assert_allclose([whole[q] for q in QUANTILE_COLUMNS], np.quantile(totals[mask], QUANTILE_LEVELS), rtol=1e-5, atol=1e-7)
        for element in range(6):
            cell = stats[(*key, element)]
            values = attributions[mask, element]
            np.testing.assert_allclose([cell["mean"], cell["mean_abs"], cell["std"]],
                                       [values.mean(), np.abs(values).mean(), values.std()], rtol=1e-5, atol=1e-7)
            assert cell["q50"] is None


def test_bootstrap_intervals_equal_the_replicates_recomputed_from_the_written_rows(image_run):
    """summary.json's 95 % intervals of each group's mean |attribution| and mean, from the rows'
    key buckets and the buckets' Poisson weights, though the rows were summarized in 19 batches
    of 16 and merged."""
    from audit.bootstrap import BUCKETS, DEFAULT_REPLICATES, buckets_of, poisson_weights

    out, manifest, _ = image_run
    written = read_parquet_dir(out)
    rows = {name: np.asarray(written.column(name).to_pylist()) for name in ("id", "target", "label")}
    totals = np.asarray(written.column("attr_features").to_pylist(), dtype=np.float64).sum(axis=1)  # (300,)
    bucket_weights = poisson_weights(np.arange(BUCKETS, dtype=np.uint64) + np.uint64(0x5EED), DEFAULT_REPLICATES)  # (K, B)
    weights = bucket_weights[buckets_of(rows["id"].tolist())]  # (300, B): each row weighs as its bucket
    document = json.loads((out / "summary.json").read_text())
    assert document["bootstrap"]["replicates"] == DEFAULT_REPLICATES == manifest["settings"]["bootstrap_replicates"]
    groups = {(g["kind"], g["value"]): g for g in document["groups"]}
    for key, mask in _groups(rows):
        w = weights[mask]  # (n, B)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicate_abs = (w.T @ np.abs(totals[mask])) / w.sum(axis=0)
            replicate_mean = (w.T @ totals[mask]) / w.sum(axis=0)
        feature = groups[key]["features"]["features"]
        np.testing.assert_allclose(feature["mean_abs_interval"], np.nanquantile(replicate_abs, [0.025, 0.975]), rtol=1e-6)
        np.testing.assert_allclose(feature["mean_interval"], np.nanquantile(replicate_mean, [0.025, 0.975]), rtol=1e-6, atol=1e-9)
        low, high = feature["mean_abs_interval"]
        assert low < feature["mean_abs"] < high, (key, feature)


def test_prediction_completeness_and_dead_letters_equal_a_brute_force_pass(image_run):
    out, manifest, _ = image_run
    written = read_parquet_dir(out)
    rows = {name: np.asarray(written.column(name).to_pylist()) for name in ("id", "target", "label", "target_score", "completeness_error")}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 300 == manifest["counts"]["summary_rows"]
    assert summary["dead_letters"] == 1 == manifest["counts"]["records_dead_lettered"]
    groups = {(g["kind"], g["value"]): g for g in summary["groups"]}
    for key, mask in _groups(rows):
        group, scores, deltas = groups[key], rows["target_score"][mask], rows["completeness_error"][mask]
        assert group["rows"] == mask.sum()
        np.testing.assert_allclose([group["prediction"][k] for k in ("mean", "std", "min", "max")],
                                   [scores.mean(), scores.std(), scores.min(), scores.max()], rtol=1e-5)
        completeness = group["completeness"]
        assert completeness["rows_over_threshold"] == (deltas > 0.02).sum()
        assert completeness["share_over_threshold"] == pytest.approx((deltas > 0.02).mean())
        edges = [float(e) for e in completeness["histogram"]["edges"]]
        assert completeness["histogram"]["counts"] == np.histogram(deltas, bins=edges)[0].tolist()
    assert 0 < groups[("overall", "all")]["completeness"]["rows_over_threshold"] < 300  # the check can tell


def test_exemplars_are_the_extreme_rows_with_their_inputs(image_run):
    out, _, features_by_id = image_run
    written = read_parquet_dir(out).to_pylist()
    exemplars = pq.read_table(out / "summary_exemplars.parquet").to_pylist()
    by_criterion = {}
    for row in exemplars:
        by_criterion.setdefault(row["criterion"], []).append(row)
    expected = {
        "highest_score": sorted(written, key=lambda r: -r["target_score"]),
        "lowest_score": sorted(written, key=lambda r: r["target_score"]),
        "most_faithful": sorted(written, key=lambda r: r["completeness_error"]),
        "least_faithful": sorted(written, key=lambda r: -r["completeness_error"]),
    }
    for criterion, ordered in expected.items():
        chosen = sorted(by_criterion[criterion], key=lambda r: r["rank"])
        best_of_each_class, seen = [], set()  # one per class: each class's most extreme row, in order
        for r in ordered:
            if r["target"] not in seen:
                seen.add(r["target"])
                best_of_each_class.append(r)
        assert [r["key"] for r in chosen] == [r["id"] for r in best_of_each_class[:6]]
        assert len(chosen) == min(6, len({r["target"] for r in written})) and len({r["target"] for r in chosen}) == len(chosen)
        for row in chosen:
            np.testing.assert_allclose(row["inputs"], features_by_id[row["key"]], rtol=1e-6)
            source = next(r for r in written if r["id"] == row["key"])
            np.testing.assert_allclose(row["attributions"], source["attr_features"], rtol=1e-6)


def test_quantiles_from_a_small_sample_stay_within_their_rank_error(linear_model, tmp_path):
    rng = np.random.default_rng(11)
    features = rng.standard_t(df=3, size=(2000, 6)).astype(np.float32)
    data = write_tabular_parquet(tmp_path / "d.parquet", features, ids=np.arange(2000), row_group_size=100)
    config = RunConfig.from_mapping({
        "model": linear_model[0], "input": data, "output": str(tmp_path / "out"), "key_column": "id", "method": "gradient_x_input",
        "inputs": {"features": [f"f{j}" for j in range(6)]}, "batch_size": 64, "summary_sample_size": 200,
    })
    run_attribution(config)
    written = read_parquet_dir(tmp_path / "out")
    stats = [r for r in pq.read_table(tmp_path / "out" / "summary_features.parquet").to_pylist() if r["group_kind"] == "overall"]
    k = 200
    for row in stats:
        values = np.asarray(written.column(f"attr_{row['feature']}").to_pylist())
        for column, q in zip(QUANTILE_COLUMNS, QUANTILE_LEVELS):
            rank = (values <= row[column]).mean()  # where the estimate falls among all 2,000 rows
            assert abs(rank - q) <= 4 * np.sqrt(q * (1 - q) / k) + 1 / k, (row["feature"], column, rank)
        np.testing.assert_allclose(row["mean"], values.mean(), rtol=1e-5, atol=1e-7)  # moments stay exact


def test_slice_values_past_the_limit_are_pooled_and_still_counted(linear_model, tabular_data, tmp_path):
    config = RunConfig.from_mapping({
        "model": linear_model[0], "input": tabular_data[0], "output": str(tmp_path / "out"), "method": "gradient",
        "inputs": {"features": [f"f{j}" for j in range(6)]}, "slice_columns": ["id"], "max_slice_values": 5, "batch_size": 8,
    })
    run_attribution(config)
    groups = [g for g in json.loads((tmp_path / "out" / "summary.json").read_text())["groups"] if g["kind"] == "slice:id"]
    assert len(groups) == 6 and sum(g["rows"] for g in groups) == 40
    assert [g["rows"] for g in groups if g["value"] == "__other__"] == [35]
    written = read_parquet_dir(tmp_path / "out")
    assert "id" in written.column_names  # a slice column is copied to the rows


def test_summaries_can_be_turned_off(linear_model, tabular_data, tmp_path):
    config = RunConfig.from_mapping({
        "model": linear_model[0], "input": tabular_data[0], "output": str(tmp_path / "out"), "method": "gradient",
        "inputs": {"features": [f"f{j}" for j in range(6)]}, "summaries": False,
    })
    manifest = run_attribution(config)
    assert manifest["output"]["summary"] == [] and "summary_rows" not in manifest["counts"]
    assert not (tmp_path / "out" / "summary.json").exists()
    assert manifest["metrics"].get("attribution/summaries_cpu_micro_secs", 0) == 0


def test_slice_columns_must_exist(linear_model, tabular_data, tmp_path):
    config = RunConfig.from_mapping({
        "model": linear_model[0], "input": tabular_data[0], "output": str(tmp_path / "out"), "method": "gradient",
        "inputs": {"features": [f"f{j}" for j in range(6)]}, "slice_columns": ["country"],
    })
    with pytest.raises(ValueError, match="slice column 'country'"):
        run_attribution(config)
