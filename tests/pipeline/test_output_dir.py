"""The output folder is ours or left alone: runs never delete, replace or read files that are not
theirs, one run at a time writes into a folder, and a failed run leaves nothing behind.

Files that are not ours are checked byte for byte after every attempt. The launcher's refusals
(a folder of someone else's, template values climbing out of the path, output inside the input
glob, an output that cannot be a folder) are cases of the bad-input corpus (tests/corpus.py)."""

import json
import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

from helpers import read_parquet_dir, write_tabular_parquet
from pipeline.cli import main
from pipeline.config import RunConfig
from pipeline.output_lock import OutputLock
from pipeline.run import run_attribution

COLUMNS = [f"f{j}" for j in range(6)]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _config(model, data, output, **extra):
    return RunConfig.from_mapping({"model": model, "input": data, "output": str(output), "key_column": "id", "method": "gradient",
                                   "inputs": {"features": COLUMNS}, **extra})


def _args(model, data, output, *extra):
    return ["run", "--model", model, "--input", str(data), "--output", str(output), "--method", "gradient",
            "--key-column", "id", "--input-map", "features=" + ",".join(COLUMNS), *extra]


def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_error(capsys, pattern: str) -> str:
    import re

    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    return err


@pytest.fixture
def data(tmp_path):
    features = np.random.default_rng(3).normal(size=(30, 6)).astype(np.float32)
    return write_tabular_parquet(tmp_path / "d.parquet", features, ids=np.arange(30))


def test_overwrite_replaces_only_the_files_the_previous_run_wrote(linear_model, data, tmp_path):
    out = tmp_path / "out"
    first = run_attribution(_config(linear_model[0], data, out, summaries=False))
    (out / "report.html").write_text("<html>the nightly report</html>")
    (out / "attributions_notes.txt").write_text("looks like ours, is not")
    mine = {name: (out / name).read_bytes() for name in ("report.html", "attributions_notes.txt")}
    second = run_attribution(_config(linear_model[0], data, out, overwrite=True, summaries=False))
    assert second["status"] == "complete" and second["timings"] != first["timings"]
    assert {name: (out / name).read_bytes() for name in mine} == mine
    assert read_parquet_dir(out).num_rows == 30
    record = json.loads((out / ".attribution-pipeline.json").read_text())
    assert set(record["files"]) == {"manifest.json", "record_counts.json", *(f for f in os.listdir(out) if f.endswith(".parquet"))}


def test_a_file_of_someone_else_with_a_result_name_stops_the_run(linear_model, data, tmp_path, capsys):
    out = tmp_path / "out"
    run_attribution(_config(linear_model[0], data, out, summaries=False))
    (out / "summary.json").write_text('{"the user": "wrote this"}')  # a name the next run (with summaries) would write
    before = _snapshot(out)
    assert main(_args(linear_model[0], data, out, "--overwrite")) == 2
    _one_line_error(capsys, r"holds \['summary.json'\], which are not files of this program's runs")
    assert {k: v for k, v in _snapshot(out).items() if not k.endswith(".lock")} == {k: v for k, v in before.items() if not k.endswith(".lock")}


def test_a_run_of_an_older_version_without_ownership_record_is_recognised_by_its_manifest(linear_model, data, tmp_path):
    out = tmp_path / "out"
    run_attribution(_config(linear_model[0], data, out))
    os.remove(out / ".attribution-pipeline.json")
    (out / "notes.txt").write_text("mine")
    manifest = run_attribution(_config(linear_model[0], data, out, overwrite=True))
    assert manifest["status"] == "complete" and (out / "notes.txt").read_text() == "mine"


def test_relative_and_mixed_input_paths_are_accepted(linear_model, tmp_path, monkeypatch):
    write_tabular_parquet(tmp_path / "a.parquet", np.ones((4, 6), np.float32), ids=np.arange(4))
    write_tabular_parquet(tmp_path / "b.parquet", np.ones((5, 6), np.float32), ids=np.arange(4, 9))
    monkeypatch.chdir(tmp_path)
    manifest = run_attribution(_config(linear_model[0], "*.parquet", "out1"))  # a bare glob in the current folder
    assert manifest["counts"]["records_attributed"] == 9
    manifest = run_attribution(_config(linear_model[0], [str(tmp_path / "a.parquet"), "b.parquet"], "out2"))
    assert manifest["counts"]["records_attributed"] == 9


def _hold_lock_in_another_process(output):
    code = f"from pipeline.output_lock import OutputLock; OutputLock({str(output)!r}).acquire(); print('locked', flush=True); input()"
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_one_run_at_a_time_and_a_killed_holder_leaves_no_stale_lock(linear_model, data, tmp_path, capsys):
    out = tmp_path / "out"
    holder = _hold_lock_in_another_process(out)
    try:
        assert main(_args(linear_model[0], data, out)) == 2
        _one_line_error(capsys, rf"output '.*out' is in use by another run \(pid {holder.pid} on .*\); wait for it")
        assert [n for n in os.listdir(out) if not n.endswith(".lock")] == []
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # the kernel dropped the dead holder's lock: no stale lock to clear by hand
    assert run_attribution(_config(linear_model[0], data, out))["status"] == "complete"


def test_a_job_submitted_to_a_remote_runner_is_not_swept_away_and_finalize_takes_the_lock(linear_model, data, tmp_path, capsys):
    out = tmp_path / "out"
    submitted = run_attribution(_config(linear_model[0], data, out), wait=False)
    launch_path = os.path.join(submitted["staging"], "launch.json")
    launch = json.loads(open(launch_path).read())
    open(launch_path, "w").write(json.dumps({**launch, "runner": "DataflowRunner", "job_id": "2026-11-28_01"}))
    staged = _snapshot(out)
    assert main(_args(linear_model[0], data, out)) == 2  # the job may still be writing there
    _one_line_error(capsys, r"holds a job launched on DataflowRunner \(job '2026-11-28_01'\) that was not finalized")
    assert {k: v for k, v in _snapshot(out).items() if not k.endswith(".lock")} == {k: v for k, v in staged.items() if not k.endswith(".lock")}
    with OutputLock(str(out)):
        assert main(["finalize", str(out)]) == 2
        _one_line_error(capsys, "is in use by another run")
    assert main(["finalize", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_a_run_that_cannot_write_removes_its_staging_folder(linear_model, data, tmp_path):
    """The storage refuses writes part-way (a file-size limit stands in for a full disk): the run
    fails with one line, leaves no staging folder and the previous result as it was."""
    out = tmp_path / "out"
    big = write_tabular_parquet(tmp_path / "big.parquet", np.random.default_rng(0).normal(size=(4000, 6)).astype(np.float32),
                                ids=np.arange(4000), row_group_size=1000)
    run_attribution(_config(linear_model[0], data, out))
    before = _snapshot(out)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, 48_000))

    done = subprocess.run([sys.executable, "-m", "pipeline", *_args(linear_model[0], big, out, "--overwrite")], cwd=REPO,
                          capture_output=True, text=True, preexec_fn=limit_file_size, timeout=300)
    assert done.returncode == 3, done.stderr[-3000:]
    # one line saying what happened, without the runner's tracebacks of the failed bundle above it
    assert done.stderr.strip().splitlines()[-1].startswith("error: the output storage refused a write ([Errno 27] File too large")
    assert "Traceback" not in done.stderr and "File too large" not in "\n".join(done.stderr.strip().splitlines()[:-1]), done.stderr[-3000:]
    assert not [n for n in os.listdir(out) if n.startswith(".staging-")]
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if not k.endswith(".lock")} == {k: v for k, v in before.items() if not k.endswith(".lock")}


# ------------------------------------------------------------------ second adversarial pass (issue 24)


def _without_lock(snapshot: dict) -> dict:
    return {k: v for k, v in snapshot.items() if not k.endswith(".lock")}


@pytest.mark.parametrize("name", [".attribution-pipeline.lock", ".attribution-pipeline.json.tmp"])
def test_a_symlinked_bookkeeping_file_over_a_complete_run_is_refused_and_its_target_untouched(name, linear_model, data, tmp_path, capsys):
    out = tmp_path / "out"
    run_attribution(_config(linear_model[0], data, out, summaries=False))
    target = tmp_path / "elsewhere.txt"
    target.write_text("someone else's")
    if (out / name).exists():
        os.remove(out / name)
    (out / name).symlink_to(target)
    before = _snapshot(out)
    assert main(_args(linear_model[0], data, out, "--overwrite")) == 2
    _one_line_error(capsys, rf"holds '{name}' as a symbolic link, where this program keeps its own bookkeeping")
    assert target.read_text() == "someone else's" and _snapshot(out) == before


def test_a_users_staging_named_folder_beside_a_run_survives_overwrite(linear_model, data, tmp_path):
    out = tmp_path / "out"
    run_attribution(_config(linear_model[0], data, out, summaries=False))
    (out / ".staging-photos").mkdir()
    (out / ".staging-photos" / "cat.jpg").write_bytes(b"a cat")
    (out / ".staging-0123456789ab").mkdir()  # our name, not our marker
    (out / ".staging-0123456789ab" / "notes.txt").write_text("mine")
    assert run_attribution(_config(linear_model[0], data, out, overwrite=True, summaries=False))["status"] == "complete"
    assert (out / ".staging-photos" / "cat.jpg").read_bytes() == b"a cat"
    assert (out / ".staging-0123456789ab" / "notes.txt").read_text() == "mine"


def test_a_result_name_that_links_to_a_folder_stops_the_run_before_anything_changes(linear_model, data, tmp_path, capsys):
    """The record names the file, but a link to a folder stands there now: refused in one line,
    the previous result as it was (it used to fail mid-commit with a traceback, losing both)."""
    out = tmp_path / "out"
    run_attribution(_config(linear_model[0], data, out, summaries=False))
    (name,) = [n for n in os.listdir(out) if n.startswith("attributions-")]
    album = tmp_path / "album"
    album.mkdir()
    (album / "cat.jpg").write_bytes(b"a cat")
    os.remove(out / name)
    (out / name).symlink_to(album, target_is_directory=True)
    before = _snapshot(out)
    assert main(_args(linear_model[0], data, out, "--overwrite")) == 2
    _one_line_error(capsys, rf"holds \['{name}'\], which are not files of this program's runs")
    assert _without_lock(_snapshot(out)) == _without_lock(before) and (album / "cat.jpg").read_bytes() == b"a cat"


def test_a_lock_deleted_mid_run_lets_no_second_run_in_and_the_first_does_not_commit(linear_model, data, tmp_path, monkeypatch):
    import pipeline.run as run_module
    from pipeline.errors import RunFailedError

    out = tmp_path / "out"
    run_attribution(_config(linear_model[0], data, out, summaries=False))
    before = _without_lock(_snapshot(out))
    real_finalize = run_module.finalize_run
    seen = {}

    def lock_deleted_then_finalize(*args, **kwargs):
        os.remove(out / ".attribution-pipeline.lock")  # by a careless user, while this run is live
        with pytest.raises(ValueError, match=r"is in use by another run: its staging folder .*\.staging-[0-9a-f]{12} is held"):
            run_attribution(_config(linear_model[0], data, out, overwrite=True, summaries=False))
        seen["refused"] = True
        return real_finalize(*args, **kwargs)

    monkeypatch.setattr(run_module, "finalize_run", lock_deleted_then_finalize)
    with pytest.raises(RunFailedError, match=r"was deleted or replaced while this run held it, .* did not commit"):
        run_attribution(_config(linear_model[0], data, out, overwrite=True, summaries=False))
    assert seen == {"refused": True}
    assert _without_lock(_snapshot(out)) == before and not [n for n in os.listdir(out) if n.startswith(".staging-")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_commit_waits_until_the_new_result_is_whole(signum, linear_model, data, tmp_path, monkeypatch):
    import pipeline.output_dir as output_dir

    class Stopped(Exception):
        pass

    def stop(*_):
        raise Stopped

    out = tmp_path / "out"
    run_attribution(_config(linear_model[0], data, out, summaries=False))
    real = output_dir._filesystems()

    class SignalMidCommit(real):
        @staticmethod
        def rename(sources, destinations):
            signal.raise_signal(signum)  # the old files are gone, the new ones not yet in place
            return real.rename(sources, destinations)

    monkeypatch.setattr(output_dir, "_filesystems", lambda: SignalMidCommit)
    previous = signal.signal(signum, stop)
    try:
        with pytest.raises(Stopped):
            run_attribution(_config(linear_model[0], data, out, overwrite=True, summaries=False, batch_size=7))
    finally:
        signal.signal(signum, previous)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["settings"]["batch_size"] == 7
    assert read_parquet_dir(out).num_rows == 30


def test_an_output_spelled_with_slashes_and_dots_is_the_same_folder(linear_model, data, tmp_path):
    out = tmp_path / "out"
    first = run_attribution(_config(linear_model[0], data, f"{out}//"))  # a first run into 'out//'
    assert first["status"] == "complete" and first["counts"]["rows_written"] == 30
    again = run_attribution(_config(linear_model[0], data, f"{tmp_path}/./out//", overwrite=True))
    assert again["status"] == "complete" and again["counts"]["rows_written"] == 30
    assert [f["path"] for f in again["output"]["attributions"]] == [f["path"] for f in first["output"]["attributions"]]
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


def test_a_staging_launch_record_that_is_not_json_is_named_by_finalize_and_swept_by_the_next_run(linear_model, data, tmp_path, capsys):
    from pipeline.output_dir import open_staging

    out = tmp_path / "out"
    run_attribution(_config(linear_model[0], data, out, summaries=False))
    staging = open_staging(str(out), "0123456789ab")  # a run killed while it wrote launch.json
    staging.release()
    (out / ".staging-0123456789ab" / "launch.json").write_text('{"settings": {"model": ')
    (out / ".staging-0123456789ab" / "pipeline_done.json").write_text('{"finished": 0}')
    assert main(["finalize", str(out)]) == 2
    _one_line_error(capsys, r"\.staging-0123456789ab/launch\.json is missing or not a launch record of this program .* Delete the folder")
    assert main(_args(linear_model[0], data, out, "--overwrite")) == 0
    assert not (out / ".staging-0123456789ab").exists()
