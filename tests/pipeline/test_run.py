"""run_attribution on real files: outputs, dead letters, manifest counts and metadata."""

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import read_parquet_dir, rows_by_key, write_tabular_parquet, write_vector_tfrecord
from pipeline.config import RunConfig
from pipeline.run import run_attribution

COLUMNS = [f"f{j}" for j in range(6)]


def _config(model, data, output, **extra):
    return RunConfig.from_mapping({"model": model, "input": data, "output": str(output), "inputs": {"features": COLUMNS}, **extra})


def test_manifest_reconciles_with_a_malformed_record_in_the_dead_letters(linear_model, tmp_path):
    model, weights, _ = linear_model
    rng = np.random.default_rng(9)
    good = rng.normal(size=(12, 6)).astype(np.float32)
    path = write_vector_tfrecord(tmp_path / "a.tfrecord", good, ids=[f"id{i}" for i in range(12)])
    write_vector_tfrecord(tmp_path / "b.tfrecord", np.zeros((1, 5), np.float32), ids=["short"])  # wrong length
    config = RunConfig.from_mapping({"model": model, "input": [path, str(tmp_path / "b.tfrecord")], "output": str(tmp_path / "out"),
                                     "key_column": "id", "method": "gradient"})
    manifest = run_attribution(config)

    counts = manifest["counts"]
    assert counts == {"records_read": 13, "records_attributed": 12, "records_dead_lettered": 1, "rows_written": 12, "rows_not_finite": 0,
                      "dead_letter_rows_written": 1, "rows_per_record": 1, "summary_rows": 12, "reconciled": True}
    dead = read_parquet_dir(tmp_path / "out", "dead_letter").to_pylist()
    assert dead[0]["key"] == "short" and dead[0]["source"].endswith("b.tfrecord") and dead[0]["error"] == "feature 'features' has 5 values, expected 6"
    assert dead[0]["record"] == next(iter(__import__("tensorflow").data.TFRecordDataset(str(tmp_path / "b.tfrecord")))).numpy()
    rows = rows_by_key(read_parquet_dir(tmp_path / "out"))
    for i in range(12):
        np.testing.assert_allclose(rows[f"id{i}"]["attr_features"], weights[:, rows[f"id{i}"]["target"]], rtol=1e-6)

    on_disk = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert on_disk["counts"] == counts
    assert on_disk["metrics"]["attribution/model_loads"] == 1
    assert on_disk["metrics"]["attribution/attribution_batch_latency_micro_secs"]["count"] >= 1
    assert on_disk["metrics"]["attribution/summaries_cpu_micro_secs"] > 0  # what the summaries cost
    assert on_disk["input"]["files"] == sorted([path, str(tmp_path / "b.tfrecord")])
    assert on_disk["model"]["sha256"] == pq.read_schema(on_disk["output"]["attributions"][0]["path"]).metadata[b"attribution.model_sha256"].decode()
    assert on_disk["settings"]["method"] == "gradient"
    assert set(on_disk["versions"]) >= {"apache_beam", "tensorflow", "keras", "attribution_pipeline"}


def test_what_an_incomplete_run_left_is_replaced_without_asking(linear_model, tabular_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # killed mid-commit: no manifest, a half-moved file that the ownership record still claims
    (out / "attributions-00000-of-00002.parquet").write_bytes(b"half-written")
    (out / ".attribution-pipeline.json").write_text(json.dumps({"tool": "attribution-pipeline", "files": ["attributions-00000-of-00002.parquet"]}))
    (out / "notes.txt").write_text("the user's own")  # beside the run, not of it
    manifest = run_attribution(_config(linear_model[0], tabular_data[0], out, method="gradient"))
    assert manifest["status"] == "complete" and not (out / "attributions-00000-of-00002.parquet").exists()
    assert (out / "notes.txt").read_text() == "the user's own"
    failed = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**failed, "status": "failed"}))  # a run that failed its checks
    assert run_attribution(_config(linear_model[0], tabular_data[0], out, method="gradient"))["status"] == "complete"
    assert read_parquet_dir(out).num_rows == 40


def test_existing_results_are_not_overwritten_unless_asked(linear_model, tabular_data, tmp_path):
    config = _config(linear_model[0], tabular_data[0], tmp_path / "out", method="gradient")
    run_attribution(config)
    with pytest.raises(ValueError, match="already holds a complete run .* pass --overwrite"):
        run_attribution(config)
    manifest = run_attribution(_config(linear_model[0], tabular_data[0], tmp_path / "out", method="gradient", overwrite=True))
    assert manifest["counts"]["rows_written"] == 40
    assert read_parquet_dir(tmp_path / "out").num_rows == 40


def test_integrated_gradients_against_a_baseline_row_from_a_file(linear_model, tabular_data, tmp_path):
    model, weights, bias = linear_model
    data, features, ids, _ = tabular_data
    baseline = np.linspace(-1, 1, 6).astype(np.float32)
    write_tabular_parquet(tmp_path / "baseline.parquet", baseline[None, :])
    run_attribution(_config(model, data, tmp_path / "out", key_column="id", baseline=f"file:{tmp_path / 'baseline.parquet'}", steps=4, rule="riemann_trapezoid"))
    table = read_parquet_dir(tmp_path / "out")
    assert json.loads(table.schema.metadata[b"attribution.parameters"]) == {"rule": "riemann_trapezoid", "steps": 4}
    rows = rows_by_key(table)
    for key, x in zip(ids.tolist(), features):
        row = rows[key]
        np.testing.assert_allclose([row[f"attr_{c}"] for c in COLUMNS], (x - baseline) * weights[:, row["target"]], rtol=1e-4, atol=1e-5)
        assert row["convergence_delta_rel"] < 1e-3


def test_expected_gradients_and_smoothgrad_through_the_pipeline(linear_model, tabular_data, tmp_path):
    model, weights, _ = linear_model
    data, features, ids, _ = tabular_data
    background = np.random.default_rng(1).normal(size=(1, 6)).astype(np.float32)
    write_tabular_parquet(tmp_path / "bg.parquet", background)
    run_attribution(_config(model, data, tmp_path / "eg", key_column="id", method="expected_gradients", background=str(tmp_path / "bg.parquet"), samples=4, target=1))
    rows = rows_by_key(read_parquet_dir(tmp_path / "eg"))
    for key, x in zip(ids.tolist(), features):
        np.testing.assert_allclose([rows[key][f"attr_{c}"] for c in COLUMNS], (x - background[0]) * weights[:, 1], rtol=1e-4, atol=1e-5)
        assert rows[key]["attribution_stderr"] == pytest.approx(0.0, abs=1e-5)

    run_attribution(_config(model, data, tmp_path / "sg", key_column="id", method="smoothgrad", samples=3, target=0))
    table = read_parquet_dir(tmp_path / "sg")
    for c, w in zip(COLUMNS, weights[:, 0]):
        np.testing.assert_allclose(table.column(f"attr_{c}").to_numpy(), w, rtol=1e-5)


def test_saved_model_directory_end_to_end(linear_model, tabular_data, tmp_path):
    import keras

    model, weights, _ = linear_model
    keras.saving.load_model(model).export(str(tmp_path / "sm"))
    manifest = run_attribution(_config(str(tmp_path / "sm"), tabular_data[0], tmp_path / "out", method="gradient", target=1, inputs={"features": COLUMNS}))
    assert manifest["counts"]["rows_written"] == 40
    table = read_parquet_dir(tmp_path / "out")
    np.testing.assert_allclose(table.column("attr_f0").to_numpy(), weights[0, 1], rtol=1e-6)


def test_truncated_tfrecord_keeps_the_records_before_the_damage(linear_model, tmp_path):
    features = np.random.default_rng(2).normal(size=(10, 6)).astype(np.float32)
    path = write_vector_tfrecord(tmp_path / "t.tfrecord", features, ids=[f"r{i}" for i in range(10)])
    data = open(path, "rb").read()
    with open(path, "wb") as handle:
        handle.write(data[: len(data) - 30])  # cuts into the last record
    config = RunConfig.from_mapping({"model": linear_model[0], "input": path, "output": str(tmp_path / "out"),
                                     "key_column": "id", "method": "gradient", "batch_size": 4})
    manifest = run_attribution(config)
    assert manifest["counts"]["records_attributed"] == 9
    assert manifest["counts"]["records_dead_lettered"] == 1 and manifest["counts"]["reconciled"]
    assert sorted(read_parquet_dir(tmp_path / "out").column("id").to_pylist()) == [f"r{i}" for i in range(9)]
    (dead,) = read_parquet_dir(tmp_path / "out", "dead_letter").to_pylist()
    assert dead["key"] == "t.tfrecord:9"
    assert dead["error"].startswith("file is truncated or corrupted after record 8; the rest is unreadable")


def test_too_many_dead_letters_fail_the_run_loudly_after_writing_the_manifest(linear_model, tmp_path):
    from pipeline.errors import RunFailedError

    features = np.ones((10, 6), np.float32)
    features[:3, 2] = np.nan  # 3 of 10 records are bad: more than the default 10 %
    data = write_tabular_parquet(tmp_path / "d.parquet", features, ids=np.arange(10))
    config = _config(linear_model[0], data, tmp_path / "out", method="gradient", key_column="id")
    with pytest.raises(RunFailedError, match="3 of 10 records were dead-lettered, more than max_dead_letter_fraction 0.1"):
        run_attribution(config)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "dead-lettered" in manifest["failure"]
    assert manifest["counts"]["reconciled"] is True

    relaxed = _config(linear_model[0], data, tmp_path / "out2", method="gradient", key_column="id", max_dead_letter_fraction=0.5)
    assert run_attribution(relaxed)["status"] == "complete"


def test_non_finite_attributions_are_flagged_per_row_and_counted(tmp_path):
    from helpers import save_linear_model

    weights = np.full((6, 3), 1e30, np.float32)  # x @ W overflows float32 for |x| ~ 1e10
    model = save_linear_model(tmp_path / "overflow.keras", weights, np.zeros(3, np.float32))
    features = np.ones((8, 6), np.float32)
    features[:5] *= 1e10
    data = write_tabular_parquet(tmp_path / "d.parquet", features, ids=np.arange(8))
    manifest = run_attribution(_config(model, data, tmp_path / "out", key_column="id", steps=4, baseline="zeros"))
    assert manifest["counts"]["rows_not_finite"] == 5
    rows = rows_by_key(read_parquet_dir(tmp_path / "out"))
    assert [rows[i]["attributions_finite"] for i in range(8)] == [False] * 5 + [True] * 3


def test_corrupted_crc_keeps_the_records_before_it(linear_model, tmp_path):
    features = np.random.default_rng(4).normal(size=(10, 6)).astype(np.float32)
    path = write_vector_tfrecord(tmp_path / "c.tfrecord", features, ids=[f"r{i}" for i in range(10)])
    data = bytearray(open(path, "rb").read())
    record_size = len(data) // 10
    data[6 * record_size + 20] ^= 0xFF  # inside record 6's payload: its CRC no longer matches
    open(path, "wb").write(bytes(data))
    config = RunConfig.from_mapping({"model": linear_model[0], "input": path, "output": str(tmp_path / "out"),
                                     "key_column": "id", "method": "gradient", "batch_size": 4, "max_dead_letter_fraction": 0.5})
    manifest = run_attribution(config)
    assert manifest["counts"]["records_attributed"] == 6 and manifest["counts"]["records_dead_lettered"] == 1
    (dead,) = read_parquet_dir(tmp_path / "out", "dead_letter").to_pylist()
    assert dead["key"] == "c.tfrecord:6" and "corrupted" in dead["error"].lower()


def test_files_whose_schema_differs_from_the_first_are_dead_lettered_whole(linear_model, tmp_path):
    good = np.ones((4, 6), np.float32)
    write_tabular_parquet(tmp_path / "a.parquet", good, ids=np.arange(4))
    missing = pa.table({"id": np.arange(10, 13), **{c: np.ones(3, np.float32) for c in COLUMNS[:5]}})
    pq.write_table(missing, str(tmp_path / "b.parquet"))
    strings = pa.table({"id": np.arange(20, 22), **{c: np.ones(2, np.float32) for c in COLUMNS[1:]}, "f0": ["x", "y"]})
    pq.write_table(strings, str(tmp_path / "c.parquet"))
    config = _config(linear_model[0], str(tmp_path / "*.parquet"), tmp_path / "out", method="gradient", key_column="id",
                     max_dead_letter_fraction=1.0)
    manifest = run_attribution(config)
    assert manifest["counts"]["records_read"] == 9 and manifest["counts"]["records_attributed"] == 4
    reasons = {row["key"]: row["error"] for row in read_parquet_dir(tmp_path / "out", "dead_letter").to_pylist()}
    assert sorted(reasons) == ["b.parquet:0", "b.parquet:1", "b.parquet:2", "c.parquet:0", "c.parquet:1"]
    assert reasons["b.parquet:0"].endswith("column 'f5' is missing (the first input file has it)")
    assert reasons["c.parquet:1"].endswith("column 'f0' has type string, expected a number as in the first input file")


def test_empty_files_are_skipped_and_all_empty_input_is_refused(linear_model, tmp_path):
    (tmp_path / "a-empty.tfrecord").write_bytes(b"")
    write_vector_tfrecord(tmp_path / "b.tfrecord", np.ones((3, 6), np.float32), ids=["x", "y", "z"])
    config = RunConfig.from_mapping({"model": linear_model[0], "input": str(tmp_path / "*.tfrecord"), "output": str(tmp_path / "out"),
                                     "key_column": "id", "method": "gradient"})
    assert run_attribution(config)["counts"]["records_attributed"] == 3

    empty_parquet = pa.table({c: pa.array([], pa.float32()) for c in COLUMNS})
    pq.write_table(empty_parquet, str(tmp_path / "empty.parquet"))
    manifest = run_attribution(_config(linear_model[0], str(tmp_path / "empty.parquet"), tmp_path / "p", method="gradient"))
    assert manifest["counts"]["records_read"] == 0 and manifest["status"] == "complete"

    only_empty = RunConfig.from_mapping({"model": linear_model[0], "input": str(tmp_path / "a-empty.tfrecord"), "output": str(tmp_path / "o")})
    with pytest.raises(ValueError, match="hold no records"):
        run_attribution(only_empty)


def test_duplicate_keys_are_kept_and_counted_when_asked(linear_model, tmp_path):
    ids = np.array([1, 2, 2, 3, 3, 3, 4])
    data = write_tabular_parquet(tmp_path / "d.parquet", np.ones((7, 6), np.float32), ids=ids)
    manifest = run_attribution(_config(linear_model[0], data, tmp_path / "out", method="gradient", key_column="id", check_duplicate_keys=True))
    assert manifest["counts"]["duplicate_keys"] == 2 and manifest["counts"]["records_with_duplicate_keys"] == 5
    assert sorted(read_parquet_dir(tmp_path / "out").column("id").to_pylist()) == sorted(ids.tolist())
    with pytest.raises(ValueError, match="check_duplicate_keys needs a key_column"):
        _config(linear_model[0], data, tmp_path / "o2", check_duplicate_keys=True)


def test_two_worker_processes_load_the_model_once_each(linear_model, tmp_path):
    """Beam's multi-process direct mode: fresh worker processes, one model load per process."""
    model, weights, _ = linear_model
    rng = np.random.default_rng(8)
    paths = [write_vector_tfrecord(tmp_path / f"p{i}.tfrecord", rng.normal(size=(6, 6)).astype(np.float32), ids=[f"{i}-{j}" for j in range(6)])
             for i in range(6)]
    config = RunConfig.from_mapping({"model": model, "input": paths, "output": str(tmp_path / "out"), "key_column": "id",
                                     "method": "gradient", "target": 1, "batch_size": 2})
    manifest = run_attribution(config, ["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert manifest["counts"]["records_attributed"] == 36 and manifest["counts"]["reconciled"]
    assert manifest["metrics"]["attribution/attribution_batch_latency_micro_secs"]["count"] == 18
    assert 1 <= manifest["metrics"]["attribution/model_loads"] <= 2  # 18 batches, at most one load per process
    table = read_parquet_dir(tmp_path / "out")
    np.testing.assert_allclose(np.stack(table.column("attr_features").to_pylist()), np.tile(weights[:, 1], (36, 1)), rtol=1e-6)


def test_a_job_not_waited_for_is_finalized_later_from_its_staging_directory(linear_model, tabular_data, tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.manifest import finalize_run

    config = _config(linear_model[0], tabular_data[0], tmp_path / "out", method="gradient")
    submitted = run_attribution(config, wait=False)  # what a remote runner without --wait returns
    assert submitted["status"] == "submitted" and submitted["staging"].startswith(str(tmp_path / "out" / ".staging-"))
    assert not (tmp_path / "out" / "manifest.json").exists()

    done = os.path.join(submitted["staging"], "pipeline_done.json")
    marker = open(done).read()
    os.remove(done)  # as if the job were still running
    with pytest.raises(ValueError, match="has not finished writing: its last step writes pipeline_done.json"):
        finalize_run(str(tmp_path / "out"))
    open(done, "w").write(marker)

    assert main(["finalize", str(tmp_path / "out")]) == 0
    assert "attributed 40 of 40 records" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["rows_written"] == 40 and manifest["metrics"] == {}
    assert read_parquet_dir(tmp_path / "out").num_rows == 40
    with pytest.raises(ValueError, match="holds no launched run to finalize"):
        finalize_run(str(tmp_path / "out"))


def test_completeness_target_through_the_pipeline_rows_summary_report_and_manifest(tmp_path):
    """A ReLU model whose paths have kinks, run with a completeness target: every row records the
    points it used and whether it met the target; the summary and the manifest count them."""
    import keras

    from helpers import write_tabular_parquet as write

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((6,), name="features"), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(3)])
    hidden = model.layers[0]
    # Non-zero biases: with zero biases a ReLU net is linear along any ray from a zero baseline.
    hidden.set_weights([hidden.get_weights()[0], np.random.default_rng(4).normal(size=32).astype(np.float32)])
    model.save(str(tmp_path / "relu.keras"))
    features = np.random.default_rng(3).normal(size=(40, 6)).astype(np.float32) * 3
    data = write(tmp_path / "data.parquet", features, ids=np.arange(40))
    manifest = run_attribution(_config(str(tmp_path / "relu.keras"), data, tmp_path / "out", key_column="id", steps=4,
                                       completeness_target=0.001, max_steps=260))
    table = read_parquet_dir(tmp_path / "out")
    assert json.loads(table.schema.metadata[b"attribution.parameters"]) == {
        "rule": "gausslegendre", "steps": 4, "completeness_target": 0.001, "max_steps": 260}
    steps = np.asarray(table.column("steps_used").to_pylist())
    met = np.asarray(table.column("completeness_met").to_pylist())
    error = np.asarray(table.column("completeness_error").to_pylist())
    assert (steps >= 4).all() and (steps <= 260).all() and (steps > 4).any()  # 4 points are too few for some rows
    np.testing.assert_array_equal(met, error <= 0.001)
    assert met.mean() > 0.9
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    counted = summary["groups"][0]["completeness"]["steps_used"]
    values, counts = np.unique(steps, return_counts=True)
    assert counted["counts"] == {str(v): int(c) for v, c in zip(values, counts)}
    assert counted["rows_met"] == int(met.sum()) and counted["gradient_evaluations"] == int(steps.sum())
    assert manifest["completeness"]["target"] == 0.001 and manifest["completeness"]["steps_used"] == counted
    assert manifest["completeness"]["measure"].startswith("completeness_error = |delta| / max(")

    from audit.report import render_report
    from audit.runs import load_run

    html_text = render_report(load_run(str(tmp_path / "out")))
    assert "Points used per row (completeness target)" in html_text and f"{int(met.sum())} of 40 rows" in html_text

    # Without a target: fixed steps, no steps_used column.
    run_attribution(_config(str(tmp_path / "relu.keras"), data, tmp_path / "fixed", key_column="id", steps=4))
    assert "steps_used" not in read_parquet_dir(tmp_path / "fixed").column_names


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_batches_attributed_while_the_next_is_read_keep_their_order_and_values(linear_model, tmp_path, threads):
    """13 batches of 3: each batch is attributed on the engine thread while the next is decoded,
    its rows emitted later (the last ones in finish_bundle). The rows keep the input order, each
    equals the closed form, and the manifest names the compute threads used (default: one per
    core on the DirectRunner)."""
    from attributions.concurrency import available_cores

    model, weights, _ = linear_model
    features = np.random.default_rng(5).normal(size=(38, 6)).astype(np.float32)
    data = write_tabular_parquet(tmp_path / "d.parquet", features, ids=np.arange(38))
    extra = {} if threads is None else {"compute_threads": threads}
    manifest = run_attribution(_config(model, data, tmp_path / "out", method="gradient_x_input", target=2,
                                       key_column="id", batch_size=3, **extra))
    assert manifest["counts"]["rows_written"] == 38 and manifest["counts"]["reconciled"]
    assert manifest["job"]["compute_threads"] == (available_cores() if threads is None else threads)
    table = read_parquet_dir(tmp_path / "out")
    assert table.column("id").to_pylist() == list(range(38))
    attributions = np.stack([table.column(f"attr_{c}").to_numpy() for c in COLUMNS], axis=1)
    np.testing.assert_allclose(attributions, features * weights[:, 2], rtol=1e-6, atol=1e-6)
