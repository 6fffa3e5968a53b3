"""The pipeline on Beam's portable path and on Dataflow's graph builder.

- PortableRunner through Beam's Python job service with an EXTERNAL SDK worker pool: the shape of
  Flink on Kubernetes (SDK workers in a sidecar pool), minus Flink itself, whose job-server jar the
  package registry here does not serve (docs/running-at-scale.md). Every process started is in
  its own session and killed by PID at the end; every wait is bounded.
- DataflowRunner with --dry_run: the job graph is built and the setup.py package made for staging,
  offline; nothing is submitted.
"""

import json
import os

import numpy as np
import pytest

from helpers import read_parquet_dir, rows_by_key, run_on_the_portable_path, save_nonlinear_model, write_vector_tfrecord
from pipeline.config import RunConfig
from pipeline.run import run_attribution

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def image_data(tmp_path):
    model = save_nonlinear_model(tmp_path / "mlp.keras", num_features=6, num_classes=3)
    rng = np.random.default_rng(31)
    paths = [write_vector_tfrecord(tmp_path / f"part-{i}.tfrecord", rng.normal(size=(40, 6)).astype(np.float32),
                                   ids=[f"{i}-{j}" for j in range(40)]) for i in range(2)]
    return model, paths


def test_portable_runner_with_an_external_worker_pool_equals_the_direct_runner(image_data, tmp_path):
    model, paths = image_data
    settings = {"model": model, "input": paths, "key_column": "id", "method": "integrated_gradients", "steps": 16, "batch_size": 16}
    direct = run_attribution(RunConfig.from_mapping({**settings, "output": str(tmp_path / "direct")}))
    assert direct["status"] == "complete"

    run_on_the_portable_path(["run", "--model", model, "--input", paths[0], "--input", paths[1], "--output", str(tmp_path / "portable"),
                              "--key-column", "id", "--method", "integrated_gradients", "--steps", "16", "--batch-size", "16"],
                             tmp_path / "services.log")

    manifest = json.loads((tmp_path / "portable" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["job"]["runner"] == "PortableRunner"
    assert manifest["counts"]["records_attributed"] == 80 and manifest["counts"]["reconciled"]
    workers = (tmp_path / "services.log").read_text().count("Starting worker with command")  # the pool logs each SDK process
    assert workers >= 1 and manifest["metrics"]["attribution/model_loads"] == workers  # one load per SDK worker process
    ours, theirs = rows_by_key(read_parquet_dir(tmp_path / "portable")), rows_by_key(read_parquet_dir(tmp_path / "direct"))
    assert sorted(ours) == sorted(theirs) and len(ours) == 80
    for key, row in theirs.items():
        assert ours[key]["target"] == row["target"]
        np.testing.assert_allclose(ours[key]["attr_features"], row["attr_features"], rtol=0, atol=1e-6)


def test_dataflow_dry_run_builds_the_job_and_the_staged_package_offline(image_data, tmp_path):
    pytest.importorskip("apitools", reason="DataflowRunner needs apache-beam[gcp] (in the 'test' extra)")
    model, paths = image_data
    config = RunConfig.from_mapping({"model": model, "input": paths, "output": str(tmp_path / "out"), "key_column": "id",
                                     "method": "gradient"})
    submitted = run_attribution(config, [
        "--runner=DataflowRunner", "--dry_run=True", "--project=test-project", "--region=europe-west4",
        "--temp_location=gs://test-bucket/tmp", f"--setup_file={os.path.join(REPO, 'setup.py')}",
        "--sdk_container_image=europe-west4-docker.pkg.dev/test-project/attribution/attribution-pipeline:0.1.0",
    ])
    assert submitted["status"] == "submitted" and submitted["runner"] == "DataflowRunner"
    assert not (tmp_path / "out" / "manifest.json").exists()  # nothing ran
    launch = json.loads(open(os.path.join(submitted["staging"], "launch.json")).read())
    assert launch["runner"] == "DataflowRunner" and launch["input"]["files"] == sorted(paths)


def test_dataflow_dry_run_graph_holds_every_step_and_stages_this_package(image_data, tmp_path):
    pytest.importorskip("apitools", reason="DataflowRunner needs apache-beam[gcp] (in the 'test' extra)")
    import tarfile

    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.portability.api import beam_runner_api_pb2

    from pipeline.build import build_pipeline
    from pipeline.run import make_pipeline

    model, paths = image_data
    config = RunConfig.from_mapping({"model": model, "input": paths, "output": str(tmp_path / "out"), "method": "gradient"})
    options = PipelineOptions(["--runner=DataflowRunner", "--dry_run=True", "--project=test-project", "--region=europe-west4",
                               "--temp_location=gs://test-bucket/tmp", f"--setup_file={os.path.join(REPO, 'setup.py')}"])
    pipeline = make_pipeline(options)
    build_pipeline(pipeline, config)
    job = pipeline.run().job  # the Dataflow job that would be submitted
    steps = {t.unique_name.split("/")[0] for t in job.proto_pipeline.components.transforms.values()}
    assert {"ReadRecords", "DecodeRecords", "Attribute", "WriteAttributions", "WriteDeadLetters", "WriteSummary", "CountRecords", "MarkDone"} <= steps
    staged = {}
    for environment in job.proto_pipeline.components.environments.values():
        for dependency in environment.dependencies:
            name = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(dependency.role_payload).staged_name
            staged[name] = beam_runner_api_pb2.ArtifactFilePayload.FromString(dependency.type_payload).path
    assert "workflow.tar.gz" in staged  # the sdist of setup.py, which workers pip-install
    with tarfile.open(staged["workflow.tar.gz"]) as sdist:
        members = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"setup.py", "attributions/integrated_gradients.py", "audit/summary.py", "pipeline/run.py", "transforms/attribute.py"} <= members
