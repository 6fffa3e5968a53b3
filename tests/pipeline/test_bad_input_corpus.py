"""Every case of tests/corpus.py through a real run: record-level cases complete with the bad
records dead-lettered (reason named) and counts reconciled; run-level cases stop on the launcher
with one line, exit status 2 and no traceback."""

import pathlib

import pytest

import corpus
from helpers import read_parquet_dir
from pipeline.cli import main
from pipeline.config import RunConfig
from pipeline.run import run_attribution


@pytest.mark.parametrize("make_case", corpus.RECORD_LEVEL, ids=lambda f: f.__name__)
def test_record_level_cases_dead_letter_the_bad_records_and_keep_the_rest(make_case, linear_model, tmp_path):
    case = make_case(tmp_path)
    config = RunConfig.from_mapping({"model": case.model or linear_model[0], "input": case.input,
                                     "output": str(tmp_path / "out"), "method": "gradient",
                                     "max_dead_letter_fraction": 1.0, **case.settings})
    manifest = run_attribution(config)
    counts = manifest["counts"]
    assert manifest["status"] == "complete" and counts["reconciled"]
    assert counts["records_attributed"] == case.attributed == counts["rows_written"]
    assert counts["records_read"] == case.attributed + counts["records_dead_lettered"]
    dead = {row["key"]: row["error"] for row in read_parquet_dir(tmp_path / "out", "dead_letter").to_pylist()}
    for key, reason in case.dead.items():
        assert reason in dead[str(key)], (key, dead)
    if not case.dead:
        assert dead == {}
    if config.check_duplicate_keys:
        assert counts["duplicate_keys"] == 2 and counts["records_with_duplicate_keys"] == 4


@pytest.mark.parametrize("make_case", corpus.RUN_LEVEL, ids=lambda f: f.__name__)
def test_run_level_cases_stop_on_the_launcher_with_one_message(make_case, linear_model, tmp_path, capsys):
    import re

    case = make_case(tmp_path)
    args = ["run", "--model", case.model or linear_model[0], "--output", case.output or str(tmp_path / "out"), "--method", "gradient"]
    for path in case.input:
        args += ["--input", path]
    for name, value in case.settings.items():
        if name == "inputs":
            args += ["--input-map", "features=" + ",".join(value["features"])]
        elif value is True:
            args += [f"--{name.replace('_', '-')}"]
        else:
            args += [f"--{name.replace('_', '-')}", str(value)]
    before = _snapshot(case.untouched) if case.untouched else None
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(case.launcher_error, err), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()  # stopped before anything was written
    if case.untouched:
        assert _snapshot(case.untouched) == before  # someone else's files, byte for byte


def _snapshot(folder: str) -> dict:
    root = pathlib.Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
