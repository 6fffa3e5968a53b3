"""The README's first command: the demo trains real models on real data and attributes them."""

import json

import numpy as np

from helpers import bilinear_resize, read_parquet_dir
from pipeline.demo import penguins_table

COLUMN = "image/encoded"


def test_demo_runs_end_to_end_and_its_results_are_faithful(tmp_path, capsys):
    from pipeline.demo import run_demo

    run_demo(str(tmp_path))
    printed = capsys.readouterr().out
    assert "top features by mean |attribution|" in printed
    assert "input 'island' attributed at layer 'island_embedding'" in printed

    digits = json.loads((tmp_path / "digits_ig" / "manifest.json").read_text())
    assert digits["counts"]["records_attributed"] == 1797 and digits["counts"]["reconciled"]
    table = read_parquet_dir(tmp_path / "digits_ig")
    assert table.num_rows == 1797
    # A trained CNN mostly predicts the label; its IG attributions are complete (GL, 32 steps).
    accuracy = np.mean(np.array(table.column("target").to_pylist()) == np.array(table.column("label").to_pylist()))
    assert accuracy > 0.8
    assert np.median(table.column("convergence_delta_rel").to_numpy()) < 0.01

    cancer = json.loads((tmp_path / "breast_cancer_ig" / "manifest.json").read_text())
    assert cancer["counts"]["records_attributed"] == 569
    assert cancer["settings"]["baseline"].startswith("file:")
    assert np.mean(read_parquet_dir(tmp_path / "breast_cancer_ig").column("convergence_delta_rel").to_numpy() < 0.05) > 0.95

    # Penguins: every row kept in the Parquet; the 11 with a missing sex dead-lettered with the reason.
    penguins = json.loads((tmp_path / "penguins_ig" / "manifest.json").read_text())
    counts = penguins["counts"]
    assert counts["records_read"] == 344 and counts["records_attributed"] == 333 and counts["records_dead_lettered"] == 11
    assert counts["reconciled"] and counts["rows_written"] + counts["dead_letter_rows_written"] == 344
    dead = read_parquet_dir(tmp_path / "penguins_ig", "dead_letter").to_pylist()
    missing_sex = np.flatnonzero(penguins_table().column("sex").is_null().to_numpy(zero_copy_only=False)).tolist()
    assert sorted(int(d["key"]) for d in dead) == missing_sex and {d["error"] for d in dead} == {"column 'sex' is null"}
    layers = penguins["model"]["layers"]
    assert [(c["input"], c["layer"]) for c in layers] == [("island", "island_embedding"), ("sex", "sex_one_hot")]
    assert all(c["reason"].startswith("default: the first float layer after model input") for c in layers)
    assert penguins["settings"]["layer_baseline"] == "id:0" and penguins["settings"]["explain_logits"]
    rows = read_parquet_dir(tmp_path / "penguins_ig")
    error = rows.column("completeness_error").to_numpy()
    assert rows.num_rows == 333 and error.max() < 1e-3  # IG at the layers: attributions sum to the logit change
    assert np.mean(rows.column("target").to_numpy() == rows.column("species").to_numpy()) > 0.95
    island = json.loads((tmp_path / "penguins_ig" / "summary.json").read_text())["token_importance"]["island"]
    assert island["classes"]["1"]["for"][0]["token"] == "Dream"  # Chinstraps (1) live only on Dream (id 1; --vocabulary)
    assert set(rows.column("target_name").to_pylist()) == {"Adelie", "Chinstrap", "Gentoo"}  # --class-names
    page = (tmp_path / "penguins_ig" / "report.html").read_text()
    assert "Tokens and categories" in page and "Chinstrap (class 1)" in page

    # Grad-CAM on PNG digits decoded in the pipeline, at the default (last conv) layer.
    cam = json.loads((tmp_path / "digits_grad_cam" / "manifest.json").read_text())
    counts = cam["counts"]
    assert counts["records_read"] == counts["records_attributed"] == counts["rows_written"] == 1797 and counts["reconciled"]
    assert cam["model"]["grad_cam"]["layer"] == "last_conv" and cam["model"]["grad_cam"]["layer_shape"] == [8, 8, 16]
    assert cam["settings"]["images"][COLUMN]["size"] == [16, 16]
    table = read_parquet_dir(tmp_path / "digits_grad_cam")
    maps = np.array(table.column(f"gradcam_{COLUMN}").to_pylist()).reshape(-1, 8, 8)
    upsampled = np.array(table.column(f"attr_{COLUMN}").to_pylist()).reshape(-1, 16, 16)
    assert maps.min() >= 0 and (maps.reshape(len(maps), -1).max(axis=1) > 0).mean() > 0.5
    for i in (0, 7, 1796):
        np.testing.assert_allclose(upsampled[i], bilinear_resize(maps[i], 16, 16), rtol=1e-5, atol=1e-6)
    assert np.mean(table.column("target").to_numpy() == table.column("label").to_numpy()) > 0.7
    assert (tmp_path / "digits_grad_cam" / "report.html").stat().st_size > 0
