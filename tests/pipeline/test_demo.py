"""The README's first command: the demo trains real models on real data and attributes them."""

import json

import numpy as np

from helpers import read_parquet_dir
from pipeline.demo import run_demo


def test_demo_runs_end_to_end_and_its_results_are_faithful(tmp_path, capsys):
    run_demo(str(tmp_path))
    printed = capsys.readouterr().out
    assert "top features by mean |attribution|" in printed

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
