"""The command line, as a user runs it: a subprocess, a YAML config, flags, Beam options."""

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import yaml

from helpers import read_parquet_dir, rows_by_key
from pipeline.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = [f"f{j}" for j in range(6)]


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, env=env, timeout=300)


def test_run_with_config_file_flags_override_it_and_beam_options_pass_through(linear_model, tabular_data, tmp_path):
    model, weights, bias = linear_model
    data, features, ids, _ = tabular_data
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "model": model, "input": data, "output": str(tmp_path / "ignored"), "method": "integrated_gradients",
        "steps": 8, "inputs": {"features": COLUMNS}, "key_column": "id", "passthrough_columns": ["label"], "baseline": "zeros",
    }))
    result = _cli("run", "--config", str(config), "--output", str(tmp_path / "out"), "--steps", "16",
                  "--target", "2", "--runner", "DirectRunner", "--job_name", "cli-test")
    assert result.returncode == 0, result.stderr
    assert "attributed 40 of 40 records (0 dead-lettered)" in result.stdout
    assert not (tmp_path / "ignored").exists()
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["settings"]["steps"] == 16
    assert manifest["pipeline_options"] == ["--runner", "DirectRunner", "--job_name", "cli-test"]
    rows = rows_by_key(read_parquet_dir(tmp_path / "out"))
    for key, x in zip(ids.tolist(), features):
        assert rows[key]["target"] == 2
        np.testing.assert_allclose([rows[key][f"attr_{c}"] for c in COLUMNS], x * weights[:, 2], rtol=1e-4, atol=1e-5)


def test_input_map_and_passthrough_flags(linear_model, tabular_data, tmp_path):
    code = main(["run", "--model", linear_model[0], "--input", tabular_data[0], "--output", str(tmp_path / "out"),
                 "--method", "gradient", "--input-map", "features=" + ",".join(COLUMNS), "--passthrough", "label,id"])
    assert code == 0
    table = read_parquet_dir(tmp_path / "out")
    assert table.column_names[:3] == ["key", "label", "id"]


def test_date_and_param_flags_fill_the_config_file_templates(linear_model, tabular_data, tmp_path):
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({
        "model": linear_model[0], "input": str(tmp_path / "{table}.parquet"), "output": str(tmp_path / "runs" / "dt={date}"),
        "method": "gradient", "inputs": {"features": COLUMNS}, "params": {"table": "overridden"},
    }))
    os.rename(tabular_data[0], tmp_path / "day.parquet")
    code = main(["run", "--config", str(config), "--date", "2026-11-28", "--param", "table=day"])
    assert code == 0
    manifest = json.loads((tmp_path / "runs" / "dt=2026-11-28" / "manifest.json").read_text())
    assert manifest["settings"]["params"] == {"table": "day", "date": "2026-11-28"}
    assert manifest["input"]["files"] == [str(tmp_path / "day.parquet")]


def test_user_errors_are_one_line_with_status_2_and_no_traceback(linear_model, tmp_path):
    result = _cli("run", "--model", linear_model[0], "--input", str(tmp_path / "none-*.parquet"), "--output", str(tmp_path / "o"))
    assert result.returncode == 2
    # one line, after TensorFlow was imported: none of its C++ start-up lines around it
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: input pattern") and "matches no files" in result.stderr
    typo = _cli("run", "--model", "m", "--input", "i", "--output", "o", "--stpes", "3")
    assert typo.returncode == 2 and "Did you mean --steps?" in typo.stderr


def test_console_script_is_installed_and_runs():
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "attribution-pipeline"]
    assert script.value == "pipeline.cli:run_program"
    executable = os.path.join(os.path.dirname(sys.executable), "attribution-pipeline")
    result = subprocess.run([executable, "run", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "--key-column" in result.stdout


def test_a_run_that_fails_its_checks_exits_with_status_3(linear_model, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({f: [None, 1.0] for f in COLUMNS}, schema=pa.schema([(f, pa.float32()) for f in COLUMNS])), str(tmp_path / "bad.parquet"))
    result = _cli("run", "--model", linear_model[0], "--input", str(tmp_path / "bad.parquet"), "--output", str(tmp_path / "o"),
                  "--method", "gradient", "--input-map", "features=" + ",".join(COLUMNS))
    assert result.returncode == 3
    assert "1 of 2 records were dead-lettered" in result.stderr and "Traceback" not in result.stderr


def test_debug_shows_the_traceback_of_a_user_error(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="model path .m.keras. does not exist"):
        main(["run", "--model", "m.keras", "--input", str(tmp_path / "none-*.parquet"), "--output", str(tmp_path / "o"), "--debug"])


def test_config_and_flag_errors_come_before_tensorflow_or_beam_is_imported(tmp_path):
    """--help, a mistyped method, a missing --output, a mistyped flag, bad YAML: answered without
    importing TensorFlow or Beam (seconds of start-up), checked in a fresh interpreter."""
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    cases = {
        "help": ["run", "--help"],
        "method": ["run", "--model", "m", "--input", "i", "--output", "o", "--method", "integrated_gradient"],
        "output": ["run", "--model", "m", "--input", "i"],
        "flag": ["run", "--model", "m", "--input", "i", "--output", "o", "--stpes", "3"],
        "other_method": ["run", "--model", "m", "--input", "i", "--output", "o", "--method", "gradient", "--steps", "3"],
        "yaml": ["run", "--config", str(tmp_path / "bad.yaml"), "--output", "o"],
        "date": ["run", "--model", "m", "--input", "i", "--output", "o/{date}", "--date", "../x"],
    }
    code = (
        "import sys, json\nfrom pipeline.cli import main\ncodes = {}\n"
        "for name, args in json.loads(sys.argv[1]).items():\n"
        "    try:\n        codes[name] = main(args)\n    except SystemExit as exit:\n        codes[name] = exit.code\n"
        "print(json.dumps({'codes': codes, 'heavy': sorted(m for m in ('tensorflow', 'keras', 'apache_beam') if m in sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True, cwd=REPO, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == {"help": 0, "method": 2, "output": 2, "flag": 2, "other_method": 2, "yaml": 2, "date": 2}, done.stderr
    assert result["heavy"] == []
    assert "method 'integrated_gradient' is not valid" in done.stderr and "Did you mean --steps?" in done.stderr
    assert "missing required setting(s) ['output']" in done.stderr and "is not valid YAML" in done.stderr


def test_the_list_of_beam_flags_known_without_beam_matches_the_installed_beam():
    from pipeline.beam_flags import BEAM_FLAGS, live_beam_flags

    assert BEAM_FLAGS == live_beam_flags(), "regenerate pipeline/beam_flags.py: python -m pipeline.beam_flags"


def test_a_run_shows_progress_on_stderr_and_quiet_silences_it(linear_model, tabular_data, tmp_path, monkeypatch):
    import pipeline.progress as progress

    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.05)  # the test run is short
    args = ["run", "--model", linear_model[0], "--input", tabular_data[0], "--key-column", "id", "--method", "smoothgrad",
            "--samples", "400", "--input-map", "features=" + ",".join(COLUMNS)]
    shown = _run_capturing_stderr(args + ["--output", str(tmp_path / "a")])
    lines = [line for line in shown.splitlines() if line.startswith("progress: ")]
    assert lines and all(" of 40 records (" in line and "records/s" in line for line in lines), shown
    assert "\r" not in shown and "\x1b[" not in shown  # plain lines when stderr is not a terminal
    assert "progress: " not in _run_capturing_stderr(args + ["--output", str(tmp_path / "b"), "--quiet"])


def test_records_are_done_in_growing_batches_and_the_progress_line_says_how_many_were_read(linear_model, tabular_data, tmp_path,
                                                                                           monkeypatch):
    """Issue 26: a heavy job's first records count within seconds. The 40 records arrive as batches
    of 16 and 24 (the reader's ramp), each counted as done when attributed, and read before that."""
    import transforms.progress as counters
    from pipeline.progress import plain_line

    seen = []
    real_add_done, real_add_read = counters.add_done, counters.add_read
    monkeypatch.setattr(counters, "add_done", lambda n: (seen.append(("done", n)), real_add_done(n)))
    monkeypatch.setattr(counters, "add_read", lambda n: (seen.append(("read", n)), real_add_read(n)))
    args = ["run", "--model", linear_model[0], "--input", tabular_data[0], "--key-column", "id", "--steps", "4",
            "--output", str(tmp_path / "a"), "--quiet"]
    assert main(args) == 0
    assert sorted(n for kind, n in seen if kind == "done") == [16, 24], seen
    assert sorted(n for kind, n in seen if kind == "read") == [16, 24], seen
    assert seen.index(("read", 16)) < seen.index(("done", 16)), seen
    assert plain_line(16, 40, 2.0, read=40) == "progress: 16 of 40 records (40 %), 40 read, 8 records/s, about 3 s left (2 s so far)"
    assert plain_line(40, 40, 2.0, read=40) == "progress: 40 of 40 records (100 %), 20 records/s (2 s so far)"


def _run_capturing_stderr(args) -> str:
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(args) == 0
    return err.getvalue()


def test_beams_import_time_noise_is_dropped_and_real_warnings_are_kept():
    code = (
        "import logging\nfrom pipeline.cli import configure_logging\nconfigure_logging()\n"
        "logging.warning('apitools not found, and bigquery client libraries are not available despite the import not raising an ImportError.')\n"
        "logging.getLogger('apache_beam').warning('a real warning')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.stderr.strip().splitlines() == ["WARNING apache_beam: a real warning"]


def test_every_flag_of_every_command_has_help_and_run_help_points_to_beam_options():
    from pipeline.cli import _subparsers, build_parser

    for sub in _subparsers(build_parser()):
        undocumented = [a.option_strings for a in sub._actions if a.option_strings and not a.help]
        assert undocumented == [], (sub.prog, undocumented)
    text = _cli("run", "--help").stdout
    assert "Apache Beam pipeline options" in text and "configs/example.yaml" in text and "--runner=DataflowRunner" in text


def test_each_subcommand_answers_user_errors_in_one_line_with_status_2(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    missing = str(tmp_path / "missing")
    cases = [
        ["compare", missing, str(tmp_path / "empty")],
        ["compare", str(tmp_path / "empty"), str(tmp_path / "empty")],
        ["report", missing, "--out", str(tmp_path / "r.html")],
        ["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")],
        ["finalize", missing],
        ["finalize", str(tmp_path / "empty")],
        ["demo", "--output", str(tmp_path / "a_file")],
        ["run", "--model", "m.keras", "--input", "i.parquet"],
    ]
    for args in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
    assert sorted(os.listdir(tmp_path)) == ["a_file", "empty"]  # nothing created by a refused command


def test_a_tabular_run_needs_no_input_map_and_says_which_columns_it_read(linear_model, tabular_data, tmp_path):
    args = ["run", "--model", linear_model[0], "--input", tabular_data[0], "--output", str(tmp_path / "out"),
            "--key-column", "id", "--passthrough-columns", "label", "--method", "gradient"]
    shown = _run_capturing_stderr(args)
    assert "model input 'features' reads 6 columns (the numeric columns that are not key, pass-through, label (or named like one) or slice, " \
           "nor read by another model input, in file order): f0, f1, f2, f3, f4, f5" in shown
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"]["mapping"] == {"features": COLUMNS}
    rows = rows_by_key(read_parquet_dir(tmp_path / "out"))
    weights = linear_model[1]
    for key, row in rows.items():
        np.testing.assert_allclose([row[f"attr_{c}"] for c in COLUMNS], weights[:, row["target"]], rtol=1e-6)


def test_completeness_target_flags_reach_the_config():
    from pipeline.cli import build_parser, config_from_args

    args = build_parser().parse_args(["run", "--model", "m.keras", "--input", "x.parquet", "--output", "o", "--steps", "8",
                                      "--completeness-target", "0.01", "--max-steps", "512"])
    config = config_from_args(args)
    assert (config.completeness_target, config.max_steps, config.setting("steps")) == (0.01, 512, 8)
    plain = config_from_args(build_parser().parse_args(["run", "--model", "m.keras", "--input", "x.parquet", "--output", "o"]))
    assert plain.completeness_target is None and "max_steps" not in plain.to_dict()


def test_parquet_pre_buffer_flags_reach_the_config_and_default_to_automatic():
    from pipeline.cli import build_parser, config_from_args

    base = ["run", "--model", "m.keras", "--input", "x.parquet", "--output", "o"]
    assert config_from_args(build_parser().parse_args(base)).parquet_pre_buffer is None
    assert config_from_args(build_parser().parse_args([*base, "--parquet-pre-buffer"])).parquet_pre_buffer is True
    assert config_from_args(build_parser().parse_args([*base, "--no-parquet-pre-buffer"])).parquet_pre_buffer is False


def test_image_and_layer_flags_reach_the_config(tmp_path):
    from pipeline.cli import build_parser, config_from_args
    from transforms.images import ImageSpec

    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump({"images": {"thumb": {"size": [4, 4], "channels": 3}}}))
    args, _ = build_parser().parse_known_args([
        "run", "--config", str(config_file), "--model", "m.keras", "--input", "d.tfrecord", "--output", "o",
        "--method", "grad_cam", "--layer", "conv", "--image", "image/encoded:28x28x1:0.5,-1",
    ])
    config = config_from_args(args)
    assert config.layers == ("conv",)
    assert config.images == {"thumb": ImageSpec(4, 4, 3, 1 / 255, 0.0), "image/encoded": ImageSpec(28, 28, 1, 0.5, -1.0)}


def test_a_malformed_image_flag_is_a_usage_error_that_shows_the_form(capsys):
    with __import__("pytest").raises(SystemExit):
        main(["run", "--model", "m.keras", "--input", "d", "--output", "o", "--image", "img:28x28"])
    assert "--image expects COLUMN:HxWxC" in capsys.readouterr().err


def test_control_characters_in_names_from_the_data_never_reach_the_terminal_raw(linear_model, tmp_path, capsys):
    """A column named with an ANSI escape (clear screen, red) is shown escaped in the mapping note
    and in errors, never as the escape itself."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = np.random.default_rng(1).normal(size=(5, 6)).astype(np.float32)
    names = ["f0", "f1", "f2", "f3", "f4", "\x1b[2J\x1b[31mf5\u202e"]
    pq.write_table(pa.table({"id": np.arange(5), **{n: values[:, j] for j, n in enumerate(names)}}), tmp_path / "d.parquet")
    assert main(["run", "--model", linear_model[0], "--input", str(tmp_path / "d.parquet"), "--output", str(tmp_path / "out"),
                 "--method", "gradient", "--key-column", "id"]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err and r"\x1b[2J\x1b[31mf5\u202e" in err, err
    assert main(["run", "--model", linear_model[0], "--input", str(tmp_path / "d.parquet"), "--output", str(tmp_path / "out2"),
                 "--method", "gradient"]) == 2  # without --key-column: 7 numeric columns for a 6-wide input
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "\x1b" not in err and r"\x1b[2J\x1b[31mf5\u202e (scalar)" in err, err


def test_beams_storage_retries_and_failed_bundles_are_one_line_or_none_on_stderr():
    """A store that went away: Beam logs each retry with a traceback, and the failed bundle with
    another; the command shows one line per retry and ends with its own one-line error."""
    import logging

    from pipeline.cli import _DropTracebacksSaidInOneLine, _RetriesInOneLine

    retry = logging.LogRecord(
        "apache_beam.utils.retry", logging.WARNING, __file__, 1,
        "Retry with exponential backoff: waiting for %s seconds before retrying %s because we caught exception: %s "
        "Traceback for above exception (most recent call last):\n%s",
        (5.2, "get_range", "S3ClientError: ('Could not connect to the endpoint URL: \"http://h/b/k\"', None)\n",
         '  File "boto3_client.py", line 150, in get_range\n'), None)
    assert _RetriesInOneLine().filter(retry)
    assert retry.getMessage() == ("Retry with exponential backoff: waiting for 5.2 seconds before retrying get_range because we "
                                  "caught exception: S3ClientError: ('Could not connect to the endpoint URL: \"http://h/b/k\"', None)")
    failed = logging.LogRecord("apache_beam.runners.worker.sdk_worker", logging.ERROR, __file__, 1,
                               "Error processing instruction: Traceback ... S3ClientError: Could not connect to the endpoint URL", (), None)
    other = logging.LogRecord("apache_beam.runners.worker.sdk_worker", logging.ERROR, __file__, 1,
                              "Error processing instruction: Traceback ... ZeroDivisionError", (), None)
    assert not _DropTracebacksSaidInOneLine().filter(failed) and _DropTracebacksSaidInOneLine().filter(other)


def test_a_missing_model_a_folder_not_ours_a_complete_run_or_a_mistyped_column_is_answered_before_tensorflow_and_beam_load(linear_model, tabular_data, tmp_path):
    model, _, _ = linear_model
    data = tabular_data[0]
    probe = ("import sys; from pipeline.cli import main; code = main(sys.argv[1:]); "
             "print(code, 'tensorflow' in sys.modules, 'apache_beam' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": REPO}

    def quick(*args):
        done = subprocess.run([sys.executable, "-c", probe, "run", *args], capture_output=True, text=True, env=env, timeout=120)
        return done.stdout.strip().splitlines()[-1], done.stderr.strip()

    shown, err = quick("--model", str(tmp_path / "nope.keras"), "--input", data, "--output", str(tmp_path / "a"))
    assert shown == "2 False False" and err.endswith("does not exist; pass a .keras/.h5 file or a SavedModel directory."), err
    shown, err = quick("--model", model, "--input", data, "--output", str(tmp_path / "b"), "--key-column", "ID")
    assert shown == "2 False False"
    assert err == ("error: key column 'ID' is not a column of the input (did you mean 'id'?). "
                   "Input columns (data.parquet): id, label, f0, f1, f2, f3, f4, f5"), err
    shown, err = quick("--model", model, "--input", data, "--output", str(tmp_path / "c"), "--key-column", "id",
                       "--passthrough", "lable")
    assert shown == "2 False False" and "pass-through column 'lable' is not a column of the input (did you mean 'label'?)" in err
    assert not any((tmp_path / name).exists() for name in "abc")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("mine")
    shown, err = quick("--model", model, "--input", data, "--output", str(tmp_path / "notes"), "--key-column", "id")
    assert shown == "2 False False" and "is not empty and holds no run of this program (1 entry: 'notes.txt')" in err, err
    assert main(["run", "--model", model, "--input", data, "--output", str(tmp_path / "done"), "--key-column", "id",
                 "--steps", "4", "--quiet"]) == 0
    shown, err = quick("--model", model, "--input", data, "--output", str(tmp_path / "done"), "--key-column", "id")
    assert shown == "2 False False" and "already holds a complete run" in err and "pass --overwrite" in err, err
    assert (tmp_path / "notes" / "notes.txt").read_text() == "mine"


def test_a_label_column_is_not_read_as_a_feature_by_default_and_the_run_ends_with_the_report_command(
        linear_model, tabular_data, tmp_path, capsys):
    """The fixture's file holds id, label and f0..f5: the (6,) input reads f0..f5 without a mapping."""
    model, weights, _ = linear_model
    data, features, ids, _ = tabular_data
    assert main(["run", "--model", model, "--input", data, "--output", str(tmp_path / "out"), "--key-column", "id",
                 "--baseline", "zeros", "--steps", "8", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["input"]["mapping"] == {"features": COLUMNS}
    out = tmp_path / "out"
    assert capsys.readouterr().out.splitlines()[-1] == f"report:   attribution-pipeline report {out} --out {out}/report.html"
