"""The Airflow DAG's Beam task builds a command line our CLI accepts (Airflow is not installed
here: its three classes are replaced by recorders, and the command is built as the Beam
provider's hook builds it: [python, *py_options, py_file, --runner=R, --k=v ...])."""

import os
import runpy
import sys
import types

from pipeline.cli import build_parser, check_pipeline_args

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Task:
    created = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        _Task.created.append(self)

    def __rshift__(self, other):
        return other


class _Dag:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _options_to_args(options: dict) -> list[str]:
    """The provider's beam_options_to_args: True/None -> --k, list -> --k=v each, else --k=v."""
    args = []
    for key, value in options.items():
        if value is None or value is True:
            args.append(f"--{key}")
        elif isinstance(value, list):
            args.extend(f"--{key}={v}" for v in value)
        else:
            args.append(f"--{key}={value}")
    return args


def test_the_beam_task_runs_our_cli_with_flags_it_accepts(monkeypatch):
    modules = {
        "airflow": types.SimpleNamespace(DAG=_Dag),
        "airflow.providers.apache.beam.operators.beam": types.SimpleNamespace(BeamRunPythonPipelineOperator=_Task),
        "airflow.operators.bash": types.SimpleNamespace(BashOperator=_Task),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    _Task.created.clear()
    namespace = runpy.run_path(os.path.join(REPO, "schedules", "airflow_dag.py"))
    assert namespace["dag"].kwargs["schedule"] == "30 2 * * *"
    beam_task = next(t for t in _Task.created if "py_file" in t.kwargs)
    k = beam_task.kwargs
    options = {key: (value.replace("{{ ds }}", "2026-11-27") if isinstance(value, str) else value)
               for key, value in k["pipeline_options"].items()}
    command = [k["py_interpreter"], *k["py_options"], k["py_file"], f"--runner={k['runner']}", *_options_to_args(options)]
    assert command[:4] == ["python3", "-m", "pipeline", "run"]

    parser = build_parser()
    args, beam_args = parser.parse_known_args(command[3:])
    assert (args.command, args.date, args.output, args.config) == (
        "run", "2026-11-27", "gs://my-bucket/audits/dt=2026-11-27", "gs://my-bucket/configs/nightly.yaml")
    check_pipeline_args(beam_args, parser)  # every other flag is a Beam pipeline option
    assert "--runner=DataflowRunner" in beam_args and "--experiments=use_runner_v2" in beam_args
    bash_commands = [t.kwargs["bash_command"] for t in _Task.created if "bash_command" in t.kwargs]
    assert any(c.startswith("attribution-pipeline compare ") and "--fail-on-drift" in c for c in bash_commands)
    assert any(c.startswith("attribution-pipeline report ") and "--baseline" in c for c in bash_commands)
