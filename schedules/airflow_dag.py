"""Airflow DAG: the nightly attribution audit, on Dataflow with Beam's operator by default.

Needs apache-airflow and apache-airflow-providers-apache-beam (and -google for Dataflow) in the
Airflow environment; this project does not install them. BeamRunPythonPipelineOperator runs
`python <py_options> <py_file> --runner=... --<option>=<value> ...`, so with py_options
["-m", "pipeline"] and py_file "run" the task runs `python -m pipeline run ...` exactly as a user
would (tests/schedules/test_airflow_dag.py builds that command from this file and checks that the
command line parser accepts it). `{{ ds }}` is Airflow's logical date (YYYY-MM-DD): each night
attributes its own partition, and a rerun of the same date refuses to overwrite a complete run.

Settings to change: PROJECT, REGION, BUCKET, the SDK container image; or, without editing, the
environment of the Airflow workers:
  ATTRIBUTION_AUDIT_ROOT    where configs/nightly.yaml and audits/dt=YYYY-MM-DD/ live (default BUCKET)
  ATTRIBUTION_AUDIT_RUNNER  DataflowRunner (default: the Beam operator) or a local runner such as
                            DirectRunner, run by a BashOperator with the same command line (what
                            CI runs in a real Airflow: tests/schedules/test_airflow_real.py)
  ATTRIBUTION_AUDIT_REPORTS the local folder the nightly report.html goes to (default /tmp)
  ATTRIBUTION_AUDIT_RETRIES retries of a failed task, 10 minutes apart (default 1)
"""

import os
from datetime import datetime, timedelta

from airflow import DAG

try:  # Airflow 3: the bash operator lives in the standard provider
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

PROJECT = "my-project"
REGION = "europe-west4"
BUCKET = "gs://my-bucket"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/attribution/attribution-pipeline:0.1.0"
ROOT = os.environ.get("ATTRIBUTION_AUDIT_ROOT", BUCKET).rstrip("/")
RUNNER = os.environ.get("ATTRIBUTION_AUDIT_RUNNER", "DataflowRunner")
TONIGHT = f"{ROOT}/audits/dt={{{{ ds }}}}"
LAST_NIGHT = f"{ROOT}/audits/dt={{{{ macros.ds_add(ds, -1) }}}}"
REPORTS = os.environ.get("ATTRIBUTION_AUDIT_REPORTS", "/tmp").rstrip("/")
RETRIES = int(os.environ.get("ATTRIBUTION_AUDIT_RETRIES", "1"))

with DAG(
    dag_id="nightly_attribution_audit",
    schedule="30 2 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    default_args={"retries": RETRIES, "retry_delay": timedelta(minutes=10)},
    tags=["attribution", "audit"],
) as dag:
    if RUNNER == "DataflowRunner":
        from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator

        attribute = BeamRunPythonPipelineOperator(
            task_id="attribute",
            runner="DataflowRunner",
            py_interpreter="python3",
            py_options=["-m", "pipeline"],
            py_file="run",
            pipeline_options={
                "config": f"{ROOT}/configs/nightly.yaml",
                "date": "{{ ds }}",
                "output": TONIGHT,
                "project": PROJECT,
                "region": REGION,
                "temp_location": f"{ROOT}/tmp",
                "sdk_container_image": IMAGE,
                "max_num_workers": 20,
                "experiments": ["use_runner_v2"],
            },
        )
    else:
        attribute = BashOperator(
            task_id="attribute",
            bash_command=(f"attribution-pipeline run --config {ROOT}/configs/nightly.yaml --date {{{{ ds }}}} "
                          f"--output {TONIGHT} --runner {RUNNER} --quiet"),
        )
    compare = BashOperator(
        task_id="compare_with_previous_night",
        bash_command=f"attribution-pipeline compare {LAST_NIGHT} {TONIGHT} --fail-on-drift",
    )
    report = BashOperator(
        task_id="report",
        bash_command=f"attribution-pipeline report {TONIGHT} --baseline {LAST_NIGHT} --out {REPORTS}/report-{{{{ ds }}}}.html",
    )
    # compare and report both follow the attribution, so a drifted night still gets its report, and
    # the night's run fails with its compare task (a run's state is its last tasks'; a report after
    # compare with trigger_rule all_done made a drifted night's run succeed in Airflow 3.1).
    attribute >> [compare, report]
