"""Airflow DAG: the nightly attribution audit on Dataflow, with Beam's operator.

Needs apache-airflow and apache-airflow-providers-apache-beam (and -google for Dataflow) in the
Airflow environment; this project does not install them. BeamRunPythonPipelineOperator runs
`python <py_options> <py_file> --runner=... --<option>=<value> ...`, so with py_options
["-m", "pipeline"] and py_file "run" the task runs `python -m pipeline run ...` exactly as a user
would (tests/schedules/test_airflow_dag.py builds that command from this file and checks that the
command line parser accepts it). `{{ ds }}` is Airflow's logical date (YYYY-MM-DD): each night
attributes its own partition, and a rerun of the same date refuses to overwrite a complete run.

Settings to change: PROJECT, REGION, BUCKET, the SDK container image.
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.apache.beam.operators.beam import BeamRunPythonPipelineOperator
from airflow.operators.bash import BashOperator

PROJECT = "my-project"
REGION = "europe-west4"
BUCKET = "gs://my-bucket"
IMAGE = f"{REGION}-docker.pkg.dev/{PROJECT}/attribution/attribution-pipeline:0.1.0"

with DAG(
    dag_id="nightly_attribution_audit",
    schedule="30 2 * * *",
    start_date=datetime(2026, 11, 1),
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["attribution", "audit"],
) as dag:
    attribute = BeamRunPythonPipelineOperator(
        task_id="attribute",
        runner="DataflowRunner",
        py_interpreter="python3",
        py_options=["-m", "pipeline"],
        py_file="run",
        pipeline_options={
            "config": f"{BUCKET}/configs/nightly.yaml",
            "date": "{{ ds }}",
            "output": f"{BUCKET}/audits/dt={{{{ ds }}}}",
            "project": PROJECT,
            "region": REGION,
            "temp_location": f"{BUCKET}/tmp",
            "sdk_container_image": IMAGE,
            "max_num_workers": 20,
            "experiments": ["use_runner_v2"],
        },
    )
    compare = BashOperator(
        task_id="compare_with_previous_night",
        bash_command=(
            "attribution-pipeline compare "
            f"{BUCKET}/audits/dt={{{{ macros.ds_add(ds, -1) }}}} {BUCKET}/audits/dt={{{{ ds }}}} "
            "--fail-on-drift"
        ),
    )
    report = BashOperator(
        task_id="report",
        trigger_rule="all_done",  # a drifted night still gets its report
        bash_command=(
            f"attribution-pipeline report {BUCKET}/audits/dt={{{{ ds }}}} "
            f"--baseline {BUCKET}/audits/dt={{{{ macros.ds_add(ds, -1) }}}} --out /tmp/report-{{{{ ds }}}}.html"
        ),
    )
    attribute >> compare >> report
