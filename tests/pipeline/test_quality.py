"""The quality audit in real runs (pipeline.quality): what it finds on models whose answer is
known, where it is written, the limits that set the exit status, and that it is deterministic."""

import json

import numpy as np
import pytest

from helpers import save_linear_model, write_tabular_parquet
from pipeline.cli import EXIT_QUALITY_LIMIT, main
from pipeline.config import RunConfig
from pipeline.demo import encode_png, write_image_tfrecord
from pipeline.plan import resolve_plan
from pipeline.quality import audit_quality


@pytest.fixture
def offset_data(tmp_path):
    """A linear model over features that sit far from zero (offsets unrelated to the weights)."""
    rng = np.random.default_rng(11)
    offsets, spreads = np.array([50.0, 0.0, 20.0, -5.0, 80.0, 1.0]), np.array([0.5, 4.0, 1.0, 3.0, 0.2, 2.0])
    features = (offsets + spreads * rng.normal(size=(300, 6))).astype(np.float32)
    weights = np.array([[1.0], [1.5], [-2.0], [1.0], [3.0], [-1.2]], np.float32)
    model = save_linear_model(tmp_path / "additive.keras", weights, np.zeros(1, np.float32))
    data = write_tabular_parquet(tmp_path / "offsets.parquet", features, ids=np.arange(300), row_group_size=64)
    return str(model), str(data)


def _run(model, data, output, *extra):
    return main(["run", "--model", model, "--input", data, "--output", str(output), "--key-column", "id", "--steps", "16",
                 "--quiet", *extra])


def test_every_run_audits_by_default_writes_it_and_the_zeros_baseline_is_flagged(offset_data, tmp_path, quality_audit_default, caplog, capsys):
    model, data = offset_data
    assert _run(model, data, tmp_path / "median") == 0
    summary = json.loads((tmp_path / "median" / "summary.json").read_text())
    manifest = json.loads((tmp_path / "median" / "manifest.json").read_text())
    quality = summary["quality"]
    assert manifest["quality"] == quality and manifest["settings"]["quality_rows"] == quality_audit_default == 256
    assert quality["rows"] > 200 and quality["seed"] == 0 and quality["reference"] == "the run's baseline"
    assert quality["deletion"]["gap"] > 0.3 and quality["insertion"]["gap"] > 0.3  # a linear model: the order is right
    assert quality["baseline_sensitivity"]["other"] == "zeros" and quality["baseline_sensitivity"]["spearman"] < 0
    assert quality["input_dominance"]["spearman"]["median"] < 0.8 and not any("input-dominated" in f for f in quality["flags"])

    caplog.clear()
    code = _run(model, data, tmp_path / "zeros", "--baseline", "zeros", "--quality-limit", "input_dominance<=0.9",
                "--quality-limit", "deletion_gap>=0.1")
    assert code == EXIT_QUALITY_LIMIT
    quality = json.loads((tmp_path / "zeros" / "summary.json").read_text())["quality"]
    assert quality["input_dominance"]["spearman"]["median"] > 0.9  # |attr| = |x| |w|: the offsets rank it
    assert quality["baseline_sensitivity"]["other"] == "the sample's median"
    assert quality["limits"]["input_dominance"]["passed"] is False and quality["limits"]["deletion_gap"]["passed"] is True
    assert any(r.getMessage().startswith("quality: input-dominated") for r in caplog.records)
    err = capsys.readouterr().err
    value = quality["input_dominance"]["spearman"]["median"]
    assert f"quality limit failed: input_dominance {value:.4g}, limit <=0.9 (summary.json: quality)" in err
    assert (tmp_path / "zeros" / "manifest.json").exists()  # the results are written: the limit judges them

    assert main(["compare", str(tmp_path / "zeros"), str(tmp_path / "median"), "--allow-different"]) in (0,)
    out = capsys.readouterr().out
    assert "quality audit (A -> B" in out and "input_dominance" in out

    assert _run(model, data, tmp_path / "off", "--quality-rows", "0") == 0
    assert "quality" not in json.loads((tmp_path / "off" / "summary.json").read_text())
    assert main(["report", str(tmp_path / "median"), "--out", str(tmp_path / "report.html")]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Can I trust these attributions?" in page and 'alt="deletion and insertion curves"' in page
    assert "Model randomisation: each audited row" in page


def test_a_model_that_ignores_its_inputs_is_flagged_and_randomisation_is_undefined(tmp_path):
    model = save_linear_model(tmp_path / "constant.keras", np.zeros((6, 2), np.float32), np.array([0.3, -0.1], np.float32))
    data = write_tabular_parquet(tmp_path / "data.parquet", np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32),
                                 ids=np.arange(50))
    config = RunConfig.from_mapping({"model": str(model), "input": str(data), "output": str(tmp_path / "out"), "key_column": "id",
                                     "quality_rows": 40})
    quality = audit_quality(resolve_plan(config))
    assert quality["rows"] == 40 and quality["zero_attribution_rows"] == 40
    assert quality["randomisation"]["spearman"]["median"] is None and quality["randomisation"]["spearman"]["undefined_rows"] == 40
    assert quality["flags"][0].startswith("attributions are zero on 40 of 40 audited rows")
    assert any("undefined on every audited row" in f for f in quality["flags"])


def _digits_config(tmp_path, digits_cnn, **settings):
    model, images, labels = digits_cnn
    data = tmp_path / "digits.tfrecord"
    if not data.exists():
        write_image_tfrecord(data, [encode_png(i) for i in images[:64]], ids=[f"d{i:03d}" for i in range(64)], labels=labels[:64])
    return RunConfig.from_mapping({"model": str(model), "input": str(data), "output": str(tmp_path / "out"), "key_column": "id",
                                   "images": {"image/encoded": {"size": [16, 16], "channels": 1, "preset": "unit"}},
                                   "quality_rows": 64, "quality_perturbations": 3, **settings})


def test_on_digits_ig_from_black_is_flagged_input_dominated_and_model_independent_and_grad_cam_is_not(digits_cnn, tmp_path):
    ig = audit_quality(resolve_plan(_digits_config(tmp_path, digits_cnn, steps=16)))
    assert ig["units"] == {"ranked": "pixels (channels summed)", "deleted": "patches of 2 x 2 pixels"}
    assert ig["input_dominance"]["spearman"]["median"] > 0.8 and ig["randomisation"]["spearman"]["median"] > 0.5
    assert any(f.startswith("input-dominated") for f in ig["flags"]) and any(f.startswith("model randomisation") for f in ig["flags"])
    assert ig["baseline_sensitivity"]["other"] == "a blur"

    cam = audit_quality(resolve_plan(_digits_config(tmp_path, digits_cnn, method="grad_cam")))
    assert cam["input_dominance"]["spearman"]["median"] < 0.8 and cam["randomisation"]["spearman"]["median"] < 0.5
    assert cam["flags"] == [] and cam["baseline_sensitivity"] == {"not_applicable": "grad_cam has no baseline"}
    assert cam["deletion"]["gap"] > 0 and cam["insertion"]["gap"] > 0


_NUMBERS = ("randomisation", "input_dominance", "deletion", "insertion", "infidelity", "sensitivity_max", "baseline_sensitivity")


def _numbers(quality):
    return {name: quality[name] for name in _NUMBERS}


def test_the_audit_is_deterministic_and_independent_of_batch_chunk_and_file_order(offset_data, tmp_path):
    model, data = offset_data
    import pyarrow.parquet as pq

    table = pq.read_table(data)
    first, second = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(table.slice(0, 150), first, row_group_size=50)
    pq.write_table(table.slice(150), second, row_group_size=50)

    def audit(inputs, **settings):
        config = RunConfig.from_mapping({"model": model, "input": inputs, "output": str(tmp_path / "out"), "key_column": "id",
                                         "method": "smoothgrad", "samples": 8, "quality_rows": 60, **settings})
        return audit_quality(resolve_plan(config))

    reference = audit([str(first), str(second)])
    assert _numbers(audit([str(first), str(second)])) == _numbers(reference)
    again = [audit([str(second), str(first)]), audit([str(first), str(second)], batch_size=7, chunk_size=50)]
    for other in again:
        assert json.dumps(_numbers(other), sort_keys=True) == json.dumps(_numbers(reference), sort_keys=True)
    assert audit([str(first), str(second)], quality_seed=1)["deletion"]["random_curve"] != reference["deletion"]["random_curve"]


def test_quality_settings_mistakes_are_one_line_with_status_2(offset_data, tmp_path, capsys):
    model, data = offset_data
    assert _run(model, data, tmp_path / "a", "--quality-limit", "randomization<=0.5") == 2
    assert "quality limit on 'randomization': not a quality number; known: ['baseline_sensitivity'" in capsys.readouterr().err
    assert _run(model, data, tmp_path / "b", "--quality-limit", "randomisation=0.5") == 2
    assert "expected NAME<=VALUE or NAME>=VALUE" in capsys.readouterr().err
    assert _run(model, data, tmp_path / "c", "--quality-rows", "0", "--quality-limit", "randomisation<=0.5") == 2
    assert "quality_rows: 0 turns off" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_text_at_a_layer_and_a_model_with_an_image_and_a_tabular_input_are_audited(tmp_path):
    from helpers import save_multi_input_linear_model, save_token_model, write_token_parquet

    rng = np.random.default_rng(5)
    model, _, _ = save_token_model(tmp_path / "tokens.keras", classes=2, hidden=8, extra_float=3)
    data = write_token_parquet(tmp_path / "tokens.parquet", rng.integers(0, 12, size=(40, 6)), ids=np.arange(40),
                               extra=rng.normal(size=(40, 3)))
    config = RunConfig.from_mapping({"model": model, "input": data, "output": str(tmp_path / "o1"), "key_column": "id",
                                     "quality_rows": 32, "steps": 8})
    quality = audit_quality(resolve_plan(config))
    assert quality["rows"] == 32 and quality["units"] == {"ranked": "each value, positions (width summed)"}
    assert quality["randomisation"]["spearman"]["rows"] == 32 and quality["deletion"]["points"] == 10  # 6 positions + 3 values
    assert quality["baseline_sensitivity"]["other"] == "the sample's median"  # the float input 'extra' has one

    model, _, _ = save_multi_input_linear_model(tmp_path / "multi.keras")
    images, tabular = rng.normal(size=(30, 16)).astype(np.float32), rng.normal(size=(30, 3)).astype(np.float32)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": np.arange(30), "image": pa.array(list(images), pa.list_(pa.float32())),
                             **{f"t{j}": tabular[:, j] for j in range(3)}}), tmp_path / "multi.parquet")
    config = RunConfig.from_mapping({"model": model, "input": str(tmp_path / "multi.parquet"), "output": str(tmp_path / "o2"),
                                     "key_column": "id", "inputs": {"image": "image", "tabular": ["t0", "t1", "t2"]},
                                     "quality_rows": 30, "quality_patch": 2})
    quality = audit_quality(resolve_plan(config))
    assert quality["units"] == {"ranked": "each value, pixels (channels summed)", "deleted": "patches of 2 x 2 pixels"}
    assert quality["deletion"]["points"] == 8  # 4 patches + 3 features + the start
    assert quality["deletion"]["gap"] > 0 and quality["infidelity"]["share"]["median"] is not None
