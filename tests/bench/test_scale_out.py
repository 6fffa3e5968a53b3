"""bench/scale_out.py in its smallest mode (--smoke: 4,000 rows, one round, 1 and 2 SDK workers on
Prism, ~50 s): the result file holds both configurations with positive rates, the 2-worker runs had
two SDK worker processes that each did work on half of the input, and every job wrote as many rows
as its input has. Needs a Prism binary: skips without one, like tests/pipeline/test_prism.py (a
failure under $ATTRIBUTION_REQUIRE_PRISM=1, set by .ci/run where Go is installed)."""

import json
import os
import sys

import pytest

from helpers import prism_or_skip

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))


@pytest.fixture(scope="module")
def prism() -> str:
    return prism_or_skip()


def test_smoke_run_measures_one_and_two_workers_and_loses_no_row(prism, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRIBUTION_PRISM_BIN", prism)
    import scale_out

    assert scale_out.main(["--smoke", "--workdir", str(tmp_path / "work"), "--results", str(tmp_path)]) == 0
    with open(tmp_path / "scale_out-smoke.json") as handle:
        result = json.load(handle)

    assert set(result["figures"]) == {"1_worker", "2_workers"}
    for config, workers in (("1_worker", 1), ("2_workers", 2)):
        figures = result["figures"][config]
        assert figures["workers"] == workers
        assert figures["rows_per_second_whole"]["min"] > 0
        assert figures["sdk_workers_seen"] == [workers]
    assert result["ratios"]["2_workers / 1_worker, whole"]["of_medians"] > 0
    assert (tmp_path / "scale_out-smoke.md").read_text().count("| 2_workers | 2 × ") == 1

    runs = {run["config"]: run for run in result["runs"]}
    assert set(runs) == {"1_worker", "2_workers"}
    for config, run in runs.items():
        assert sum(job["input_rows"] for job in run["jobs"]) == run["rows"] == 4_000
        for job in run["jobs"]:
            assert job["rows_written"] == job["records_attributed"] == job["input_rows"]
    # The 2 workers split the input: a job of 2,000 rows each, and both worker processes did work.
    assert [job["input_rows"] for job in runs["2_workers"]["jobs"]] == [2_000, 2_000]
    assert len(runs["2_workers"]["sdk_worker_cpu_seconds"]) == 2
    assert min(runs["2_workers"]["sdk_worker_cpu_seconds"]) > 0
