"""Running an attribution job: plan, launch into a staging directory, wait (or not), finalize.

On the DirectRunner (and with --wait on any runner) `run_attribution` waits for the pipeline and
finalizes it (pipeline.manifest): the staged files replace the previous result and the manifest
is written last. A job submitted to a remote runner without --wait returns at once with its job
id; `attribution-pipeline finalize OUTPUT` completes it once the job has finished.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from typing import Any, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from pipeline.build import build_pipeline
from pipeline.config import RunConfig
from pipeline.errors import RunFailedError
from pipeline.manifest import finalize_run
from pipeline.output_dir import LAUNCH_FILE, STAGING_PREFIX, check_output, stale_staging_dirs, write_json
from pipeline.plan import RunPlan, resolve_plan

__all__ = ["run_attribution", "make_pipeline", "RunFailedError", "LOCAL_RUNNERS"]

_LOGGER = logging.getLogger(__name__)
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner", "BundleBasedDirectRunner")


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Beam pipeline for `options`. DirectRunner (the default) runs on Beam's in-process
    FnApiRunner directly: DirectRunner would first try PrismRunner, which downloads a binary."""
    runner_name = options.view_as(StandardOptions).runner
    if runner_name in (None, "DirectRunner", "direct", "FnApiRunner"):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def _metrics(result) -> dict[str, Any]:
    """Every counter and distribution of the run, by 'namespace/name' ({} when the runner has none)."""
    try:
        query = result.metrics().query()
    except (AttributeError, NotImplementedError):
        return {}
    metrics: dict[str, Any] = {}
    for counter in query["counters"]:
        key = f"{counter.key.metric.namespace}/{counter.key.metric.name}"
        value = counter.committed if counter.committed is not None else counter.attempted
        metrics[key] = metrics.get(key, 0) + int(value or 0)
    for dist in query["distributions"]:
        key = f"{dist.key.metric.namespace}/{dist.key.metric.name}"
        value = dist.committed if dist.committed is not None else dist.attempted
        if value is None or not value.count:
            continue
        metrics[key] = {"count": value.count, "sum": value.sum, "min": value.min, "max": value.max, "mean": value.sum / value.count}
    return metrics


def _job_reference(result, options: PipelineOptions) -> dict[str, Optional[str]]:
    """The job id and, for Dataflow, its console URL (None where the runner has none)."""
    job_id = getattr(result, "job_id", None)
    job_id = job_id() if callable(job_id) else job_id
    url = None
    cloud = options.view_as(GoogleCloudOptions)
    if job_id and options.view_as(StandardOptions).runner in ("DataflowRunner", "dataflow"):
        url = f"https://console.cloud.google.com/dataflow/jobs/{cloud.region}/{job_id}?project={cloud.project}"
    return {"job_id": job_id, "job_url": url}


def _launch(plan: RunPlan, pipeline_args: list[str], runner: Optional[str], started: float, planned: float) -> dict[str, Any]:
    config = plan.config
    return {
        "settings": config.to_dict(),
        "pipeline_options": pipeline_args,
        "runner": runner or "DirectRunner",
        "input": {"patterns": list(config.input), "format": plan.input_format, "files": list(plan.input_files)},
        "model": {"path": config.model, "sha256": plan.model_fingerprint},
        "started": started,
        "planned": planned,
    }


def run_attribution(config: RunConfig, pipeline_args: Optional[Sequence[str]] = None, wait: Optional[bool] = None) -> dict[str, Any]:
    """Runs the job. Returns the manifest, or for a remote job not waited for, its launch record
    (status 'submitted', job_id, job_url, staging).

    wait: None = wait on local runners only. Raises ValueError for a misconfigured run before
    the pipeline starts, RunFailedError when the finished run fails its checks.
    """
    started = time.time()
    pipeline_args = list(pipeline_args or [])
    plan = resolve_plan(config)
    check_output(config.output, config.overwrite)
    stale = stale_staging_dirs(config.output)
    if stale:
        _LOGGER.warning("removing %d staging directories of runs that did not finish: %s", len(stale), stale)
        FileSystems.delete(stale)
    staging = FileSystems.join(config.output, f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
    plan = dataclasses.replace(plan, staging_dir=staging)
    options = PipelineOptions(pipeline_args)
    runner = options.view_as(StandardOptions).runner
    wait = runner in LOCAL_RUNNERS if wait is None else wait
    pipeline = make_pipeline(options)
    build_pipeline(pipeline, plan)
    launch = _launch(plan, pipeline_args, runner, started, time.time())
    write_json(FileSystems.join(staging, LAUNCH_FILE), launch)
    try:
        result = pipeline.run()
        job = _job_reference(result, options)
        write_json(FileSystems.join(staging, LAUNCH_FILE), {**launch, **job})
        if not wait:
            return {"status": "submitted", "output": config.output, "staging": staging, "runner": runner, **job}
        result.wait_until_finish()
    except ValueError as error:
        # Past the launcher's checks a ValueError is a fault, not a user error: keep its traceback.
        raise RuntimeError(f"the pipeline failed: {error}") from error
    return finalize_run(config.output, staging, _metrics(result))
