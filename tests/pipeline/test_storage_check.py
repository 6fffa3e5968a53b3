"""Launcher checks of bucket paths that need no storage server: schemes no filesystem reads here,
and which failures name a storage error (pipeline.storage_check, pipeline.storage_fault). The
checks against real servers are in test_object_store.py."""

import time

import pytest

from pipeline.cli import main
from pipeline.storage_fault import _storage_words, storage_fault


@pytest.mark.parametrize("path, message", [
    ("hdfs://namenode/data/*.parquet", "hdfs:// paths ('hdfs://namenode/data/*.parquet') need Beam's 'hadoop' extra: "
                                       "pip install 'apache-beam[hadoop]' and the --hdfs_host"),
    ("azfs://account/container/*.parquet", "azfs:// paths ('azfs://account/container/*.parquet') need Beam's 'azure' extra"),
    ("sftp://host/data.parquet", "no filesystem reads sftp:// paths ('sftp://host/data.parquet'); use a local path, gs://, s3://"),
])
def test_a_scheme_without_its_filesystem_is_one_line_before_tensorflow_loads(path, message, linear_model, tmp_path, capsys):
    started = time.monotonic()
    assert main(["run", "--model", linear_model[0], "--input", path, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {err[7:]}" and len(err.strip().splitlines()) == 1 and message in err, err
    assert time.monotonic() - started < 10  # Beam's own errors came as tracebacks after its imports
    assert not (tmp_path / "out").exists()


def test_storage_words_are_found_in_an_error_chain_and_in_a_job_service_text():
    cause = OSError('Could not connect to the endpoint URL: "http://127.0.0.1:9/b/in/d.parquet"')
    wrapped = RuntimeError("the pipeline failed")
    wrapped.__cause__ = cause
    assert _storage_words(wrapped) == 'Could not connect to the endpoint URL: "http://127.0.0.1:9/b/in/d.parquet"'
    service = RuntimeError("Pipeline job failed:\nTraceback ...\nS3ClientError('Read timeout on endpoint URL' , None) "
                           "[while running 'ReadRecords/ReadShards']")
    assert _storage_words(service) == "S3ClientError('Read timeout on endpoint URL' , None)"
    assert _storage_words(RuntimeError("division by zero [while running 'Attribute']")) is None


def test_a_failure_of_a_run_on_local_paths_is_never_a_storage_fault(tmp_path):
    failure = RuntimeError("Could not connect to the endpoint URL")  # words alone do not make it one: no bucket here
    assert storage_fault(failure, [str(tmp_path / "in.parquet"), str(tmp_path / "out")], [], str(tmp_path / "out"), 300) is None
