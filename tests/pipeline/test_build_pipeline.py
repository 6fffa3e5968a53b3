"""build_pipeline end to end on Beam's in-process runner, asserting values against closed forms."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from helpers import save_multi_input_linear_model, write_vector_tfrecord
from pipeline.build import build_pipeline
from pipeline.config import RunConfig

COLUMNS = [f"f{j}" for j in range(6)]


def _run(config, check_tables=None, check_dead=None):
    """Runs build_pipeline with a TestPipeline; returns the metrics by name."""
    p = TestPipeline(runner=FnApiRunner())
    built = build_pipeline(p, RunConfig.from_mapping(config), write=False)
    if check_tables is not None:
        assert_that(built.attributions, _collected(check_tables), label="CheckAttributions")
    if check_dead is not None:
        assert_that(built.dead_letters, check_dead, label="CheckDeadLetters")
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query()["counters"]
    return {c.key.metric.name: c.committed for c in counters}


def _collected(check):
    def matcher(tables):
        table = pa.concat_tables(tables) if tables else None
        check(table)

    return matcher


def test_parquet_integrated_gradients_equal_the_closed_form(linear_model, tabular_data, tmp_path):
    model, weights, bias = linear_model
    data, features, ids, labels = tabular_data
    by_id = {int(i): (x, int(l)) for i, x, l in zip(ids, features, labels)}
    median = np.median(features.astype(np.float64), axis=0).astype(np.float32)  # the default baseline: 40 rows, all sampled

    def check(table):
        assert table.num_rows == 40
        for row in table.to_pylist():
            x, label = by_id[row["id"]]
            logits = x @ weights + bias
            target = int(np.argmax(logits))
            assert row["target"] == target and row["label"] == label
            assert row["target_score"] == pytest.approx(logits[target], rel=1e-5, abs=1e-5)
            attrs = np.array([row[f"attr_{c}"] for c in COLUMNS])
            np.testing.assert_allclose(attrs, (x - median) * weights[:, target], rtol=1e-4, atol=1e-5)
            assert abs(row["convergence_delta"]) < 1e-4

    metrics = _run(
        {"model": model, "input": data, "output": str(tmp_path / "o"), "inputs": {"features": COLUMNS},
         "key_column": "id", "passthrough_columns": ["label"], "steps": 8, "batch_size": 7, "chunk_size": 16},
        check,
        lambda dead: _assert_equal(len(dead), 0),
    )
    assert metrics["records_read"] == 40 and metrics["records_attributed"] == 40
    assert metrics["model_loads"] == 1
    assert metrics.get("records_dead_lettered", 0) == 0


def _assert_equal(actual, expected):
    assert actual == expected, (actual, expected)


def test_tfrecord_gradient_with_fixed_target_and_synthesized_keys(linear_model, tmp_path):
    model, weights, _ = linear_model
    rng = np.random.default_rng(3)
    write_vector_tfrecord(tmp_path / "part-0.tfrecord", rng.normal(size=(5, 6)).astype(np.float32))
    write_vector_tfrecord(tmp_path / "part-1.tfrecord", rng.normal(size=(4, 6)).astype(np.float32))

    def check(table):
        assert sorted(table.column("key").to_pylist()) == sorted([f"part-0.tfrecord:{i}" for i in range(5)] + [f"part-1.tfrecord:{i}" for i in range(4)])
        assert set(table.column("target").to_pylist()) == {2}
        for attrs in table.column("attr_features").to_pylist():
            np.testing.assert_allclose(attrs, weights[:, 2], rtol=1e-6)
        assert "convergence_delta" not in table.column_names

    metrics = _run(
        {"model": model, "input": str(tmp_path / "part-*.tfrecord"), "output": str(tmp_path / "o"), "method": "gradient", "target": 2, "batch_size": 3},
        check,
    )
    assert metrics["records_read"] == 9 and metrics["model_loads"] == 1


def test_multi_input_model_with_tensor_and_scalar_columns(tmp_path):
    model, weights, bias = save_multi_input_linear_model(tmp_path / "multi.keras")
    rng = np.random.default_rng(5)
    images = rng.normal(size=(6, 16)).astype(np.float32)
    tabular = rng.normal(size=(6, 3)).astype(np.float32)
    pq.write_table(
        pa.table({"rid": [f"r{i}" for i in range(6)], "img": pa.array(list(images), pa.list_(pa.float32(), 16)),
                  "age": tabular[:, 0], "height": tabular[:, 1], "weight": tabular[:, 2]}),
        str(tmp_path / "multi.parquet"),
    )

    # The default baseline per input: zeros for the list column, the median for the scalar columns.
    baseline = np.concatenate([np.zeros(16, np.float32), np.median(tabular.astype(np.float64), axis=0).astype(np.float32)])

    def check(table):
        assert table.schema.field("attr_img").type == pa.list_(pa.float32())
        assert table.schema.field("attr_age").type == pa.float32()
        for row in table.to_pylist():
            i = int(row["rid"][1:])
            x = np.concatenate([images[i], tabular[i]])
            expected = (x - baseline) * weights[:, row["target"]]  # IG on a linear model
            np.testing.assert_allclose(row["attr_img"], expected[:16], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose([row["attr_age"], row["attr_height"], row["attr_weight"]], expected[16:], rtol=1e-4, atol=1e-5)
            assert row["target"] == int(np.argmax(x @ weights + bias))

    _run(
        {"model": model, "input": str(tmp_path / "multi.parquet"), "output": str(tmp_path / "o"), "key_column": "rid",
         "inputs": {"image": "img", "tabular": ["age", "height", "weight"]}, "steps": 4},
        check,
    )


def test_top_k_gives_k_rows_per_record_in_score_order(linear_model, tabular_data, tmp_path):
    model, weights, bias = linear_model
    data, features, ids, _ = tabular_data
    by_id = dict(zip(ids.tolist(), features))

    def check(table):
        assert table.num_rows == 80
        rows = {}
        for row in table.to_pylist():
            rows.setdefault(row["id"], []).append(row)
        for key, pair in rows.items():
            order = list(np.argsort(-(by_id[key] @ weights + bias), kind="stable")[:2])
            assert [r["target"] for r in pair] == order
            for r in pair:
                np.testing.assert_allclose([r[f"attr_{c}"] for c in COLUMNS], weights[:, r["target"]], rtol=1e-6)

    _run({"model": model, "input": data, "output": str(tmp_path / "o"), "inputs": {"features": COLUMNS},
          "key_column": "id", "method": "gradient", "target": "top_k:2"}, check)


def test_label_target_and_dead_letters_with_reasons(linear_model, tmp_path):
    model, weights, _ = linear_model
    table = pa.table({"id": [1, 2, 3, 4], "label": [0, 2, 7, 1], **{c: [1.0, 2.0, 3.0, 4.0] for c in COLUMNS}})
    table = table.set_column(table.schema.get_field_index("f3"), "f3", pa.array([1.0, None, 3.0, 4.0]))
    pq.write_table(table, str(tmp_path / "d.parquet"))

    def check(out):
        assert dict(zip(out.column("id").to_pylist(), out.column("target").to_pylist())) == {1: 0, 4: 1}

    def check_dead(dead):
        reasons = {row["key"]: row["error"] for row in dead}
        assert reasons == {"2": "column 'f3' is null", "3": "label column 'label' value 7 is out of range [0, 3) of the explained output"}

    metrics = _run({"model": model, "input": str(tmp_path / "d.parquet"), "output": str(tmp_path / "o"), "inputs": {"features": COLUMNS},
                    "key_column": "id", "method": "gradient_x_input", "target": "label:label"}, check, check_dead)
    assert metrics["records_read"] == 4 and metrics["records_attributed"] == 2 and metrics["records_dead_lettered"] == 2
