"""Integrated gradients' baseline from the data (pipeline.baselines, pipeline.baseline_sample):
the default for tabular inputs is the median of a sample, and a baseline far from the data is
said at launch."""

import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import read_parquet_dir, rows_by_key, save_linear_model, write_tabular_parquet
from pipeline.cli import main

COLUMNS = [f"f{j}" for j in range(6)]


@pytest.fixture
def offset_data(tmp_path):
    """A linear model whose true influence per feature is |w_j| x spread_j, on features that sit
    far from zero with offsets unrelated to it: with the zeros baseline the ranking follows the
    offsets, with the median it follows the model."""
    rng = np.random.default_rng(11)
    offsets = np.array([50.0, 0.0, 20.0, -5.0, 80.0, 1.0])
    spreads = np.array([0.5, 4.0, 1.0, 3.0, 0.2, 2.0])
    features = (offsets + spreads * rng.normal(size=(300, 6))).astype(np.float32)
    weights = np.array([[1.0], [1.5], [-2.0], [1.0], [3.0], [-1.2]], np.float32)
    model = save_linear_model(tmp_path / "additive.keras", weights, np.zeros(1, np.float32))
    data = write_tabular_parquet(tmp_path / "offsets.parquet", features, ids=np.arange(300), row_group_size=64)
    return model, data, features, weights[:, 0]


def _run(model, data, output, *extra):
    return main(["run", "--model", model, "--input", data, "--output", str(output), "--key-column", "id", "--steps", "16", *extra])


def _mean_abs_attributions(output) -> np.ndarray:
    rows = rows_by_key(read_parquet_dir(output))
    return np.array([np.mean([abs(r[f"attr_{c}"]) for r in rows.values()]) for c in COLUMNS])


def test_the_default_tabular_baseline_is_the_median_and_recovers_the_models_ranking(offset_data, tmp_path, caplog):
    model, data, features, weights = offset_data
    assert _run(model, data, tmp_path / "auto") == 0
    median = np.median(features.astype(np.float64), axis=0).astype(np.float32)  # 300 rows < 1,024: the sample is every row
    rows = rows_by_key(read_parquet_dir(tmp_path / "auto"))
    for key, row in rows.items():  # linear model: IG = (x - baseline) . w exactly
        np.testing.assert_allclose([row[f"attr_{c}"] for c in COLUMNS], (features[key] - median) * weights, rtol=1e-4, atol=1e-4)
    truth = np.abs(weights) * np.mean(np.abs(features - median), axis=0)
    assert list(np.argsort(-_mean_abs_attributions(tmp_path / "auto"))) == list(np.argsort(-truth))
    manifest = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert manifest["baseline"]["setting"] == "auto" and manifest["baseline"]["per_input"] == {"features": "median"}
    assert manifest["baseline"]["sample"]["rows"] == 300
    np.testing.assert_array_equal(np.float32(manifest["baseline"]["values"]["features"]), median)
    metadata = pq.read_schema(next((tmp_path / "auto").glob("attributions-*.parquet"))).metadata
    assert metadata[b"attribution.baseline"] == b"auto: median (features) of 300 sampled rows"
    assert not [r for r in caplog.records if r.name == "pipeline.baselines" or "robust standard deviations" in r.getMessage()]

    # the zeros baseline: the ranking follows the offsets instead, and the launch says so in one line
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _run(model, data, tmp_path / "zeros", "--baseline", "zeros") == 0
    zeros_ranking = list(np.argsort(-_mean_abs_attributions(tmp_path / "zeros")))
    assert zeros_ranking != list(np.argsort(-truth))
    assert zeros_ranking == list(np.argsort(-np.abs(weights) * np.mean(np.abs(features), axis=0)))
    said = [r.getMessage() for r in caplog.records if "robust standard deviations" in r.getMessage()]
    assert len(said) == 1 and "the zeros baseline of input 'features' lies more than 3 robust standard deviations from the 300 " \
        "sampled rows in 3 of 6 features (farthest: 'f4', 399.8 robust standard deviations away)" in said[0] and "consider --baseline median" in said[0], said
    assert json.loads((tmp_path / "zeros" / "manifest.json").read_text())["baseline"]["warning"] == said[0]


def test_a_mean_baseline_and_the_sample_size_setting(offset_data, tmp_path):
    model, data, features, weights = offset_data
    assert _run(model, data, tmp_path / "mean", "--baseline", "mean", "--baseline-sample-size", "128") == 0
    manifest = json.loads((tmp_path / "mean" / "manifest.json").read_text())
    assert manifest["baseline"]["sample"]["rows"] == 128
    baseline = np.float32(manifest["baseline"]["values"]["features"])
    # 128 rows: twice as many read, the first 52 of each of the 5 row groups of 64 (the last holds
    # 44), then 128 of those 252 evenly spaced
    read = np.concatenate([features[g * 64:g * 64 + 52] for g in range(5)])
    sampled = read[np.round(np.arange(128) * (len(read) - 1) / 127).astype(int)]
    np.testing.assert_allclose(baseline, sampled.astype(np.float64).mean(axis=0), rtol=1e-6)
    rows = rows_by_key(read_parquet_dir(tmp_path / "mean"))
    np.testing.assert_allclose([rows[7][f"attr_{c}"] for c in COLUMNS], (features[7] - baseline) * weights, rtol=1e-4, atol=1e-4)


def test_the_sample_is_deterministic_spread_over_files_and_row_groups_and_skips_invalid_records(tmp_path):
    from pipeline.baseline_sample import sample_input_rows
    from transforms.records import ColumnSpec, ModelInputSpec, RecordSchema

    values = np.arange(12 * 100, dtype=np.float32).reshape(-1, 1)
    files = [write_tabular_parquet(tmp_path / f"part-{i:02d}.parquet", values[i * 100:(i + 1) * 100], row_group_size=10)
             for i in range(12)]
    schema = RecordSchema("parquet", (ModelInputSpec("x", (1,), (ColumnSpec("f0", 1, False),)),))
    first = sample_input_rows(files, schema, 64)
    assert first.size == 64 and len(first.files) == 8 and first.files[0] == files[0] and first.files[-1] == files[-1]
    np.testing.assert_array_equal(first.rows[0], sample_input_rows(files, schema, 64).rows[0])
    assert first.rows[0][:8, 0].tolist() == [0, 10, 30, 40, 50, 60, 80, 90]  # 8 of 10 row groups, evenly spaced: first row each
    assert first.files == tuple(files[i] for i in (0, 2, 3, 5, 6, 8, 9, 11))
    import pyarrow as pa

    pq.write_table(pa.table({"f0": pa.array([1.0, None, 3.0], pa.float32())}), tmp_path / "nulls.parquet")
    with_nulls = sample_input_rows([str(tmp_path / "nulls.parquet")], schema, 10)
    assert with_nulls.rows[0][:, 0].tolist() == [1.0, 3.0]


def test_images_and_tensor_inputs_keep_zeros_under_auto(tmp_path):
    from pipeline.baselines import is_tabular
    from transforms.records import ColumnSpec, ModelInputSpec

    assert is_tabular(ModelInputSpec("t", (3,), tuple(ColumnSpec(c, 1, False) for c in "abc")))
    assert not is_tabular(ModelInputSpec("p", (64,), (ColumnSpec("pixels", 64, True),)))
    assert not is_tabular(ModelInputSpec("ids", (1,), (ColumnSpec("island", 1, False, kind="int64_list", dtype="int64"),)))


def test_a_blur_baseline_blurs_each_image_and_the_tabular_input_keeps_its_median(tmp_path, capsys):
    """IG on a linear model is (x - baseline) . w exactly: the image part against each row's own
    blurred image (scipy's gaussian_filter as the reference), the tabular part against the median."""
    import pyarrow as pa
    from scipy import ndimage

    from helpers import save_multi_input_linear_model

    model, weights, bias = save_multi_input_linear_model(tmp_path / "multi.keras")
    rng = np.random.default_rng(5)
    images = rng.random((12, 4, 4, 1)).astype(np.float32)
    tabular = (rng.normal(size=(12, 3)) + [10.0, -4.0, 0.0]).astype(np.float32)
    pq.write_table(pa.table({"id": np.arange(12), "img": pa.array(list(images.reshape(12, 16)), pa.list_(pa.float32(), 16)),
                             "age": tabular[:, 0], "height": tabular[:, 1], "weight": tabular[:, 2]}), tmp_path / "multi.parquet")
    args = ["run", "--model", model, "--input", str(tmp_path / "multi.parquet"), "--key-column", "id", "--inputs", "image=img",
            "--inputs", "tabular=age,height,weight", "--steps", "8", "--baseline", "blur"]
    assert main([*args, "--output", str(tmp_path / "out"), "--blur-sigma", "1.0"]) == 0
    blurred = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, 1.0, 1.0, 0), mode="reflect", truncate=4.0)
    median = np.median(tabular.astype(np.float64), axis=0)
    rows = rows_by_key(read_parquet_dir(tmp_path / "out"))
    for i in range(12):
        w = weights[:, rows[i]["target"]]
        np.testing.assert_allclose(rows[i]["attr_img"], (images[i] - blurred[i]).reshape(-1) * w[:16], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose([rows[i][f"attr_{c}"] for c in ("age", "height", "weight")], (tabular[i] - median) * w[16:],
                                   rtol=1e-4, atol=1e-5)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["baseline"]["per_input"] == {"image": "blur (sigma 1 px)", "tabular": "median"}
    assert list(manifest["baseline"]["values"]) == ["tabular"]
    # the default width, a tenth of the smaller side: 0.4 px on 4 x 4
    assert main([*args, "--output", str(tmp_path / "default")]) == 0
    assert json.loads((tmp_path / "default" / "manifest.json").read_text())["baseline"]["per_input"]["image"] == "blur (sigma 0.4 px)"
    capsys.readouterr()


def test_blur_on_a_model_without_images_and_blur_sigma_without_blur_are_one_line_errors(offset_data, tmp_path, capsys):
    model, data, _, _ = offset_data
    assert _run(model, data, tmp_path / "a", "--baseline", "blur") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: baseline 'blur' blurs image inputs (height, width, channels); this model's inputs are "
                          "{'features': (6,)}") and len(err.strip().splitlines()) == 1, err
    assert _run(model, data, tmp_path / "b", "--blur-sigma", "2") == 2
    assert "blur_sigma sets the blur baseline's width, but the baseline is 'auto'" in capsys.readouterr().err


def test_auto_on_an_input_without_valid_rows_falls_back_to_zeros_and_says_so(linear_model, tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({c: pa.array([], pa.float32()) for c in COLUMNS}), str(tmp_path / "empty.parquet"))
    assert main(["run", "--model", linear_model[0], "--input", str(tmp_path / "empty.parquet"), "--output", str(tmp_path / "out"),
                 "--quiet"]) == 0
    baseline = json.loads((tmp_path / "out" / "manifest.json").read_text())["baseline"]
    assert baseline["per_input"] == {"features": "zeros"} and baseline["sample"]["rows"] == 0
    assert baseline["note"].startswith("no valid row among the sampled files") and "zeros stand in for the median" in baseline["note"]
    assert main(["run", "--model", linear_model[0], "--input", str(tmp_path / "empty.parquet"), "--output", str(tmp_path / "out2"),
                 "--baseline", "median", "--quiet"]) == 2
