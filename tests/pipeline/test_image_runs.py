"""Image-bytes inputs and Grad-CAM end to end: PNG-encoded digits in TFRecord and Parquet, a small
CNN trained on them, the real command line on the DirectRunner; values against independent
computations (the same pixels given as floats, the pure Grad-CAM function, a numpy resize)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import bilinear_resize, linear_weights, read_parquet_dir, rows_by_key, save_linear_model, write_vector_tfrecord
from pipeline.cli import main
from pipeline.config import RunConfig
from pipeline.demo import encode_png, write_image_tfrecord
from pipeline.plan import resolve_plan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMN = "image/encoded"


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, timeout=300)


def _unit(images: np.ndarray) -> np.ndarray:
    """The pixels the 'unit' preset gives for uint8 images, computed in numpy."""
    return images.astype(np.float32) * np.float32(1 / 255)


def _png_tfrecord(path, images, labels, extra: dict = None):
    """PNG digits with ids d000.., plus `extra` {id: bytes} records appended."""
    encoded = [encode_png(i) for i in images] + list((extra or {}).values())
    ids = [f"d{i:03d}" for i in range(len(images))] + list((extra or {}).keys())
    return write_image_tfrecord(path, encoded, ids=ids, labels=list(labels) + [0] * len(extra or {}))


def test_grad_cam_through_the_command_line_on_png_digits(digits_cnn, tmp_path):
    model_path, images, labels = digits_cnn
    images, labels = images[:40], labels[:40]
    rgb = encode_png(np.repeat(images[0], 3, axis=-1))
    data = _png_tfrecord(tmp_path / "digits.tfrecord", images, labels, {"bad-bytes": b"GIF89a\x02\x00\x02\x00 but not really", "bad-rgb": rgb})
    out = tmp_path / "cam"
    result = _cli("run", "--model", model_path, "--input", data, "--output", str(out), "--key-column", "id",
                  "--passthrough", "label", "--method", "grad_cam", "--image", f"{COLUMN}:16x16x1", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "attributed 40 of 42 records (2 dead-lettered)" in result.stdout

    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["records_read"] == counts["rows_written"] + counts["dead_letter_rows_written"] == 42 and counts["reconciled"]
    assert manifest["model"]["grad_cam"] == {
        "layer": "last_conv", "layer_shape": [8, 8, 16], "columns": {f"gradcam_{COLUMN}": [8, 8], f"attr_{COLUMN}": [16, 16, 1]},
    }
    assert manifest["settings"]["images"] == {COLUMN: {"size": [16, 16], "channels": 1, "scale": 1 / 255, "offset": 0.0}}
    dead = {r["key"]: r["error"] for r in read_parquet_dir(out, "dead_letter").to_pylist()}
    assert dead["bad-bytes"].startswith(f"column '{COLUMN}' is not a decodable image (")
    assert dead["bad-rgb"] == f"column '{COLUMN}' image has 3 channel(s), expected 1"

    table = read_parquet_dir(out)
    assert json.loads(table.schema.metadata[b"attribution.parameters"]) == {"layer": "last_conv", "layer_shape": [8, 8, 16]}
    assert "convergence_delta" not in table.column_names and "completeness_error" not in table.column_names
    rows = rows_by_key(table)
    keys = [f"d{i:03d}" for i in range(40)]

    import keras

    from attributions.grad_cam import GradCam, conv_layer

    model = keras.saving.load_model(model_path, safe_mode=True)
    pixels = _unit(images)
    predicted = np.asarray(model(pixels)).argmax(axis=1)
    targets = np.array([rows[k]["target"] for k in keys])
    np.testing.assert_array_equal(targets, predicted)
    assert manifest["settings"]["explain_logits"] is True  # by default Grad-CAM explains the class score before the softmax
    model.layers[-1].activation = keras.activations.linear  # the reference: the same model without its final softmax
    maps, _, scores = GradCam(model, conv_layer(model, "last_conv"), model.outputs[0])(pixels, targets.astype(np.int32))
    written = np.array([rows[k][f"gradcam_{COLUMN}"] for k in keys]).reshape(40, 8, 8)
    np.testing.assert_allclose(written, maps, rtol=1e-5, atol=1e-6)
    assert (written.reshape(40, -1).max(axis=1) > 0).mean() > 0.5  # most maps are not all zero: the comparison means something
    np.testing.assert_allclose([rows[k]["target_score"] for k in keys], scores, rtol=1e-5, atol=1e-6)
    upsampled = np.array([rows[k][f"attr_{COLUMN}"] for k in keys]).reshape(40, 16, 16)
    np.testing.assert_allclose(upsampled, np.stack([bilinear_resize(m, 16, 16) for m in written]), rtol=1e-5, atol=1e-6)
    assert [rows[k]["label"] for k in keys] == labels.tolist()

    report = _cli("report", str(out), "--out", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "report.html").read_text()
    assert f'alt="exemplars {COLUMN}"' in html  # the maps overlaid on the decoded images
    assert ("The maps are Grad-CAM at layer last_conv (8&times;8) of the class score before the final softmax/sigmoid (as "
            "Grad-CAM was published), upsampled (bilinear) to the image") in html


def test_integrated_gradients_on_decoded_png_equal_those_on_the_same_pixels_as_floats(digits_cnn, tmp_path):
    model_path, images, labels = digits_cnn
    images, labels = images[40:64], labels[40:64]
    png = _png_tfrecord(tmp_path / "png.tfrecord", images, labels)
    floats = write_vector_tfrecord(tmp_path / "floats.tfrecord", _unit(images).reshape(len(images), -1),
                                   ids=[f"d{i:03d}" for i in range(len(images))], feature_name="pixels")
    common = ["run", "--model", model_path, "--key-column", "id", "--steps", "16", "--quiet"]
    assert main([*common, "--input", png, "--output", str(tmp_path / "png"), "--image", f"{COLUMN}:16x16x1:unit"]) == 0
    assert main([*common, "--input", floats, "--output", str(tmp_path / "floats")]) == 0
    from_png, from_floats = (rows_by_key(read_parquet_dir(tmp_path / name)) for name in ("png", "floats"))
    assert sorted(from_png) == sorted(from_floats) and len(from_png) == 24
    for key, row in from_png.items():
        np.testing.assert_allclose(row[f"attr_{COLUMN}"], from_floats[key]["attr_pixels"], rtol=1e-6, atol=1e-8)
        assert row["target"] == from_floats[key]["target"]
        assert row["completeness_error"] == pytest.approx(from_floats[key]["completeness_error"], abs=1e-6)


def test_a_parquet_binary_column_of_pngs_resized_to_the_model(digits_cnn, tmp_path):
    import tensorflow as tf

    model_path, images, labels = digits_cnn
    small = images[64:76, ::2, ::2]  # the 8 x 8 originals (every pixel was repeated 2 x 2)
    encoded = [encode_png(i) for i in small] + [None, b"\x89PNG\r\n\x1a\n cut"]
    table = pa.table({"id": [f"p{i}" for i in range(14)], "png": pa.array(encoded, pa.binary())})
    pq.write_table(table, tmp_path / "digits.parquet")
    out = tmp_path / "out"
    code = main(["run", "--model", model_path, "--input", str(tmp_path / "digits.parquet"), "--output", str(out),
                 "--key-column", "id", "--image", "png:16x16x1", "--method", "gradient", "--max-dead-letter-fraction", "0.2", "--quiet"])
    assert code == 0  # the one image input reads the one image column without --inputs
    dead = {r["key"]: r["error"] for r in read_parquet_dir(out, "dead_letter").to_pylist()}
    assert dead["p12"] == "column 'png' is null" and dead["p13"].startswith("column 'png' is not a decodable image (")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["records_read"] == 14 and manifest["counts"]["records_attributed"] == 12
    assert manifest["input"]["mapping"] == {"pixels": ["png"]}

    import keras

    model = keras.saving.load_model(model_path, safe_mode=True)
    pixels = bilinear_resize(small.transpose(1, 2, 0, 3).reshape(8, 8, -1), 16, 16).reshape(16, 16, 12, 1).transpose(2, 0, 1, 3)
    pixels = tf.constant((pixels / 255).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(pixels)
        outputs = model(pixels, training=False)
        scores = tf.gather(outputs, tf.argmax(outputs, axis=1), axis=1, batch_dims=1)
    gradients = tape.gradient(scores, pixels).numpy().reshape(12, -1)
    rows = rows_by_key(read_parquet_dir(out))
    written = np.array([rows[f"p{i}"]["attr_png"] for i in range(12)])
    np.testing.assert_allclose(written, gradients, rtol=1e-3, atol=1e-5)  # pixels resized in numpy: float rounding apart


def _plan(model, data, output, **settings):
    return resolve_plan(RunConfig.from_mapping({"model": model, "input": data, "output": str(output), **settings}))


def test_launcher_errors_say_what_was_seen_and_how_to_fix_it(digits_cnn, tmp_path):
    model_path, images, labels = digits_cnn
    data = _png_tfrecord(tmp_path / "d.tfrecord", images[:3], labels[:3])
    image = {COLUMN: {"size": [16, 16], "channels": 1}}
    with pytest.raises(ValueError, match=r"layer 'scores' outputs \(None, 10\); pass a convolutional layer with --layer "
                                         r"\(4-D layers: \['first_conv', 'pool', 'last_conv'\]\)"):
        _plan(model_path, data, tmp_path / "o", method="grad_cam", images=image, layers=["scores"])
    with pytest.raises(ValueError, match=r"decoded to 8x8x1 .* model input 'pixels' has shape \(16, 16, 1\); set images.image/encoded.size"):
        _plan(model_path, data, tmp_path / "o", images={COLUMN: {"size": [8, 8], "channels": 1}})
    with pytest.raises(ValueError, match=r"images configures column\(s\) \['thumbnail'\], which no model input reads"):
        _plan(model_path, data, tmp_path / "o", images={**image, "thumbnail": {"size": [4, 4], "channels": 1}}, inputs={"pixels": COLUMN})
    with pytest.raises(ValueError, match=r"Input columns: .*image/encoded \(bytes\).*\. Column 'image/encoded' holds bytes: if they "
                                         r"are encoded PNG/JPEG images, pass --image 'image/encoded:16x16x1' \(docs/images.md\)\.$"):
        _plan(model_path, data, tmp_path / "o")  # --image forgotten
    floats = write_vector_tfrecord(tmp_path / "f.tfrecord", np.zeros((2, 256), np.float32), feature_name="pixels")
    with pytest.raises(ValueError, match=r"image column 'pixels' holds a TFRecord float_list feature with 256 values; an image column must hold one encoded image"):
        _plan(model_path, floats, tmp_path / "o", images={"pixels": {"size": [16, 16], "channels": 1}})

    weights, bias = linear_weights()
    linear = save_linear_model(tmp_path / "linear.keras", weights, bias)
    tabular = write_vector_tfrecord(tmp_path / "t.tfrecord", np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match=r"grad_cam explains a model with one image input \(height, width, channels\).*\{'features': \(6,\)\}"):
        _plan(linear, tabular, tmp_path / "o", method="grad_cam")


def test_a_grad_cam_mistake_on_the_command_line_is_one_line_with_status_2(digits_cnn, tmp_path, capsys):
    model_path, images, labels = digits_cnn
    data = _png_tfrecord(tmp_path / "d.tfrecord", images[:3], labels[:3])
    code = main(["run", "--model", model_path, "--input", data, "--output", str(tmp_path / "o"), "--image", f"{COLUMN}:16x16x1",
                 "--method", "grad_cam", "--layer", "nope"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: layer 'nope' is not a layer of the model; its layers are [") and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_grad_cam_of_the_logits_for_the_top_two_classes_is_cam_of_the_class_weights(digits_cnn, tmp_path):
    # The CNN ends in global average pooling and a dense softmax: at its last conv layer, Grad-CAM of
    # the logit of class t is CAM (Selvaraju et al. section 3.1): ReLU(sum_k W[k, t] A_k) / (h w).
    import keras

    from pipeline.run import run_attribution

    model_path, images, labels = digits_cnn
    images = images[100:110]
    data = _png_tfrecord(tmp_path / "d.tfrecord", images, labels[100:110])
    config = RunConfig.from_mapping({
        "model": model_path, "input": data, "output": str(tmp_path / "out"), "key_column": "id", "method": "grad_cam",
        "images": {COLUMN: {"size": [16, 16], "channels": 1}}, "explain_logits": True, "target": "top_k:2",
    })
    manifest = run_attribution(config)
    assert manifest["counts"]["rows_written"] == 20
    model = keras.saving.load_model(model_path, safe_mode=True)
    conv, pool, last_conv, _, dense = model.layers
    activations = np.asarray(last_conv(pool(conv(_unit(images)))), dtype=np.float64)  # (10, 8, 8, 16)
    weights, bias = (np.asarray(w, dtype=np.float64) for w in dense.get_weights())
    logits = activations.mean(axis=(1, 2)) @ weights + bias  # (10, 10)
    table = read_parquet_dir(tmp_path / "out").to_pylist()
    for row in table:
        i = int(row["id"][1:])
        t = row["target"]
        assert t in np.argsort(-logits[i])[:2]
        cam = np.maximum(activations[i] @ weights[:, t], 0.0) / 64.0  # (8, 8)
        np.testing.assert_allclose(np.reshape(row[f"gradcam_{COLUMN}"], (8, 8)), cam, rtol=1e-4, atol=1e-6)
        assert row["target_score"] == pytest.approx(logits[i, t], rel=1e-5, abs=1e-5)
    assert sum(max(row[f"gradcam_{COLUMN}"]) > 0 for row in table) >= 10  # maps with evidence: the check means something
