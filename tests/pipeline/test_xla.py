"""XLA by default (issue 29, attributions.xla_check) through the real pipeline: on the demo MLPs XLA
is kept and its attributions equal the kernels' within the run's completeness bound; on the digits
CNN XLA agrees but is slower, so the kernels are kept; a model XLA cannot compile falls back to the
kernels, says why in the manifest, and writes the kernels' rows; a bound no XLA result meets falls
back too; 'on' without a check; 'off'."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from attributions.xla_check import row_differences
from helpers import read_parquet_dir, rows_by_key, write_tabular_parquet, write_vector_tfrecord
from pipeline.cli import main


def _run(model, data, output, *flags) -> tuple[dict, dict]:
    """A run with XLA 'auto' unless flags give --xla (the test suite's default is 'off', tests/conftest.py)."""
    mode = [] if "--xla" in flags else ["--xla", "auto"]
    assert main(["run", "--model", str(model), "--input", str(data), "--output", str(output), "--key-column", "id",
                 "--quiet", *mode, *flags]) == 0
    with open(output / "manifest.json") as handle:
        return json.load(handle), rows_by_key(read_parquet_dir(output))


def _attributions(rows: dict, columns: list[str]) -> np.ndarray:
    """(N, V) float64: each row's attribution columns, flattened, in key order."""
    return np.array([np.concatenate([np.ravel(rows[k][c]) for c in columns]) for k in sorted(rows)], np.float64)


def _assert_checked_and_agreeing(auto_manifest: dict, xla_rows: dict, kernel_rows: dict, columns: list[str]) -> None:
    """'auto' compiled and agreed (it then keeps XLA where it timed faster, which a test on a shared
    machine cannot promise for a model this small), and XLA's rows (`--xla on`) are within the bound
    of the kernels' (`--xla off`)."""
    xla = auto_manifest["xla"]
    assert xla["engines_xla_failed"] == 0 and xla["engines_xla_disagreed"] == 0
    assert xla["engines_on_xla"] + xla["engines_xla_slower"] == 1 and xla["largest_difference"] <= xla["bound"] == 0.05
    differences, mismatched = row_differences((_attributions(kernel_rows, columns),), (_attributions(xla_rows, columns),))
    assert mismatched == 0 and np.nanmax(differences) <= 0.05


def test_on_the_digits_cnn_xla_agrees_but_is_slower_so_auto_keeps_the_kernels(digits_cnn, tmp_path):
    """XLA's CPU convolutions are slower than oneDNN's (0.6x per gradient call of the bench's CNN,
    measured): 'auto' checks and turns XLA down; forced on, it agrees within the bound."""
    model, images, _ = digits_cnn
    pixels = (images[:40].astype(np.float32) / 255.0).reshape(40, -1)
    data = write_vector_tfrecord(tmp_path / "digits.tfrecord", pixels, ids=[f"d{i:02d}" for i in range(40)], feature_name="pixels")
    flags = ["--steps", "16", "--baseline", "zeros", "--batch-size", "16"]  # three batches: the check, then the choice
    manifest, auto = _run(model, data, tmp_path / "auto", *flags)
    _, off = _run(model, data, tmp_path / "off", *flags, "--xla", "off")
    on_manifest, on = _run(model, data, tmp_path / "on", *flags, "--xla", "on")
    assert manifest["xla"]["engines_xla_slower"] == 1 and manifest["xla"]["engines_on_kernels"] == 1
    assert "found XLA agreeing but slower than TensorFlow's kernels" in manifest["xla"]["reason"]
    np.testing.assert_array_equal(_attributions(auto, ["attr_pixels"]), _attributions(off, ["attr_pixels"]))  # the kernels' rows
    differences, mismatched = row_differences((_attributions(off, ["attr_pixels"]),), (_attributions(on, ["attr_pixels"]),))
    assert mismatched == 0 and np.nanmax(differences) < 1e-3  # XLA itself agrees: float32 rounding, far inside 0.05
    assert on_manifest["xla"]["engines_on_xla"] == 1


def test_xla_agrees_on_the_breast_cancer_mlp_and_at_the_penguins_layers(tmp_path):
    from pipeline.demo import make_breast_cancer_assets, make_penguins_assets

    cancer = make_breast_cancer_assets(str(tmp_path), epochs=3)
    flags = ["--key-column", "patient_id", "--inputs", "measurements=" + ",".join(cancer["columns"]), "--explain-logits"]
    runs = {}
    for mode in ("auto", "on", "off"):
        out = tmp_path / f"cancer_{mode}"
        assert main(["run", "--model", cancer["model"], "--input", str(tmp_path / "patients-*.parquet"), "--output", str(out),
                     "--quiet", "--xla", mode, *flags]) == 0
        runs[mode] = (json.load(open(out / "manifest.json")), rows_by_key(read_parquet_dir(out), "patient_id"))
    columns = [f"attr_{c}" for c in cancer["columns"]]
    _assert_checked_and_agreeing(runs["auto"][0], runs["on"][1], runs["off"][1], columns)

    penguins = make_penguins_assets(str(tmp_path))
    flags = ["--inputs", "measurements=bill_length_mm,bill_depth_mm,flipper_length_mm,body_mass_g", "--explain-logits",
             "--layer-baseline", "id:0", "--steps", "16"]
    manifest, _ = _run(penguins["model"], penguins["data"], tmp_path / "penguins_auto", *flags)
    _, on = _run(penguins["model"], penguins["data"], tmp_path / "penguins_on", *flags, "--xla", "on")
    _, off = _run(penguins["model"], penguins["data"], tmp_path / "penguins_off", *flags, "--xla", "off")
    assert manifest["model"]["layers"]  # attributed at layers: the split model's upper part compiled with XLA
    columns = [c for c in next(iter(on.values())) if c.startswith("attr_")]
    _assert_checked_and_agreeing(manifest, on, off, columns)


def _uncompilable_model(path):
    """A SavedModel F(x) = x w whose graph also counts x's values missing from a list (ListDiff,
    tf.compat.v1.setdiff1d: an allowlisted op whose output size depends on the values): TensorFlow's
    kernels run it; XLA cannot compile it."""
    weights = tf.constant([[1.0], [-2.0], [0.5]])

    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 3), tf.float32, name="features")])
        def serve(self, features):
            kept = tf.raw_ops.ListDiff(x=tf.reshape(features, [-1]), y=tf.constant([1e9]))[0]
            count = tf.stop_gradient(tf.cast(tf.size(kept), tf.float32))
            return {"score": features @ weights + 0.0 * count}

    module = Module()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path), weights.numpy()[:, 0]


def test_a_model_xla_cannot_compile_falls_back_to_the_kernels_and_says_why(tmp_path):
    model, w = _uncompilable_model(tmp_path / "setdiff")
    x = np.random.default_rng(3).normal(size=(30, 3)).astype(np.float32)
    data = write_tabular_parquet(tmp_path / "rows.parquet", x, ids=np.arange(30), labels=np.zeros(30))
    flags = ["--inputs", "features=f0,f1,f2", "--baseline", "zeros"]
    manifest, rows = _run(model, data, tmp_path / "auto", *flags)
    assert manifest["xla"]["engines_xla_failed"] == 1 and manifest["xla"]["engines_on_kernels"] == 1
    assert manifest["xla"]["engines_on_xla"] == 0
    assert manifest["xla"]["reason"].startswith("1 engine(s) could not compile the model with XLA")
    _, off = _run(model, data, tmp_path / "off", *flags, "--xla", "off")
    columns = ["attr_f0", "attr_f1", "attr_f2"]
    np.testing.assert_array_equal(_attributions(rows, columns), _attributions(off, columns))  # the kernels' rows
    np.testing.assert_allclose(_attributions(rows, columns), x * w, rtol=1e-5, atol=1e-6)  # IG of a linear model
    with pytest.raises(Exception):  # 'on' has no fallback: XLA's own error stops the run
        main(["run", "--model", model, "--input", data, "--output", str(tmp_path / "on"), "--key-column", "id", "--quiet",
              *flags, "--xla", "on"])


def test_a_bound_xla_does_not_meet_falls_back_and_xla_on_skips_the_check(digits_cnn, tmp_path):
    model, images, _ = digits_cnn
    pixels = (images[:8].astype(np.float32) / 255.0).reshape(8, -1)
    data = write_vector_tfrecord(tmp_path / "digits.tfrecord", pixels, ids=[f"d{i}" for i in range(8)], feature_name="pixels")
    flags = ["--steps", "16", "--baseline", "zeros"]
    # A completeness bound of 1e-12: XLA's last-bit rounding of the CNN's convolutions is beyond it.
    manifest, rows = _run(model, data, tmp_path / "tight", *flags, "--completeness-threshold", "1e-12")
    assert manifest["xla"]["bound"] == 1e-12 and manifest["xla"]["engines_xla_disagreed"] == 1
    assert "found XLA's attributions beyond 1e-12" in manifest["xla"]["reason"]
    _, off = _run(model, data, tmp_path / "off", *flags, "--xla", "off")
    np.testing.assert_array_equal(_attributions(rows, ["attr_pixels"]), _attributions(off, ["attr_pixels"]))
    manifest, _ = _run(model, data, tmp_path / "on", *flags, "--xla", "on")
    assert manifest["xla"]["engines_on_xla"] == 1 and manifest["xla"]["reason"] == "xla is 'on': compiled without a check"


def test_xla_mode_is_checked_on_the_launcher(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["run", "--model", "m.keras", "--input", "d.parquet", "--output", str(tmp_path / "o"), "--xla", "fast"])
    assert "--xla: invalid choice: 'fast'" in capsys.readouterr().err
    from pipeline.config import RunConfig

    with pytest.raises(ValueError, match=r"xla 'of' is not valid; expected one of \['auto', 'on', 'off'\]\. Did you mean 'off'\?"):
        RunConfig.from_mapping({"model": "m.keras", "input": ["d.parquet"], "output": str(tmp_path / "o"), "xla": "of"})
