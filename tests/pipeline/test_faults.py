"""Worker faults: transient failures retried by a real Beam runner (every record written exactly
once, verified by key), and runs that die part-way never replace or fake a complete result."""

import json
import os

import numpy as np
import pytest

import transforms.attribute as attribute
from helpers import read_parquet_dir, write_tabular_parquet
from pipeline.config import RunConfig
from pipeline.run import run_attribution

COLUMNS = [f"f{j}" for j in range(6)]


@pytest.fixture
def data(tmp_path):
    features = np.random.default_rng(12).normal(size=(200, 6)).astype(np.float32)
    return write_tabular_parquet(tmp_path / "d.parquet", features, ids=np.arange(200), row_group_size=20)


def _config(model, data, output, **extra):
    return RunConfig.from_mapping({"model": model, "input": data, "output": str(output), "key_column": "id", "method": "gradient",
                                   "inputs": {"features": COLUMNS}, "batch_size": 20, **extra})


def _files(folder) -> dict:
    """Every file in `folder` but the lock (which names its last holder), with its bytes."""
    return {name: (folder / name).read_bytes() for name in os.listdir(folder) if (folder / name).is_file() and not name.endswith(".lock")}


def _inject(monkeypatch, should_fail):
    """Makes AttributionEngine.attribute_rows raise for batches whose first key satisfies
    should_fail(key, attempts so far); returns the list of failures raised."""
    original = attribute.AttributionEngine.attribute_rows
    failures, attempts = [], {}

    def flaky(self, batch):
        first = batch.keys[0].as_py()
        attempts[first] = attempts.get(first, 0) + 1
        if should_fail(first, attempts[first]):
            failures.append(first)
            raise RuntimeError(f"injected failure at the batch starting with key {first}")
        return original(self, batch)

    monkeypatch.setattr(attribute.AttributionEngine, "attribute_rows", flaky)
    return failures


def test_transient_failures_are_retried_and_every_record_is_written_exactly_once(linear_model, data, tmp_path, monkeypatch):
    # The first attempt of the bundles holding keys 0 and 100 fails part-way (after other batches
    # of the bundle were attributed); Beam's BundleBasedDirectRunner retries a bundle up to 4 times.
    failures = _inject(monkeypatch, lambda key, attempt: key % 100 == 0 and attempt == 1)
    manifest = run_attribution(_config(linear_model[0], data, tmp_path / "out"), ["--runner=BundleBasedDirectRunner"])
    assert sorted(failures) == [0, 100]
    keys = read_parquet_dir(tmp_path / "out").column("id").to_pylist()
    assert sorted(keys) == list(range(200))  # none missing, none twice
    counts = manifest["counts"]
    assert manifest["status"] == "complete" and counts["reconciled"]
    assert (counts["records_read"], counts["records_attributed"], counts["rows_written"], counts["summary_rows"]) == (200, 200, 200, 200)
    # the runner's metrics counted the failed attempts too; the data counts did not
    assert counts["metrics_differ_from_data"]["records_attributed"] > 200


def test_a_run_that_dies_leaves_the_previous_complete_result_untouched(linear_model, data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    first = run_attribution(_config(linear_model[0], data, out))
    before = _files(out)

    _inject(monkeypatch, lambda key, attempt: key == 140)  # a permanent fault part-way through
    with pytest.raises(Exception, match="injected failure"):
        run_attribution(_config(linear_model[0], data, out, overwrite=True))
    assert _files(out) == before  # the previous run's files, record and manifest, byte for byte
    assert json.loads((out / "manifest.json").read_text())["timings"] == first["timings"]
    assert not [name for name in os.listdir(out) if name.startswith(".staging-")]  # the failed run cleaned up

    monkeypatch.undo()
    second = run_attribution(_config(linear_model[0], data, out, overwrite=True))
    assert second["status"] == "complete" and sorted(read_parquet_dir(out).column("id").to_pylist()) == list(range(200))


def test_output_files_appear_only_when_the_run_commits(linear_model, data, tmp_path, monkeypatch):
    _inject(monkeypatch, lambda key, attempt: key == 180)
    with pytest.raises(Exception, match="injected failure"):
        run_attribution(_config(linear_model[0], data, tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # a failed first run leaves nothing behind, not even the folder


def test_a_model_that_never_finishes_a_batch_stops_the_run_after_the_batch_time_limit(tmp_path):
    """A SavedModel whose while loop never ends (allowed ops only) used to hang the run forever.
    Run as a user would (a process: the stuck TensorFlow call cannot be interrupted, the CLI exits anyway)."""
    import subprocess
    import sys

    from corpus import save_endless_saved_model

    model = save_endless_saved_model(tmp_path / "endless")
    data = write_tabular_parquet(tmp_path / "d.parquet", np.ones((4, 6), np.float32), ids=np.arange(4))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "run", "--model", model, "--input", data, "--output", str(tmp_path / "out"),
         "--key-column", "id", "--method", "gradient", "--batch-timeout-seconds", "5", "--quiet"],
        cwd=repo, capture_output=True, text=True, timeout=240)
    assert done.returncode == 3, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the run was stopped: a batch of 4 records (first key 0) was still being attributed after 5 s "
                           "(batch_timeout_seconds)"), done.stderr[-3000:]
    assert not os.path.exists(tmp_path / "out")  # a first run that fails removes the folder it created
    # the launcher's quality audit (on by default) met the same model first: it gave up after the same time
    assert "the quality audit failed (still running after 5 s (batch_timeout_seconds)" in done.stderr, done.stderr[-3000:]
