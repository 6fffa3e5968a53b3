"""`run --dry-run` (pipeline.estimate): the launcher's checks, a timed sample, the estimate; nothing written."""

import gzip
import json
import re

import numpy as np
import pytest

import pipeline.estimate as estimate
from helpers import save_linear_model, write_tabular_parquet, write_vector_tfrecord
from pipeline.cli import main

COLUMNS = [f"f{j}" for j in range(6)]


@pytest.fixture
def model(tmp_path):
    return save_linear_model(tmp_path / "linear.keras", np.ones((6, 2), np.float32), np.zeros(2, np.float32))


def test_a_dry_run_times_the_method_prints_the_estimate_and_writes_nothing(tmp_path, model, capsys):
    data = write_tabular_parquet(tmp_path / "rows.parquet", np.random.default_rng(0).normal(size=(3000, 6)).astype(np.float32),
                                 ids=np.arange(3000), row_group_size=1000)
    output = tmp_path / "out"
    code = main(["run", "--model", model, "--input", data, "--output", str(output), "--inputs", "features=" + ",".join(COLUMNS),
                 "--key-column", "id", "--dry-run", "--vcpu-hour-price", "0.1", "--gb-hour-price", "0", "--xla", "auto"])
    text = capsys.readouterr().out
    assert code == 0 and not output.exists()
    assert "dry run: nothing was written. integrated_gradients on" in text and "input: 3,000 records in 1 parquet file(s)" in text
    rate = float(text.split(" records/s here")[0].split()[-1].replace(",", ""))
    assert rate > 0
    # Timed as the run would run it: XLA checked on the warm-up rows (kept where it timed faster).
    assert re.search(r"xla: (used: XLA agrees with TensorFlow's kernels on|not used: XLA agreed with TensorFlow's kernels "
                     r"but was slower)", text)
    # the price is the flags': 4 vCPU x $0.1 + 15 GB x $0 = $0.400/h
    assert "(4 vCPU, 15 GB, $0.400/h)" in text


def test_the_figures_add_up(tmp_path, model):
    from pipeline.config import RunConfig

    data = write_tabular_parquet(tmp_path / "rows.parquet", np.random.default_rng(0).normal(size=(500, 6)).astype(np.float32),
                                 ids=np.arange(500))
    config = RunConfig.from_mapping({"model": model, "input": data, "output": str(tmp_path / "out"), "inputs": {"features": COLUMNS},
                                     "method": "sampled_shapley", "target": "top_k:2", "compute_threads": 1})
    figures = estimate.estimate_run(config, [], estimate.Prices(0.05, 0.004))
    worker = figures["worker"]
    assert figures["records"] == 500 and figures["output_rows_per_record"] == 2 and figures["threads"] == 1
    assert figures["records_per_second_per_vcpu"] == pytest.approx(figures["records_per_second"])
    assert worker["records_per_second"] == pytest.approx(4 * figures["records_per_second_per_vcpu"])
    assert worker["price_per_hour"] == pytest.approx(4 * 0.05 + 15 * 0.004)
    assert worker["cost_per_million"] == pytest.approx(1e6 / worker["records_per_second"] / 3600 * worker["price_per_hour"])
    assert worker["cost"] == pytest.approx(worker["cost_per_million"] * 500 / 1e6)
    json.dumps(figures)  # JSON-ready
    assert not (tmp_path / "out").exists()


def test_tfrecord_records_are_counted_by_their_headers_and_extrapolated_past_the_walked_files(tmp_path, monkeypatch):
    x = np.zeros((40, 6), np.float32)
    first = write_vector_tfrecord(tmp_path / "a.tfrecord", x, ids=[f"a{i}" for i in range(40)])
    second = write_vector_tfrecord(tmp_path / "b.tfrecord", x, ids=[f"b{i}" for i in range(40)])
    with open(first, "rb") as raw, gzip.open(tmp_path / "c.tfrecord.gz", "wb") as packed:
        packed.write(raw.read())
    assert estimate.count_rows([first, second, str(tmp_path / "c.tfrecord.gz")], "tfrecord") == (120, True)
    monkeypatch.setattr(estimate, "MAX_COUNTED_FILES", 1)
    assert estimate.count_rows([first, second], "tfrecord") == (80, False)  # the same size: extrapolated exactly


def test_prices_without_a_dry_run_are_refused(tmp_path, model, capsys):
    data = write_tabular_parquet(tmp_path / "rows.parquet", np.zeros((10, 6), np.float32), ids=np.arange(10))
    code = main(["run", "--model", model, "--input", data, "--output", str(tmp_path / "out"), "--inputs", "features=" + ",".join(COLUMNS),
                 "--vcpu-hour-price", "0.1"])
    assert code == 2 and "price the estimate of --dry-run" in capsys.readouterr().err
