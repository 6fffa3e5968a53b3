"""Prism, Beam's portable runner in Go, against the in-process runner; and no process left behind.

Two ways to run on Prism, each checked row by row against the in-process runner (keys, targets,
attributions to 1e-6, manifest counts):
- `--runner=PrismRunner --prism_location=BIN`: Beam starts the binary as the job server, the SDK
  worker runs in the launcher (LOOPBACK);
- Prism as its own job-server process (`prism --job_port P --serve_http=false`) with an SDK worker
  pool (`worker_pool_main`) and `--runner=PortableRunner --environment_type=EXTERNAL`.

The binary is built from the Go module proxy (docs/runners.md); tests find it through
$ATTRIBUTION_PRISM_BIN or the cache folder. Without one they skip, saying how to build it, unless
$ATTRIBUTION_REQUIRE_PRISM=1 (set by .ci/run on a machine with Go), which turns the skip into a
failure.

Leftover processes are found exactly: the CLI runs under a small wrapper that makes itself the
child subreaper (Linux prctl), so whatever the CLI leaves running is re-parented to the wrapper
when the CLI exits, and the wrapper lists it (and kills it, so a failing test leaks nothing).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import prism_or_skip, read_parquet_dir, rows_by_key, save_nonlinear_model, write_vector_tfrecord
from pipeline.config import RunConfig
from pipeline.prism import PRISM_BIN_ENV, find_prism
from pipeline.processes import free_port as _free_port
from pipeline.processes import stop_session as _stop
from pipeline.processes import wait_for_port as _wait_for_port
from pipeline.run import run_attribution
from test_runners import REPO

SETTINGS = {"key_column": "id", "method": "integrated_gradients", "steps": 16, "batch_size": 16}
RECORDS = 80


@pytest.fixture(scope="module")
def prism() -> str:
    """The Prism binary, or a skip (a failure under $ATTRIBUTION_REQUIRE_PRISM=1) saying why.
    Named before `job` in a test's arguments, so a skip costs nothing."""
    return prism_or_skip()


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """Model, two TFRecord files of 40 records, and the in-process runner's result on them."""
    root = tmp_path_factory.mktemp("prism")
    model = save_nonlinear_model(root / "mlp.keras", num_features=6, num_classes=3)
    rng = np.random.default_rng(17)
    paths = [write_vector_tfrecord(root / f"part-{i}.tfrecord", rng.normal(size=(40, 6)).astype(np.float32),
                                   ids=[f"{i}-{j}" for j in range(40)]) for i in range(2)]
    reference = run_attribution(RunConfig.from_mapping({**SETTINGS, "model": model, "input": paths,
                                                        "output": str(root / "in_process")}))
    assert reference["status"] == "complete" and reference["job"]["runner"] == "DirectRunner"
    return {"model": model, "paths": paths, "root": root, "reference": reference,
            "rows": rows_by_key(read_parquet_dir(root / "in_process"))}


def _cli(job, output) -> list[str]:
    return [sys.executable, "-m", "pipeline", "run", "--model", job["model"], "--input", job["paths"][0], "--input",
            job["paths"][1], "--output", str(output), "--key-column", "id", "--method", "integrated_gradients",
            "--steps", "16", "--batch-size", "16", "--quiet"]


def _assert_same_as_in_process(job, output, runner: str) -> dict:
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["job"]["runner"] == runner
    counts, expected = manifest["counts"], job["reference"]["counts"]
    for name in ("records_read", "records_attributed", "records_dead_lettered", "rows_not_finite"):
        assert counts[name] == expected[name], name
    assert counts["records_attributed"] == RECORDS and counts["reconciled"]
    ours = rows_by_key(read_parquet_dir(output))
    assert sorted(ours) == sorted(job["rows"]) and len(ours) == RECORDS
    for key, row in job["rows"].items():
        assert ours[key]["target"] == row["target"], key
        np.testing.assert_allclose(ours[key]["target_score"], row["target_score"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours[key]["attr_features"], row["attr_features"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(ours[key]["convergence_delta"], row["convergence_delta"], rtol=0, atol=1e-6)
    return manifest


# Runs a command as the child subreaper and prints JSON: its exit status and output, every
# descendant seen while it ran (pid, command line), and those still running after it exited.
_WRAPPER = r"""
import ctypes, json, os, signal, subprocess, sys, time

def children():
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = open(f"/proc/{name}/stat", "rb").read()
        except OSError:
            continue
        state, ppid = stat[stat.rfind(b")") + 2:].split()[:2]
        if state != b"Z":
            found.append((int(name), int(ppid)))
    return found

def descendants(root):
    procs, out, todo = children(), [], [root]
    while todo:
        parent = todo.pop()
        for pid, ppid in procs:
            if ppid == parent:
                out.append(pid)
                todo.append(pid)
    return out

def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""

if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit(97)
timeout = float(sys.argv[1])
process = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
seen = {}
deadline = time.monotonic() + timeout
while process.poll() is None and time.monotonic() < deadline:
    for pid in descendants(process.pid):
        text = cmdline(pid)  # empty, or the parent's, while a child is between fork and exec: keep the latest
        if text:
            seen[pid] = text
    time.sleep(0.1)
timed_out = process.poll() is None
if timed_out:
    process.kill()
out, err = process.communicate()
left, settle = [], time.monotonic() + 2.0  # a process SIGKILLed just before the exit is gone within ms
while True:
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break
    left = [pid for pid in descendants(os.getpid())]
    if not left or time.monotonic() > settle:
        break
    time.sleep(0.1)
report = {"returncode": process.returncode, "timed_out": timed_out, "stdout": out, "stderr": err[-4000:],
          "seen": sorted(seen.values()), "left": [cmdline(pid) for pid in left]}
for pid in left:
    os.kill(pid, signal.SIGKILL)
print(json.dumps(report))
"""


def _run_and_list_leftovers(command: list[str], timeout: float = 300) -> dict:
    """Runs `command` (bounded by `timeout`) as described at _WRAPPER; returns its report."""
    if not os.path.isdir("/proc") or not sys.platform.startswith("linux"):
        pytest.skip("listing leftover processes needs Linux (/proc, prctl)")
    env = {**os.environ, "PYTHONPATH": REPO, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    done = subprocess.run([sys.executable, "-c", _WRAPPER, str(timeout), *command], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout + 60)
    if done.returncode == 97:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available here")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["timed_out"], f"{command} did not finish within {timeout} s"
    assert report["returncode"] == 0, report["stderr"]
    return report


def test_prism_runner_gives_the_in_process_rows_and_leaves_no_process(prism, job):
    output = job["root"] / "prism_runner"
    report = _run_and_list_leftovers(_cli(job, output) + ["--runner=PrismRunner", f"--prism_location={prism}"])
    _assert_same_as_in_process(job, output, "PrismRunner")
    assert any(seen.startswith(prism) for seen in report["seen"]), report["seen"]  # Prism did run, as our child
    assert report["left"] == []


def test_prism_runner_finds_the_binary_without_prism_location(prism, job, monkeypatch):
    """In this process (the library API): the binary comes from $ATTRIBUTION_PRISM_BIN, and the job
    server Beam starts is stopped when the run ends; a second run starts a new one."""
    from pipeline.processes import descendants

    monkeypatch.setenv(PRISM_BIN_ENV, prism)
    before = set(descendants())
    for attempt in range(2):
        output = job["root"] / f"prism_library_{attempt}"
        config = RunConfig.from_mapping({**SETTINGS, "model": job["model"], "input": job["paths"], "output": str(output)})
        run_attribution(config, ["--runner=PrismRunner"])
        _assert_same_as_in_process(job, output, "PrismRunner")
        assert set(descendants()) - before == set()  # the prism process is gone


def test_prism_job_server_with_an_external_worker_pool_gives_the_in_process_rows(prism, job, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    job_port, pool_port = _free_port(), _free_port()
    output = job["root"] / "prism_external"
    started = []
    with open(tmp_path / "services.log", "w") as logs:
        try:
            server = subprocess.Popen([prism, "--job_port", str(job_port), "--serve_http=false"], stdout=logs,
                                      stderr=subprocess.STDOUT, start_new_session=True)
            started.append(server)
            pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                     f"--service_port={pool_port}"], env=env, stdout=logs, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=REPO)
            started.append(pool)
            _wait_for_port(job_port, server)
            _wait_for_port(pool_port, pool)
            report = _run_and_list_leftovers(_cli(job, output) + [
                "--wait", "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"])
        finally:
            for process in reversed(started):
                _stop(process)
    manifest = _assert_same_as_in_process(job, output, "PortableRunner")
    workers = (tmp_path / "services.log").read_text().count("Starting worker with command")
    assert workers >= 1 and manifest["metrics"]["attribution/model_loads"] == workers  # the pool's workers did the work
    assert report["left"] == []


def test_multi_processing_direct_runner_leaves_no_process(job):
    output = job["root"] / "multi_processing"
    report = _run_and_list_leftovers(_cli(job, output) + ["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    _assert_same_as_in_process(job, output, "DirectRunner")
    assert report["left"] == []


def test_direct_runner_stays_in_process_when_a_prism_binary_is_available(tmp_path, monkeypatch):
    from apache_beam.options.pipeline_options import PipelineOptions, PrismRunnerOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from apache_beam.runners.portability.prism_runner import PrismRunner

    from pipeline.run import make_pipeline

    fake = tmp_path / "prism"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv(PRISM_BIN_ENV, str(fake))
    for flags in ([], ["--runner=DirectRunner"], ["--runner=direct"]):
        assert type(make_pipeline(PipelineOptions(flags)).runner) is FnApiRunner, flags
    options = PipelineOptions(["--runner=PrismRunner"])
    assert isinstance(make_pipeline(options).runner, PrismRunner)
    assert options.view_as(PrismRunnerOptions).prism_location == str(fake)
    given = PipelineOptions(["--runner=PrismRunner", "--prism_location=/opt/prism"])  # a given one is kept
    make_pipeline(given)
    assert given.view_as(PrismRunnerOptions).prism_location == "/opt/prism"


def test_a_prism_binary_variable_that_names_no_executable_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv(PRISM_BIN_ENV, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"ATTRIBUTION_PRISM_BIN is '.*missing', which is not an executable file; build Prism with: GOBIN=.* go install github.com/apache/beam/sdks/v2/go/cmd/prism@v2\.77\.0"):
        find_prism()


def test_stop_child_processes_stops_children_and_grandchildren_and_kills_what_ignores_sigterm():
    from pipeline.processes import descendants, stop_child_processes

    before = set(descendants())
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                 "print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60; wait"])
    assert stubborn.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 10
    while len(set(descendants()) - before) < 4 and time.monotonic() < deadline:  # stubborn, sh, and its two sleeps
        time.sleep(0.05)
    started = set(descendants()) - before
    assert len(started) == 4
    begun = time.monotonic()
    stopped = set(stop_child_processes(timeout=1.0))
    assert started <= stopped and time.monotonic() - begun < 5
    assert stubborn.wait(timeout=5) == -signal.SIGKILL and parent.wait(timeout=5) == -signal.SIGTERM
    assert set(descendants()) - before == set()
