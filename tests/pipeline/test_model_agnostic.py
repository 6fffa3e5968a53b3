"""The model-agnostic methods through the real pipeline (issue 28): sampled_shapley and occlusion on
tabular, image and token inputs, a model whose gradients are zero almost everywhere, a SavedModel,
and the launcher's errors. The methods' own references (enumerated Shapley values, Captum's
occlusion semantics) are in tests/attributions/test_sampled_shapley.py and test_occlusion.py."""

import itertools
import math
import json

import numpy as np
import pytest

from audit.compare import compare_runs
from audit.report import render_report
from audit.runs import load_run
from helpers import read_parquet_dir, rows_by_key, save_linear_model, save_token_model, write_tabular_parquet, write_token_parquet
from helpers import write_vector_tfrecord
from pipeline.cli import main
from pipeline.config import RunConfig
from pipeline.plan import resolve_plan

COLUMNS = [f"f{j}" for j in range(4)]


def _attributions(rows: dict, key, columns=COLUMNS) -> np.ndarray:
    return np.array([rows[key][f"attr_{c}"] for c in columns], dtype=np.float64)


@pytest.fixture
def tabular(tmp_path):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    return write_tabular_parquet(tmp_path / "rows.parquet", x, ids=np.arange(60), labels=np.arange(60) % 2), x


def _rounding_model(path):
    """F(x) = round(3 tanh(x W1) W2): piecewise constant, so its gradient is 0 almost everywhere."""
    import keras

    keras.utils.set_random_seed(2)
    x = keras.Input((4,), name="features")
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(x)
    model = keras.Model(x, keras.ops.round(3.0 * keras.layers.Dense(2, name="head")(hidden)))
    model.save(str(path))
    return str(path), model


def _run(model, data, output, *flags):
    args = ["run", "--model", model, "--input", data, "--output", str(output), "--key-column", "id", "--quiet",
            "--inputs", "features=" + ",".join(COLUMNS), *flags]
    assert main(args) == 0
    return rows_by_key(read_parquet_dir(output))


def test_sampled_shapley_of_a_linear_model_is_exactly_x_minus_baseline_times_w(tmp_path, tabular):
    """Every permutation of a linear model gives each feature the same marginal (x_j - b_j) w_j:
    the sampled values are exact, their standard error 0, and efficiency holds."""
    data, x = tabular
    weights = np.array([[1.5, -2.0], [0.5, 1.0], [-1.0, 0.25], [2.0, 0.0]], np.float32)
    model = save_linear_model(tmp_path / "linear.keras", weights, np.array([0.1, -0.2], np.float32))
    rows = _run(model, data, tmp_path / "out", "--method", "sampled_shapley", "--baseline", "zeros", "--target", "1")
    assert len(rows) == 60
    for key, row in rows.items():
        np.testing.assert_allclose(_attributions(rows, key), x[key] * weights[:, 1], rtol=1e-5, atol=1e-6)
        assert row["completeness_error"] < 1e-5 and row["attribution_stderr"] < 1e-6
    run = load_run(str(tmp_path / "out"))
    assert run.manifest["settings"]["samples"] == 24
    assert json.loads(read_parquet_dir(tmp_path / "out").schema.metadata[b"attribution.parameters"])["players"] == 4
    overall = run.groups[("overall", "all")]
    assert overall["completeness"]["rows_over_threshold"] == 0
    assert "mean_abs_interval" in overall["features"]["f0"]  # summaries, compare and report work unchanged
    assert not compare_runs(run, run)["drift"]
    assert "Global importance" in render_report(run)


def _exact_shapley(model, x: np.ndarray, baseline: np.ndarray, target: int, players: list) -> np.ndarray:
    """Shapley values of v(S) = F(x on S's columns, baseline elsewhere), enumerated (players: lists of columns)."""
    count = len(players)
    coalitions = list(itertools.product([0, 1], repeat=count))
    points = np.array([np.where(np.isin(np.arange(len(x)), [c for p, on in zip(players, z) if on for c in p]), x, baseline)
                       for z in coalitions], np.float32)
    value = dict(zip(coalitions, np.asarray(model(points))[:, target].astype(np.float64)))
    phi = np.zeros(count)
    for j in range(count):
        for z in coalitions:
            if z[j]:
                continue
            size = sum(z)
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            with_j = tuple(1 if i == j else on for i, on in enumerate(z))
            phi[j] += weight * (value[with_j] - value[z])
    return phi


def test_a_piecewise_constant_model_gets_zero_gradients_but_real_shapley_values_and_occlusions(tmp_path, tabular):
    data, x = tabular
    path, model = _rounding_model(tmp_path / "rounding.keras")
    gradients = _run(path, data, tmp_path / "gradient", "--method", "gradient", "--target", "0")
    assert all(not _attributions(gradients, k).any() for k in gradients)  # useless: 0 everywhere
    shapley = _run(path, data, tmp_path / "shapley", "--method", "sampled_shapley", "--baseline", "zeros", "--target", "0",
                   "--samples", "200")
    occluded = _run(path, data, tmp_path / "occlusion", "--method", "occlusion", "--baseline", "zeros", "--target", "0")
    nonzero = 0
    for key in range(60):
        exact = _exact_shapley(model, x[key], np.zeros(4, np.float32), 0, [[0], [1], [2], [3]])
        sampled = _attributions(shapley, key)
        assert np.abs(sampled - exact).max() <= 4 * shapley[key]["attribution_stderr"] + 1e-4, key
        assert shapley[key]["completeness_error"] < 1e-5
        full = float(np.asarray(model(x[key][None]))[0, 0])
        expected = [full - float(np.asarray(model(np.where(np.arange(4) == j, 0.0, x[key])[None].astype(np.float32)))[0, 0])
                    for j in range(4)]
        np.testing.assert_allclose(_attributions(occluded, key), expected, atol=1e-6)
        nonzero += bool(np.any(exact != 0))
    assert nonzero >= 30  # the rounding moves for most rows: the check is not of zeros


def test_groups_join_columns_into_one_player_split_evenly_between_them(tmp_path, tabular):
    data, x = tabular
    path, model = _rounding_model(tmp_path / "rounding.keras")
    rows = _run(path, data, tmp_path / "groups", "--method", "sampled_shapley", "--baseline", "zeros", "--target", "0",
                "--groups", "front=f0,f1", "--samples", "100")
    for key in range(0, 60, 7):
        exact = _exact_shapley(model, x[key], np.zeros(4, np.float32), 0, [[0, 1], [2], [3]])
        attributions = _attributions(rows, key)
        assert attributions[0] == attributions[1]  # one player: its value split evenly over its columns
        sampled = np.array([attributions[0] + attributions[1], attributions[2], attributions[3]])
        assert np.abs(sampled - exact).max() <= 4 * rows[key]["attribution_stderr"] * 2 + 1e-4
    names = json.loads(read_parquet_dir(tmp_path / "groups").schema.metadata[b"attribution.parameters"])["player_names"]
    assert names == ["front", "f2", "f3"]


def test_a_saved_model_is_explained_like_the_keras_file(tmp_path, tabular):
    import keras

    data, x = tabular
    weights = np.array([[1.0], [-1.0], [0.5], [2.0]], np.float32)
    keras_path = save_linear_model(tmp_path / "linear.keras", weights, np.zeros(1, np.float32))
    keras.saving.load_model(keras_path).export(str(tmp_path / "exported"), verbose=False)
    rows = _run(str(tmp_path / "exported"), data, tmp_path / "out", "--method", "sampled_shapley", "--baseline", "zeros")
    for key in range(60):
        np.testing.assert_allclose(_attributions(rows, key), x[key] * weights[:, 0], rtol=1e-5, atol=1e-6)


def test_image_patches_and_sliding_occlusion_on_the_digits_cnn(digits_cnn, tmp_path):
    model, images, labels = digits_cnn
    pixels = (images[:10].astype(np.float32) / 255.0).reshape(10, -1)
    data = write_vector_tfrecord(tmp_path / "digits.tfrecord", pixels, ids=[f"d{i}" for i in range(10)], feature_name="pixels")
    common = ["run", "--model", model, "--input", data, "--key-column", "id", "--quiet", "--baseline", "zeros"]
    assert main([*common, "--output", str(tmp_path / "shapley"), "--method", "sampled_shapley", "--patch", "4", "--samples", "8"]) == 0
    rows = read_parquet_dir(tmp_path / "shapley")
    parameters = json.loads(rows.schema.metadata[b"attribution.parameters"])
    assert parameters["players"] == 16 and parameters["player_names"][:2] == ["pixels[0:4, 0:4]", "pixels[0:4, 4:8]"]
    maps = np.array(rows.column("attr_pixels").to_pylist()).reshape(10, 16, 16)
    for m in maps:  # each 4 x 4 patch holds one value, spread evenly over its pixels
        patches = m.reshape(4, 4, 4, 4).transpose(0, 2, 1, 3).reshape(16, 16)
        np.testing.assert_allclose(patches, patches[:, :1] * np.ones((1, 16)), rtol=1e-5, atol=1e-9)
    assert max(rows.column("completeness_error").to_pylist()) < 1e-4
    background = write_vector_tfrecord(tmp_path / "background.tfrecord", (images[100:108].astype(np.float32) / 255.0).reshape(8, -1),
                                       ids=[f"b{i}" for i in range(8)], feature_name="pixels")
    assert main(["run", "--model", model, "--input", data, "--key-column", "id", "--quiet", "--output", str(tmp_path / "kernel"),
                 "--method", "kernel_shap", "--patch", "8", "--background", background]) == 0
    kernel = read_parquet_dir(tmp_path / "kernel")
    assert json.loads(kernel.schema.metadata[b"attribution.parameters"])["players"] == 4
    assert max(kernel.column("completeness_error").to_pylist()) < 1e-4 and set(kernel.column("attribution_stderr").to_pylist()) == {0.0}
    assert main([*common, "--output", str(tmp_path / "sliding"), "--method", "occlusion", "--window", "4", "--stride", "2"]) == 0
    slid = np.array(read_parquet_dir(tmp_path / "sliding").column("attr_pixels").to_pylist())
    assert slid.shape == (10, 256) and np.abs(slid).sum(axis=1).min() > 0


def test_token_positions_at_the_embedding_are_the_players(tmp_path):
    """A linear model of the mean embedding: each position adds (e(x_t) - 0) @ W / length to the
    score whatever the others are, so its Shapley value is exactly that."""
    length = 6
    model, embedding, weights = save_token_model(tmp_path / "tokens.keras", vocab=12, length=length, dim=4, classes=2)
    tokens = np.random.default_rng(1).integers(0, 12, size=(20, length))
    data = write_token_parquet(tmp_path / "tokens.parquet", tokens, ids=np.arange(20))
    assert main(["run", "--model", model, "--input", data, "--output", str(tmp_path / "out"), "--key-column", "id", "--quiet",
                 "--method", "sampled_shapley", "--target", "1"]) == 0
    rows = rows_by_key(read_parquet_dir(tmp_path / "out"))
    for key, row in rows.items():
        expected = embedding[tokens[key]] @ weights[:, 1] / length  # (length,)
        np.testing.assert_allclose(row["attr_tokens"], expected, rtol=1e-4, atol=1e-6)
    # KernelSHAP against background rows: each position's value is (e(x_t) - mean_r e(r_t)) @ W / length.
    background = np.random.default_rng(2).integers(0, 12, size=(5, length))
    reference = write_token_parquet(tmp_path / "background.parquet", background, ids=np.arange(5))
    assert main(["run", "--model", model, "--input", data, "--output", str(tmp_path / "kernel"), "--key-column", "id", "--quiet",
                 "--method", "kernel_shap", "--target", "1", "--background", reference]) == 0
    rows = rows_by_key(read_parquet_dir(tmp_path / "kernel"))
    for key, row in rows.items():
        expected = (embedding[tokens[key]] - embedding[background].mean(axis=0)) @ weights[:, 1] / length
        np.testing.assert_allclose(row["attr_tokens"], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("settings, message", [
    ({"method": "sampled_shapley", "samples": 1}, "sampled_shapley needs samples >= 2"),
    ({"method": "kernel_shap"}, "needs background rows"),
    ({"method": "occlusion", "window": 4}, "needs both window and stride"),
    ({"method": "sampled_shapley", "groups": {"a": ["f0", "nope"]}}, "groups name column(s) ['nope']"),
    ({"method": "sampled_shapley", "groups": {"all": COLUMNS}}, "this run has 1"),
    ({"method": "occlusion", "window": 2, "stride": 1}, "sliding window (window, stride) occludes one image input"),
    ({"method": "integrated_gradients", "groups": {"a": ["f0"]}}, "setting 'groups' applies only to method(s)"),
])
def test_launcher_refuses_bad_player_settings_with_what_to_do(tmp_path, tabular, settings, message):
    data, _ = tabular
    model = save_linear_model(tmp_path / "linear.keras", np.ones((4, 1), np.float32), np.zeros(1, np.float32))
    with pytest.raises(ValueError) as error:
        resolve_plan(RunConfig.from_mapping({"model": model, "input": data, "output": str(tmp_path / "out"), "key_column": "id",
                                             "inputs": {"features": COLUMNS}, **settings}))
    assert message in str(error.value)


def test_kernel_shap_of_a_linear_model_is_w_times_x_minus_the_background_mean(tmp_path, tabular):
    """KernelSHAP against a background set: v(S) averages F over the background rows, so for a
    linear model phi_j = w_j (x_j - mean_r r_j), enumerated (4 players) or with a k-means summary
    (weighted rows: the weighted mean)."""
    data, x = tabular
    weights = np.array([[1.5, -2.0], [0.5, 1.0], [-1.0, 0.25], [2.0, 0.0]], np.float32)
    model = save_linear_model(tmp_path / "linear.keras", weights, np.array([0.1, -0.2], np.float32))
    background = np.random.default_rng(8).normal(loc=0.5, size=(30, 4)).astype(np.float32)
    path = write_tabular_parquet(tmp_path / "background.parquet", background, ids=np.arange(30))
    rows = _run(model, data, tmp_path / "out", "--method", "kernel_shap", "--background", path, "--target", "0")
    for key, row in rows.items():
        np.testing.assert_allclose(_attributions(rows, key), (x[key] - background.mean(axis=0)) * weights[:, 0], rtol=1e-4, atol=1e-5)
        assert row["completeness_error"] < 1e-5 and row["attribution_stderr"] == 0.0  # 14 coalitions: all enumerated
    summarized = _run(model, data, tmp_path / "clusters", "--method", "kernel_shap", "--background", path, "--target", "0",
                      "--background-clusters", "5")
    from attributions.kernel_shap import background_summary

    centers, center_weights = background_summary((background,), 5, 0)
    for key in range(60):
        np.testing.assert_allclose(_attributions(summarized, key), (x[key] - center_weights @ centers[0]) * weights[:, 0], rtol=1e-4, atol=1e-5)
    run = load_run(str(tmp_path / "clusters"))
    assert run.manifest["settings"]["background_clusters"] == 5 and not compare_runs(load_run(str(tmp_path / "out")), run)["spans_different"]


def test_kernel_shap_on_a_zero_gradient_model_matches_the_enumerated_shapley_values_of_its_background_game(tmp_path, tabular):
    data, x = tabular
    path, model = _rounding_model(tmp_path / "rounding.keras")
    background = np.random.default_rng(3).normal(size=(6, 4)).astype(np.float32)
    reference = write_tabular_parquet(tmp_path / "background.parquet", background, ids=np.arange(6))
    rows = _run(path, data, tmp_path / "out", "--method", "kernel_shap", "--background", reference, "--target", "1")
    for key in range(0, 60, 5):
        exact = np.mean([_exact_shapley(model, x[key], r, 1, [[0], [1], [2], [3]]) for r in background], axis=0)
        np.testing.assert_allclose(_attributions(rows, key), exact, atol=1e-5)


def test_the_quality_audit_explains_the_sample_with_the_method_and_its_baseline(tmp_path, tabular):
    """The launcher's audit runs the model-agnostic method on its sample like the workers, and the
    baseline test applies (these methods take a baseline as integrated gradients does)."""
    data, _ = tabular
    path, _ = _rounding_model(tmp_path / "rounding.keras")
    _run(path, data, tmp_path / "out", "--method", "sampled_shapley", "--quality-rows", "32", "--samples", "8")
    quality = load_run(str(tmp_path / "out")).manifest["quality"]
    assert quality["method"] == "sampled_shapley" and quality["rows"] == 32
    assert quality["baseline_sensitivity"]["other"] == "zeros" and quality["baseline_sensitivity"]["spearman"] is not None
    assert quality["randomisation"]["spearman"]["rows"] == 32
