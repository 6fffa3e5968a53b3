"""Runs where the data lives: input, output and model in a bucket, against real object-store
servers started here on loopback: moto's S3 server (moto[server] is in the 'test' extra) and
fake-gcs-server for GCS (a Go binary; .ci/build_fake_gcs).

What is checked is what an operator relies on: the result equals a local run's, run twice is
refused and --overwrite replaces, no staging folder or lock is left behind, two launchers cannot
both hold the output, and a run killed with -9 does not block the next one past its lease. The
portable path (job service + EXTERNAL SDK worker pool, the shape Flink uses) reads and writes the
bucket too: its workers get the filesystem options from the pipeline, not from Beam.
"""

import io
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import read_parquet_dir, rows_by_key, run_on_the_portable_path
from pipeline.cli import main
from pipeline.processes import free_port, stop_session, wait_for_port
from tcp_proxy import TcpProxy

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUCKET = "attributions-test"
COLUMNS = [f"f{j}" for j in range(6)]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """The endpoint of a moto S3 server for this module (a skip without moto, a failure under
    $ATTRIBUTION_REQUIRE_OBJECT_STORES=1, which .ci/run sets)."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as error:
        if os.environ.get("ATTRIBUTION_REQUIRE_OBJECT_STORES") == "1":
            pytest.fail(f"the S3 tests need moto[server] and boto3 (the 'test' extra): {error}")
        pytest.skip(f"moto[server] is not installed: {error}")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port(port, server)
        endpoint = f"http://127.0.0.1:{port}"
        _client(endpoint).create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        stop_session(server)
        log.close()


def _client(endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")


def _s3_args(endpoint) -> list:
    return ["--s3_endpoint_url", endpoint, "--s3_access_key_id", "test", "--s3_secret_access_key", "test",
            "--s3_region_name", "us-east-1"]


def _keys(endpoint, prefix: str) -> list[str]:
    listed = _client(endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return sorted(o["Key"][len(prefix):] for o in listed)


@pytest.fixture
def bucket_data(s3_server, linear_model, tmp_path, request):
    """(prefix in the bucket, local parquet, local model): the same data and model locally and in the bucket."""
    prefix = f"{request.node.name[:40]}-{time.time_ns()}"
    features = np.random.default_rng(5).normal(size=(60, 6)).astype(np.float32)
    table = pa.table({"id": np.arange(60), **{c: features[:, j] for j, c in enumerate(COLUMNS)}})
    local = tmp_path / "d.parquet"
    pq.write_table(table, local, row_group_size=20)
    client = _client(s3_server)
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/in/d.parquet", Body=local.read_bytes())
    client.upload_file(linear_model[0], BUCKET, f"{prefix}/models/linear.keras")
    return prefix, str(local), linear_model[0]


def _run_args(model, data, output, *extra):
    return ["run", "--model", model, "--input", data, "--output", output, "--key-column", "id", "--method", "integrated_gradients",
            "--steps", "8", "--batch-size", "16", *extra]


def _rows(table: pa.Table) -> dict:
    return rows_by_key(table)


def _read_bucket_parquet(endpoint, prefix: str, name_prefix: str = "attributions-") -> pa.Table:
    client = _client(endpoint)
    tables = [pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=f"{prefix}/{name}")["Body"].read()))
              for name in _keys(endpoint, prefix + "/") if name.startswith(name_prefix)]
    return pa.concat_tables(tables)


def test_a_run_with_input_output_and_model_in_a_bucket_equals_a_local_run(s3_server, bucket_data, tmp_path, capsys):
    prefix, local_data, local_model = bucket_data
    s3 = f"s3://{BUCKET}/{prefix}"
    assert main(_run_args(local_model, local_data, str(tmp_path / "local"))) == 0
    assert main(_run_args(f"{s3}/models/linear.keras", f"{s3}/in/*.parquet", f"{s3}/out", *_s3_args(s3_server))) == 0
    capsys.readouterr()
    written = _keys(s3_server, f"{prefix}/out/")
    assert not [k for k in written if k.startswith(".staging-") or k.endswith(".lock")], written  # nothing left behind
    manifest = json.loads(_client(s3_server).get_object(Bucket=BUCKET, Key=f"{prefix}/out/manifest.json")["Body"].read())
    local = json.loads((tmp_path / "local" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["model"]["sha256"] == local["model"]["sha256"]
    for name in ("records_read", "records_attributed", "records_dead_lettered", "rows_written"):
        assert manifest["counts"][name] == local["counts"][name], name
    ours, theirs = _rows(_read_bucket_parquet(s3_server, f"{prefix}/out")), _rows(read_parquet_dir(tmp_path / "local"))
    assert sorted(ours) == sorted(theirs) and len(ours) == 60
    for key, row in theirs.items():
        assert ours[key]["target"] == row["target"]
        for column in COLUMNS:
            np.testing.assert_allclose(ours[key][f"attr_{column}"], row[f"attr_{column}"], rtol=0, atol=1e-6)

    # run twice: refused, one line; --overwrite: replaced, and still nothing left behind
    assert main(_run_args(f"{s3}/models/linear.keras", f"{s3}/in/*.parquet", f"{s3}/out", *_s3_args(s3_server))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already holds a complete run" in err and len(err.strip().splitlines()) == 1, err
    assert main(_run_args(f"{s3}/models/linear.keras", f"{s3}/in/*.parquet", f"{s3}/out", "--overwrite", *_s3_args(s3_server))) == 0
    assert _keys(s3_server, f"{prefix}/out/") == written

    # the audit commands read runs in the bucket with the same filesystem flags
    assert main(["compare", f"{s3}/out", str(tmp_path / "local"), "--json", str(tmp_path / "drift.json"), *_s3_args(s3_server)]) == 0
    drift = json.loads((tmp_path / "drift.json").read_text())
    assert drift["run_a"] == f"{s3}/out" and drift["drift"] is False
    assert main(["report", f"{s3}/out", "--out", str(tmp_path / "report.html"), *_s3_args(s3_server)]) == 0
    assert "attribution" in (tmp_path / "report.html").read_text().lower()
    with pytest.raises(SystemExit) as refused:  # argparse's exit for a flag this command does not take
        main(["compare", f"{s3}/out", str(tmp_path / "local"), "--runner", "DirectRunner", *_s3_args(s3_server)])
    assert refused.value.code == 2 and "unrecognized arguments: --runner (this command takes only" in capsys.readouterr().err


def test_tfrecord_input_in_a_bucket_plain_and_gzip_equals_a_local_run(s3_server, linear_model, tmp_path, capsys):
    """TensorFlow cannot read s3:// itself: the workers read a local copy of each file, the
    launcher one of the first file's first 64 MiB; a truncated file still dead-letters its rest."""
    import gzip

    from helpers import write_vector_tfrecord

    prefix = f"tfrecord-{time.time_ns()}"
    rng = np.random.default_rng(9)
    plain = write_vector_tfrecord(tmp_path / "a.tfrecord", rng.normal(size=(30, 6)).astype(np.float32), ids=[f"a{i}" for i in range(30)])
    other = write_vector_tfrecord(tmp_path / "b.tfrecord", rng.normal(size=(20, 6)).astype(np.float32), ids=[f"b{i}" for i in range(20)])
    data = open(other, "rb").read()
    client = _client(s3_server)
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/in/a.tfrecord", Body=open(plain, "rb").read())
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/in/b.tfrecord.gz", Body=gzip.compress(data))
    client.put_object(Bucket=BUCKET, Key=f"{prefix}/in/c.tfrecord", Body=data[: len(data) // 2 + 7])  # cut mid-record
    local = tmp_path / "local"
    local.mkdir()
    for name, body in (("a.tfrecord", open(plain, "rb").read()), ("b.tfrecord.gz", gzip.compress(data)), ("c.tfrecord", data[: len(data) // 2 + 7])):
        (local / name).write_bytes(body)
    args = ["--key-column", "id", "--method", "gradient", "--max-dead-letter-fraction", "1"]
    assert main(["run", "--model", linear_model[0], "--input", f"{local}/*", "--output", str(tmp_path / "out"), *args]) == 0
    s3 = f"s3://{BUCKET}/{prefix}"
    assert main(["run", "--model", linear_model[0], "--input", f"{s3}/in/*", "--output", f"{s3}/out", *args, *_s3_args(s3_server)]) == 0
    capsys.readouterr()
    ours, theirs = _read_bucket_parquet(s3_server, f"{prefix}/out"), read_parquet_dir(tmp_path / "out")
    assert 50 < ours.num_rows == theirs.num_rows < 70  # a and b whole, c (b's first rows again) up to the cut
    ours, theirs = ours.sort_by([("id", "ascending")]).to_pylist(), theirs.sort_by([("id", "ascending")]).to_pylist()
    for mine, local_row in zip(ours, theirs):
        assert mine["id"] == local_row["id"]
        np.testing.assert_allclose(mine["attr_features"], local_row["attr_features"], rtol=0, atol=1e-6)
    dead = _read_bucket_parquet(s3_server, f"{prefix}/out", "dead_letter-").to_pylist()
    assert len(dead) == 1 and dead[0]["source"] == f"{s3}/in/c.tfrecord" and "truncated or corrupted" in dead[0]["error"]


def test_baseline_and_background_files_in_a_bucket_equal_local_ones(s3_server, bucket_data, tmp_path, capsys):
    prefix, local_data, local_model = bucket_data
    s3 = f"s3://{BUCKET}/{prefix}"
    reference = tmp_path / "reference.parquet"
    pq.write_table(pa.table({c: np.linspace(-1, 1, 5, dtype=np.float32) * (j + 1) for j, c in enumerate(COLUMNS)}), reference)
    _client(s3_server).upload_file(str(reference), BUCKET, f"{prefix}/ref/reference.parquet")
    for name, flags in (("ig", ["--method", "integrated_gradients", "--baseline", "file:{}"]),
                        ("eg", ["--method", "expected_gradients", "--background", "{}", "--samples", "8"])):
        local = [f.format(reference) for f in flags]
        bucket = [f.format(f"{s3}/ref/reference.parquet") for f in flags]
        common = ["run", "--model", local_model, "--input", local_data, "--key-column", "id", "--batch-size", "16"]
        assert main([*common, "--output", str(tmp_path / f"local-{name}"), *local]) == 0
        assert main([*common, "--output", f"{s3}/out-{name}", *bucket, *_s3_args(s3_server)]) == 0
        capsys.readouterr()
        ours, theirs = _rows(_read_bucket_parquet(s3_server, f"{prefix}/out-{name}")), _rows(read_parquet_dir(tmp_path / f"local-{name}"))
        assert sorted(ours) == sorted(theirs) and len(ours) == 60
        for key, row in theirs.items():
            for column in COLUMNS:
                np.testing.assert_allclose(ours[key][f"attr_{column}"], row[f"attr_{column}"], rtol=0, atol=1e-6)


def test_two_launchers_cannot_both_hold_an_output_in_a_bucket(s3_server, bucket_data):
    from pipeline.filesystem_options import use_filesystem_options
    from pipeline.output_lock import OutputLock

    prefix, _, _ = bucket_data
    use_filesystem_options(_s3_args(s3_server))
    first = OutputLock(f"s3://{BUCKET}/{prefix}/out").acquire()
    try:
        with pytest.raises(ValueError, match=r"is in use by another run \(pid \d+ on .*\).* lease runs out \(in \d+ s\)"):
            OutputLock(f"s3://{BUCKET}/{prefix}/out").acquire()
        first.verify()  # still ours
    finally:
        first.release()
    assert _keys(s3_server, f"{prefix}/out/") == []  # released: the lock object is gone
    OutputLock(f"s3://{BUCKET}/{prefix}/out").acquire().release()


def test_a_run_killed_mid_run_blocks_the_next_one_only_until_its_lease_runs_out(s3_server, bucket_data, capsys, caplog):
    prefix, _, _ = bucket_data
    s3 = f"s3://{BUCKET}/{prefix}"
    # 20 s: the second launch must reach the lock while the lease still runs, and on a loaded CI
    # machine it took more than 6 s to load the model and sample the input first.
    args = _run_args(f"{s3}/models/linear.keras", f"{s3}/in/*.parquet", f"{s3}/out", "--lock-lease-seconds", "20", *_s3_args(s3_server))
    env = {**os.environ, "PYTHONPATH": REPO}
    victim = subprocess.Popen([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not any(k.startswith(".staging-") for k in _keys(s3_server, f"{prefix}/out/")):  # the run is writing
            assert victim.poll() is None and time.time() < deadline, "the run ended before it could be killed"
            time.sleep(0.2)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        stop_session(victim)
    left = _keys(s3_server, f"{prefix}/out/")
    assert ".attribution-pipeline.lock" in left and any(k.startswith(".staging-") for k in left)
    assert main(args) == 2  # at once: the lease is still running
    err = capsys.readouterr().err
    assert "is in use by another run" in err and "taken over automatically once its lease runs out" in err, err
    time.sleep(21)
    assert main(args) == 0  # past the lease: taken over, the dead run's staging removed
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.lease_lock"]
    assert len(warnings) == 1 and "taking over the lock" in warnings[0] and "past its 20 s lease" in warnings[0], warnings
    left = _keys(s3_server, f"{prefix}/out/")
    assert "manifest.json" in left and not [k for k in left if k.startswith(".staging-") or k.endswith(".lock")], left


def _storage_that_goes_away_on_read(module, s3_server, monkeypatch):
    """(a cuttable proxy in front of the S3 server, `module.read_parquet_shard` that cuts it
    before reading). Beam's retry waits are skipped (not its retries), botocore tries once."""
    from apache_beam.utils import retry

    proxy = TcpProxy(int(s3_server.rsplit(":", 1)[1]))
    monkeypatch.setattr(retry.Clock, "sleep", lambda self, seconds: None)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    read_shard = module.read_parquet_shard

    def read_after_the_storage_went_away(*args, **kwargs):
        proxy.cut()
        return read_shard(*args, **kwargs)

    return proxy, read_after_the_storage_went_away


def test_a_storage_that_goes_away_mid_run_ends_it_with_exit_5_and_the_next_run_takes_over(s3_server, bucket_data, capsys, monkeypatch):
    """The endpoint goes down (connections refused) when the workers start reading: one line, exit
    5 (not 2, not a traceback), nothing touched while the store is down (each attempt would wait
    through Beam's retries); once it is back, the next run after the lease succeeds and removes the
    dead run's staging (a rerun at once is refused or not depending on how long the failure took
    to surface, so it is not asserted here). Beam's retry waits (minutes: 7 from 5 s, doubling) are skipped here, not
    its retries."""
    import pipeline.run  # noqa: F401  (binds the launcher's own readers before the workers' one is patched)
    import transforms.read

    prefix, _, _ = bucket_data
    proxy, read_after_the_storage_went_away = _storage_that_goes_away_on_read(transforms.read, s3_server, monkeypatch)
    s3 = f"s3://{BUCKET}/{prefix}"
    args = _run_args(f"{s3}/models/linear.keras", f"{s3}/in/*.parquet", f"{s3}/out", "--lock-lease-seconds", "6", *_s3_args(proxy.endpoint))
    try:
        with monkeypatch.context() as patched:
            patched.setattr(transforms.read, "read_parquet_shard", read_after_the_storage_went_away)
            started = time.time()
            assert main(args) == 5
            took = time.time() - started
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: cannot reach the S3 storage of s3://") and "went away during the run" in last, err[-3000:]
        assert "takes them over once the lock's lease has run out (6 s" in last and "Traceback" not in err, err[-3000:]
        assert took < 120, took
        left = _keys(s3_server, f"{prefix}/out/")
        assert ".attribution-pipeline.lock" in left and any(k.startswith(".staging-") for k in left), left
        proxy.restore()
        time.sleep(7)  # the dead run's lease runs out (refused while it runs: the kill -9 test above)
        assert main(args) == 0
        left = _keys(s3_server, f"{prefix}/out/")
        assert "manifest.json" in left and not [k for k in left if k.startswith(".staging-") or k.endswith(".lock")], left
    finally:
        proxy.close()


def test_a_storage_that_goes_away_while_the_launcher_reads_is_exit_5_with_nothing_written(s3_server, bucket_data, capsys, monkeypatch):
    """The endpoint goes down while the launcher samples the input for the baseline (after the
    launch check passed): one line, exit 5, no lock or folder left."""
    import pipeline.baseline_sample

    prefix, _, _ = bucket_data
    proxy, read_after_the_storage_went_away = _storage_that_goes_away_on_read(pipeline.baseline_sample, s3_server, monkeypatch)
    monkeypatch.setattr(pipeline.baseline_sample, "read_parquet_shard", read_after_the_storage_went_away)
    s3 = f"s3://{BUCKET}/{prefix}"
    try:
        assert main(_run_args(f"{s3}/models/linear.keras", f"{s3}/in/*.parquet", f"{s3}/out", *_s3_args(proxy.endpoint))) == 5
    finally:
        proxy.close()
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the S3 storage of s3://") and last.endswith(
        "The storage went away while the launcher read the run's model and input; nothing was written.") and "Traceback" not in err, err
    assert _keys(s3_server, f"{prefix}/out/") == []


def test_a_lease_renewal_outage_is_logged_once_when_it_starts_and_once_when_it_ends(s3_server, caplog):
    from pipeline.filesystem_options import use_filesystem_options
    from pipeline.output_lock import OutputLock

    proxy = TcpProxy(int(s3_server.rsplit(":", 1)[1]))
    try:
        use_filesystem_options(_s3_args(proxy.endpoint))
        lock = OutputLock(f"s3://{BUCKET}/renewals-{time.time_ns()}/out", lease_seconds=5).acquire()  # renewed every second
        try:
            proxy.cut()
            time.sleep(3.5)
            proxy.restore()
            time.sleep(2.5)
            lock.verify()  # still ours
        finally:
            lock.release()
    finally:
        proxy.close()
        use_filesystem_options(_s3_args(s3_server))
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.lease_lock"]
    assert len(said) == 2 and said[0].startswith("could not renew the lock") and "quietly until it works again" in said[0], said
    assert re.fullmatch(r"renewed the lock s3://\S+ again after \d+ s of failures", said[1]), said


def test_a_failed_run_on_a_reachable_bucket_is_a_storage_fault_only_when_its_error_names_one(s3_server):
    from pipeline.filesystem_options import use_filesystem_options
    from pipeline.storage_fault import storage_fault

    use_filesystem_options(_s3_args(s3_server))
    paths, output = [f"s3://{BUCKET}/in/*.parquet", f"s3://{BUCKET}/out"], f"s3://{BUCKET}/out"
    assert storage_fault(RuntimeError("division by zero [while running 'Attribute']"), paths, _s3_args(s3_server), output, 300) is None
    passed = storage_fault(RuntimeError("S3ClientError('Connection was closed before we received a valid response', None)"),
                           paths, _s3_args(s3_server), output, 300)
    assert passed.reachable and str(passed.error).startswith("the storage failed during the run (S3ClientError(") and \
        "it answers again now" in str(passed.error), passed


def test_the_portable_path_with_an_external_worker_pool_reads_and_writes_the_bucket(s3_server, bucket_data, tmp_path):
    prefix, local_data, local_model = bucket_data
    s3 = f"s3://{BUCKET}/{prefix}"
    assert main(_run_args(local_model, local_data, str(tmp_path / "local"))) == 0
    run_on_the_portable_path([*_run_args(f"{s3}/models/linear.keras", f"{s3}/in/*.parquet", f"{s3}/out"), *_s3_args(s3_server)],
                             tmp_path / "services.log")
    ours, theirs = _rows(_read_bucket_parquet(s3_server, f"{prefix}/out")), _rows(read_parquet_dir(tmp_path / "local"))
    assert sorted(ours) == sorted(theirs) and len(ours) == 60
    for key, row in theirs.items():
        for column in COLUMNS:
            np.testing.assert_allclose(ours[key][f"attr_{column}"], row[f"attr_{column}"], rtol=0, atol=1e-6)
    assert not [k for k in _keys(s3_server, f"{prefix}/out/") if k.startswith(".staging-") or k.endswith(".lock")]


def test_an_unreachable_endpoint_missing_credentials_or_bucket_are_one_line_each(s3_server, linear_model, tmp_path, capsys, monkeypatch):
    """Checked on the launcher with short time-outs before any other access (Beam's own retries
    took 7 min 30 s to end in a traceback): storage unreachable, exit 5; settings to fix, exit 2."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    closed = f"http://127.0.0.1:{free_port()}"
    cases = [
        (_s3_args(closed), f"s3://{BUCKET}/x/out", 5, rf"cannot reach the S3 storage of s3://{BUCKET} at {closed} \(EndpointConnectionError\)"),
        (["--s3_endpoint_url", s3_server, "--s3_region_name", "us-east-1"], f"s3://{BUCKET}/x/out", 2,
         rf"no AWS credentials for s3://{BUCKET}: pass --s3_access_key_id"),
        (_s3_args(s3_server), "s3://no-such-bucket/out", 2, r"bucket s3://no-such-bucket does not exist at http://127.0.0.1"),
    ]
    for flags, output, code, message in cases:
        started = time.monotonic()
        assert main(["run", "--model", linear_model[0], "--input", f"s3://{BUCKET}/x/*.parquet", "--output", output, *flags]) == code
        assert time.monotonic() - started < 30  # not Beam's minutes of retries
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert re.search(message, err), err


# ---------------------------------------------------------------------------------------- GCS


@pytest.fixture(scope="module")
def gcs_server(tmp_path_factory):
    """The endpoint of a fake-gcs-server for this module, set as STORAGE_EMULATOR_HOST (a skip
    without the binary, a failure under $ATTRIBUTION_REQUIRE_GCS=1, which .ci/run sets where Go is)."""
    from gcs_emulator import add_content_ids, fake_gcs_binary, server_command

    binary = fake_gcs_binary()
    if binary is None:
        message = "no fake-gcs-server binary: build it with .ci/build_fake_gcs DIR and set ATTRIBUTION_FAKE_GCS_BIN=DIR/bin/fake-gcs-server"
        if os.environ.get("ATTRIBUTION_REQUIRE_GCS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    port = free_port()
    log = open(tmp_path_factory.mktemp("gcs") / "gcs.log", "w")
    server = subprocess.Popen(server_command(binary, port), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        wait_for_port(port, server)
        endpoint = f"http://localhost:{port}"
        os.environ["STORAGE_EMULATOR_HOST"] = endpoint
        add_content_ids()
        _gcs_bucket().client.create_bucket(BUCKET)
        yield endpoint
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        stop_session(server)
        log.close()


def _gcs_bucket():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials()).bucket(BUCKET)


def _gcs_keys(prefix: str) -> list[str]:
    return sorted(b.name[len(prefix):] for b in _gcs_bucket().client.list_blobs(BUCKET, prefix=prefix))


def _gcs_data_and_local_run(model: str, tmp_path, rows: int) -> tuple[str, str]:
    """(prefix, gs://BUCKET/prefix) holding in/d.parquet (`rows` records) and models/linear.keras;
    the same data attributed locally into tmp_path/local."""
    prefix = f"gcs-{time.time_ns()}"
    features = np.random.default_rng(rows).normal(size=(rows, 6)).astype(np.float32)
    pq.write_table(pa.table({"id": np.arange(rows), **{c: features[:, j] for j, c in enumerate(COLUMNS)}}), tmp_path / "d.parquet",
                   row_group_size=20)
    bucket = _gcs_bucket()
    bucket.blob(f"{prefix}/in/d.parquet").upload_from_filename(str(tmp_path / "d.parquet"))
    bucket.blob(f"{prefix}/models/linear.keras").upload_from_filename(model)
    assert main(_run_args(model, str(tmp_path / "d.parquet"), str(tmp_path / "local"))) == 0
    return prefix, f"gs://{BUCKET}/{prefix}"


def _assert_gcs_output_equals_local(prefix: str, local, rows: int) -> list[str]:
    """The run in prefix/out: complete, nothing of ours left behind, rows equal to the local run's;
    returns the names written."""
    written = _gcs_keys(f"{prefix}/out/")
    assert "manifest.json" in written and not [k for k in written if k.startswith(".staging-") or k.endswith(".lock")], written
    bucket = _gcs_bucket()
    tables = [pq.read_table(io.BytesIO(bucket.blob(f"{prefix}/out/{k}").download_as_bytes())) for k in written if k.startswith("attributions-")]
    ours, theirs = _rows(pa.concat_tables(tables)), _rows(read_parquet_dir(local))
    assert sorted(ours) == sorted(theirs) and len(ours) == rows
    for key, row in theirs.items():
        for column in COLUMNS:
            np.testing.assert_allclose(ours[key][f"attr_{column}"], row[f"attr_{column}"], rtol=0, atol=1e-6)
    return written


def test_a_run_with_input_output_and_model_in_a_gcs_bucket_equals_a_local_run(gcs_server, linear_model, tmp_path, capsys):
    prefix, gs = _gcs_data_and_local_run(linear_model[0], tmp_path, rows=60)
    assert main(_run_args(f"{gs}/models/linear.keras", f"{gs}/in/*.parquet", f"{gs}/out")) == 0
    written = _assert_gcs_output_equals_local(prefix, tmp_path / "local", rows=60)
    capsys.readouterr()
    assert main(_run_args(f"{gs}/models/linear.keras", f"{gs}/in/*.parquet", f"{gs}/out")) == 2
    assert "already holds a complete run" in capsys.readouterr().err
    assert main(_run_args(f"{gs}/models/linear.keras", f"{gs}/in/*.parquet", f"{gs}/out", "--overwrite")) == 0
    assert _gcs_keys(f"{prefix}/out/") == written
    assert main(_run_args(f"{gs}/models/linear.keras", f"{gs}/in/*.parquet", "gs://no-such-bucket/out")) == 2
    assert "bucket gs://no-such-bucket does not exist" in capsys.readouterr().err


def test_a_gcs_lock_is_held_by_one_launcher_and_taken_over_once_its_lease_runs_out(gcs_server):
    from pipeline.errors import RunFailedError
    from pipeline.output_lock import OutputLock

    output = f"gs://{BUCKET}/lease-{time.time_ns()}/out"
    first = OutputLock(output, lease_seconds=5).acquire()
    with pytest.raises(ValueError, match=r"is in use by another run .* lease runs out \(in \d s\)"):
        OutputLock(output, lease_seconds=5).acquire()
    first._lease._stop.set()  # the holder stops renewing, as a killed launcher would  # pylint: disable=protected-access
    time.sleep(6)
    second = OutputLock(output, lease_seconds=5).acquire()  # taken over with if_generation_match
    with pytest.raises(RunFailedError, match="was deleted or replaced while this run held it"):
        first.verify()  # the first holder, were it still alive, would not commit
    second.verify()
    second.release()
    assert _gcs_keys(output.split(f"gs://{BUCKET}/", 1)[1] + "/") == []


def test_the_portable_path_with_an_external_worker_pool_reads_and_writes_a_gcs_bucket(gcs_server, linear_model, tmp_path):
    """The pool's workers reach the emulator through STORAGE_EMULATOR_HOST (inherited) and get the
    emulator's batch workaround from tests/gcs_sitecustomize (the emulator's limit, not GCS's)."""
    prefix, gs = _gcs_data_and_local_run(linear_model[0], tmp_path, rows=40)
    run_on_the_portable_path(_run_args(f"{gs}/models/linear.keras", f"{gs}/in/*.parquet", f"{gs}/out"), tmp_path / "services.log",
                             extra_pythonpath=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gcs_sitecustomize"))
    _assert_gcs_output_equals_local(prefix, tmp_path / "local", rows=40)
