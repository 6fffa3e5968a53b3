"""schedules/nightly_audit.sh run for real over three nights: templated input, report, drift exit
status, a rerun that does not recompute, and the Flex Template's parameters and entry point."""

import json
import os
import subprocess
import sys

import yaml

from helpers import write_night_partition
from pipeline.cli import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "schedules", "nightly_audit.sh")
COLUMNS = [f"f{j}" for j in range(6)]


def _audit(config, runs, date, **env):
    environment = {**os.environ, "PYTHONPATH": REPO, "ATTRIBUTION_PIPELINE": f"{sys.executable} -m pipeline", **env}
    return subprocess.run(["bash", SCRIPT, str(config), str(runs), date], capture_output=True, text=True, env=environment, timeout=600)


def test_three_nights_of_audits(linear_model, tmp_path):
    write_night_partition(tmp_path, "2026-11-25", 1.0)
    write_night_partition(tmp_path, "2026-11-26", 1.0)
    write_night_partition(tmp_path, "2026-11-27", 4.0)  # feature f0 four times larger: drift
    config = tmp_path / "nightly.yaml"
    config.write_text(yaml.safe_dump({
        "model": linear_model[0], "input": str(tmp_path / "data" / "dt={date}" / "*.parquet"), "output": "unused/{date}",
        "method": "gradient_x_input", "target": 0, "inputs": {"features": COLUMNS}, "key_column": "id",
    }))
    runs = tmp_path / "runs"

    first = _audit(config, runs, "2026-11-25")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "report without a baseline" in first.stdout and (runs / "dt=2026-11-25" / "report.html").exists()

    second = _audit(config, runs, "2026-11-26")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "no drift beyond the thresholds" in second.stdout
    assert json.loads((runs / "dt=2026-11-26" / "drift.json").read_text())["drift"] is False

    third = _audit(config, runs, "2026-11-27")
    assert third.returncode == 4, third.stderr[-3000:]
    assert "DRIFT" in third.stdout and "f0 +300%" in third.stdout
    assert "Drift against the baseline run" in (runs / "dt=2026-11-27" / "report.html").read_text()
    manifest = json.loads((runs / "dt=2026-11-27" / "manifest.json").read_text())
    assert manifest["input"]["files"] == [str(tmp_path / "data" / "dt=2026-11-27" / "part-0.parquet")]

    again = _audit(config, runs, "2026-11-27")  # a rerun of a complete night does not recompute it
    assert "is already complete: not recomputed" in again.stdout and again.returncode == 4
    assert json.loads((runs / "dt=2026-11-27" / "manifest.json").read_text())["timings"] == manifest["timings"]


def test_flex_template_parameters_are_flags_of_run_and_its_entry_point_runs_run():
    metadata = json.loads(open(os.path.join(REPO, "schedules", "flex_template", "metadata.json")).read())
    parser = build_parser()
    run_flags = {o for p in parser._subparsers._group_actions[0].choices["run"]._actions for o in p.option_strings}
    for parameter in metadata["parameters"]:
        assert f"--{parameter['name']}" in run_flags, parameter["name"]
    args, unknown = parser.parse_known_args(["run", "--key_column=id", "--slice_column=country", "--date=2026-11-27", "--steps=8"])
    assert (args.key_column, args.slice_columns, args.date, args.steps, unknown) == ("id", ["country"], "2026-11-27", 8, [])
    entry = subprocess.run([sys.executable, os.path.join(REPO, "schedules", "flex_template", "main.py"), "--help"],
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    assert entry.returncode == 0 and "--slice-column" in entry.stdout and "--key-column" in entry.stdout
