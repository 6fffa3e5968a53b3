"""Running an attribution job: plan, launch into a staging directory, wait (or not), finalize.

On the DirectRunner (and with --wait on any runner) `run_attribution` waits for the pipeline and
finalizes it (pipeline.manifest): the staged files replace the previous result and the manifest
is written last. A job submitted to a remote runner without --wait returns at once with its job
id; `attribution-pipeline finalize OUTPUT` completes it once the job has finished.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import sys
import time
import uuid
from typing import Any, Callable, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, GoogleCloudOptions, PipelineOptions, PrismRunnerOptions, StandardOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from attributions.concurrency import available_cores, run_ops_single_threaded
from pipeline.build import build_pipeline
from pipeline.config import RunConfig
from pipeline.errors import RunFailedError
from pipeline.storage_fault import storage_fault
from pipeline.filesystem_options import filesystem_options, use_filesystem_options
from pipeline.manifest import finalize_run
from pipeline.output_dir import (
    LAUNCH_FILE, StagingFolder, check_output, check_output_outside_inputs, claim, inspect_output, open_staging, read_launch, remove_staging,
    staging_in_use, write_json,
)
from pipeline.output_lock import OutputLock
from pipeline.plan import RunPlan, describe_mapping, resolve_plan
from pipeline.prism import find_prism, stop_prism_job_server
from pipeline.progress import ProgressReporter, parquet_total_rows
from pipeline.terminal import printable
from transforms.progress import records_done, records_read
from transforms.read import METRICS_NAMESPACE

__all__ = ["run_attribution", "make_pipeline", "RunFailedError", "LOCAL_RUNNERS"]

_LOGGER = logging.getLogger(__name__)
# Runners whose job lives and dies with the launcher (PrismRunner's workers run in it): waited for.
LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner", "BundleBasedDirectRunner", "PrismRunner", "prism")


class ViewCachingOptions(PipelineOptions):
    """PipelineOptions whose views are made once per options class. Beam makes a new view (a fresh
    argparse parser over every registered option) on each `view_as`, and asks ~430 times while it
    builds and translates this pipeline: 0.4-0.5 s of every run's start, measured. All views of
    one options object share its values (Beam's own contract), so a cached view reads and writes
    the same values a fresh one would."""

    def view_as(self, cls):
        views = self.__dict__.setdefault("_views", {})  # not through PipelineOptions.__setattr__
        if cls not in views:
            views[cls] = super().view_as(cls)
        return views[cls]


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Beam pipeline for `options`. DirectRunner (the default) runs on Beam's in-process
    FnApiRunner, never on Prism (docs/runners.md: the progress line counts records in this
    process). PrismRunner without --prism_location gets the binary pipeline.prism finds."""
    runner_name = options.view_as(StandardOptions).runner
    if runner_name in (None, "DirectRunner", "direct", "FnApiRunner"):
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    if runner_name in ("PrismRunner", "prism") and not options.view_as(PrismRunnerOptions).prism_location:
        options.view_as(PrismRunnerOptions).prism_location = find_prism()  # None: Beam downloads one
    return beam.Pipeline(options=options)


def _metrics(result) -> dict[str, Any]:
    """Every counter and distribution of the run, by 'namespace/name' ({} when the runner has none)."""
    if type(result).__module__.endswith("portable_runner") and getattr(result, "_metrics", None) is not None:
        # Beam's portable result keeps the first metrics it fetched for good: a progress poll during
        # the run would otherwise freeze the manifest's metrics at that moment.
        result._metrics = None  # pylint: disable=protected-access
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


def _grad_cam_description(plan: RunPlan) -> dict[str, Any]:
    """grad_cam: the layer read and the shapes of the two map columns (transforms.output)."""
    if plan.config.method != "grad_cam":
        return {}
    params = plan.settings.method_params
    (spec,) = plan.schema.model_inputs
    (column,) = spec.columns
    return {"grad_cam": {
        "layer": params["layer"], "layer_shape": params["layer_shape"],
        "columns": {f"gradcam_{column.name}": params["layer_shape"][:2], f"attr_{column.name}": list(spec.shape)},
    }}


def _launch(plan: RunPlan, pipeline_args: list[str], runner: Optional[str], started: float, planned: float) -> dict[str, Any]:
    config = plan.config
    return {
        "settings": config.to_dict(),
        "pipeline_options": pipeline_args,
        "runner": runner or "DirectRunner",
        "input": {"patterns": list(config.input), "format": plan.input_format, "files": list(plan.input_files),
                  "mapping": describe_mapping(plan.schema)},
        # outputs: the explained output's width (1: a scalar score, e.g. a sigmoid; the report
        # then shows its distribution instead of class shares).
        "model": {"path": config.model, "sha256": plan.model_fingerprint, "outputs": plan.schema.num_outputs,
                  # inputs attributed at a layer's output: which layer and why (none for a float model)
                  "layers": [choice.describe() for choice in plan.layers], **_grad_cam_description(plan)},
        "baseline": plan.baseline,
        **({"quality": plan.quality} if plan.quality is not None else {}),
        "compute_threads": plan.settings.compute_threads,
        "started": started,
        "planned": planned,
    }


def _pending_remote_jobs(stagings: list[str]) -> list[tuple[str, dict]]:
    """Those of `stagings` whose jobs were launched on a remote runner: they may still be writing."""
    pending = []
    for staging in stagings:
        launch = read_launch(staging)
        if launch.get("runner") not in LOCAL_RUNNERS:
            pending.append((staging, launch))
    return pending


def _prepare_output(config: RunConfig, run_id: str) -> StagingFolder:
    """With the output's lock held: refuses a folder that is not ours (checked again, now that
    no other run can change it), that a live run or a remote job may still be writing into;
    removes what local runs that died left; writes the ownership record; creates the staging
    folder."""
    state = check_output(config.output, config.overwrite)
    stale = state.staging_paths  # read once: on an object store each look lists the whole folder
    live = [staging for staging in stale if staging_in_use(staging)]
    if live:  # its lock file was deleted or replaced while it ran
        raise ValueError(
            f"output {config.output!r} is in use by another run: its staging folder {live[0]} is held by a live process "
            f"(the folder's lock file was deleted or replaced while that run held it). Wait for it to finish or choose "
            f"another --output."
        )
    pending = _pending_remote_jobs(stale)
    if pending:
        staging, launch = pending[0]
        raise ValueError(
            f"output {config.output!r} holds a job launched on {launch.get('runner')} (job {launch.get('job_id')!r}) "
            f"that was not finalized; once it has finished run: attribution-pipeline finalize {config.output} "
            f"(or, if that job was cancelled, delete {staging})."
        )
    if stale:  # the lock is ours, so no live local run owns them
        _LOGGER.warning("removing %d staging folders of runs that did not finish: %s", len(stale), stale)
        for staging in stale:
            remove_staging(staging)
    claim(state)
    return open_staging(config.output, run_id)


def _mapping_notes(plan: RunPlan) -> list[str]:
    """What the launcher chose for the user: model inputs read from columns they did not name."""
    notes = []
    for name, columns in describe_mapping(plan.schema).items():
        given = plan.config.inputs.get(name)
        if columns == [name] or (given is not None and list((given,) if isinstance(given, str) else given) == columns):
            continue
        if len(columns) == 1 and columns[0] in plan.config.images:  # an --image column: decoded, as asked
            continue
        shown = ", ".join(columns) if len(columns) <= 12 else ", ".join(columns[:6]) + ", ..., " + ", ".join(columns[-3:])
        why = "the glob given" if given is not None else "the numeric columns that are not key, pass-through, label (or named like one) or slice, nor read by another model input, in file order"
        notes.append(f"model input {name!r} reads {len(columns)} column{'s' if len(columns) != 1 else ''} ({why}): {shown}")
    return notes


def _storage_refused(error: BaseException) -> bool:
    """A write refused for lack of room: a full disk, a quota, a file-size limit."""
    while error is not None:
        text = str(error)
        if getattr(error, "errno", None) in _NO_ROOM or any(os.strerror(code) in text for code in _NO_ROOM):
            return True
        error = error.__cause__ or error.__context__
    return False


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def run_attribution(
    config: RunConfig, pipeline_args: Optional[Sequence[str]] = None, wait: Optional[bool] = None, progress: bool = False
) -> dict[str, Any]:
    """Runs the job. Returns the manifest, or for a remote job not waited for, its launch record
    (status 'submitted', job_id, job_url, staging).

    wait: None = wait on local runners only. progress: show a progress line on stderr while
    waiting (pipeline.progress). Raises ValueError for a misconfigured run before
    the pipeline starts, RunFailedError when the finished run fails its checks (or the disk
    filled up). The output folder is locked for the run (pipeline.output_lock); a run that fails
    removes its staging folder, leaving the previous result as it was.
    """
    started = time.time()
    pipeline_args = list(pipeline_args or [])
    use_filesystem_options(pipeline_args)  # before the first file is matched or the output checked
    threads = _compute_threads(config, pipeline_args)
    if threads > 1:
        run_ops_single_threaded()  # before the launcher loads the model: possible only before TF's first op
    try:
        plan = resolve_plan(config, threads)
    except Exception as error:  # a bucket that went away while the launcher read the model or the input
        fault = storage_fault(error, config.paths(), pipeline_args, config.output, None)
        if fault is not None:
            raise fault.error from error
        raise
    plan = dataclasses.replace(plan, settings=dataclasses.replace(plan.settings, filesystem_options=filesystem_options(pipeline_args)))
    if progress:
        for note in _mapping_notes(plan):
            print(printable(note), file=sys.stderr)
    if plan.baseline_warning:
        _LOGGER.warning("%s", plan.baseline_warning)
    check_output_outside_inputs(config.output, config.input, plan.input_files)
    check_output(config.output, config.overwrite)  # before the folder is created or locked
    created = "://" not in config.output and not os.path.exists(config.output)
    try:
        lock = OutputLock(config.output, lease_seconds=config.lock_lease_seconds).acquire()
    except OSError as error:
        raise ValueError(f"cannot write to --output {config.output!r}: {error.strerror or error}; choose a folder you can write to.") from None
    staging = None
    try:
        # Once the folder is ours: a run refused because another one holds it is refused at once.
        plan = dataclasses.replace(plan, quality=_quality_audit(plan, progress))
        staging = _prepare_output(config, uuid.uuid4().hex[:12])
        return _run(dataclasses.replace(plan, staging_dir=staging.path), pipeline_args, wait, started, progress, lock.verify)
    except BaseException as error:
        fault = storage_fault(error, config.paths(), pipeline_args, config.output, config.lock_lease_seconds)
        if fault is not None and not fault.reachable:  # cleaning up would wait through Beam's retries
            lock.abandon()
            raise fault.error from error
        if staging is not None:
            remove_staging(staging.path)
        if created:
            _remove_if_only_ours(config.output)
        if _storage_refused(error):
            raise RunFailedError(
                f"the output storage refused a write ({_first_line(error)}) while the run wrote to {config.output!r}; "
                f"its staging folder was removed and the previous result is as it was. Free some space (or choose "
                f"another --output) and run again."
            ) from error
        if fault is not None:
            raise fault.error from error
        raise
    finally:
        if staging is not None:
            staging.release()
        lock.release()
        if PipelineOptions(pipeline_args).view_as(StandardOptions).runner in ("PrismRunner", "prism"):
            stop_prism_job_server()  # Beam would stop it only at interpreter exit


def _quality_audit(plan: RunPlan, progress: bool) -> Optional[dict[str, Any]]:
    """The quality audit (pipeline.quality) before the pipeline starts; its flags are logged, one
    line each. An audit that fails, or is still running after batch_timeout_seconds (a model that
    never finishes), does not stop the run: its error is recorded instead (and fails any quality
    limit); the workers' own batch time-out then judges the model."""
    import threading

    from audit.quality_limits import breached_limits
    from pipeline.quality import audit_quality

    if not plan.config.quality_rows:
        return None
    outcome: dict[str, Any] = {}

    def audit() -> None:
        try:
            outcome["quality"] = audit_quality(plan)
        except Exception as error:  # noqa: BLE001 - the attributions themselves may still be fine
            outcome["error"] = f"{type(error).__name__}: {error}"

    worker = threading.Thread(target=audit, name="quality-audit", daemon=True)  # a TensorFlow call cannot be stopped
    worker.start()
    worker.join(plan.config.batch_timeout_seconds)
    if worker.is_alive():
        outcome["error"] = (f"still running after {plan.config.batch_timeout_seconds:g} s (batch_timeout_seconds): "
                            f"the model may never finish on its rows")
    if "quality" not in outcome:
        _LOGGER.warning("the quality audit failed (%s); the run goes on without it", printable(outcome["error"])[:300])
        return {"error": outcome["error"], "flags": [], "limits": breached_limits({}, plan.config.quality_limits)}
    quality = outcome["quality"]
    if progress:
        print(f"quality audit: {quality['rows']} rows in {quality.get('seconds', 0):.1f} s", file=sys.stderr)
    for flag in quality.get("flags", []):
        _LOGGER.warning("quality: %s", printable(flag))
    return quality


def _compute_threads(config: RunConfig, pipeline_args: list[str]) -> int:
    """Gradient calls side by side per worker (attributions.concurrency): the setting, else one per
    core where the workers run on this machine, else 1 (a remote worker's cores are unknown here,
    and its runner may already run one worker process per core)."""
    if config.compute_threads is not None:
        return config.compute_threads
    runner = PipelineOptions(pipeline_args).view_as(StandardOptions).runner
    return available_cores() if runner in LOCAL_RUNNERS else 1


def _first_line(error: BaseException) -> str:
    """The OS's words for the refused write, e.g. '[Errno 28] No space left on device'."""
    text = str(error)
    for code in _NO_ROOM:
        found = re.search(rf"\[Errno {code}\] [^\]\[\n]*", text)
        if found:
            return found.group(0).strip()
    return text.strip().splitlines()[-1][:200] if text.strip() else type(error).__name__


def _remove_if_only_ours(output: str) -> None:
    """Removes a folder this run created when nothing but its own bookkeeping is left in it."""
    import shutil

    try:
        state = inspect_output(output)
    except (OSError, ValueError):  # not a folder of ours to remove
        return
    if all(state.is_bookkeeping(n) for n in state.entries):
        shutil.rmtree(output, ignore_errors=True)


def _timed_out_batch(error: BaseException) -> Optional[str]:
    """The BatchTimeoutError's words when `error` is one or was caused by one (runners wrap it,
    or repeat its text in their own error)."""
    while error is not None:
        lines = [line for line in str(error).splitlines() if "(batch_timeout_seconds)" in line]
        if lines:
            return lines[0].split(" [while running", 1)[0].strip()
        error = error.__cause__ or error.__context__
    return None


def _records_done_by_metrics(result) -> Callable[[], int]:
    def read() -> int:
        metrics = _metrics(result)
        return sum(int(metrics.get(f"{METRICS_NAMESPACE}/{name}", 0)) for name in ("records_attributed", "records_dead_lettered"))

    return read


def _records_read_by_metrics(result) -> Callable[[], int]:
    return lambda: int(_metrics(result).get(f"{METRICS_NAMESPACE}/records_read", 0))


def _progress_total(plan: RunPlan) -> Optional[int]:
    return parquet_total_rows(plan.input_files) if plan.input_format == "parquet" else None


def _run(
    plan: RunPlan, pipeline_args: list[str], wait: Optional[bool], started: float, progress: bool, before_commit: Callable[[], None]
) -> dict[str, Any]:
    config, staging = plan.config, plan.staging_dir
    options = ViewCachingOptions(pipeline_args)
    runner = options.view_as(StandardOptions).runner
    wait = runner in LOCAL_RUNNERS if wait is None else wait
    pipeline = make_pipeline(options)
    build_pipeline(pipeline, plan)
    launch = _launch(plan, pipeline_args, runner, started, time.time())
    write_json(FileSystems.join(staging, LAUNCH_FILE), launch)
    in_process = isinstance(pipeline.runner, FnApiRunner)
    # Workers in this process count into transforms.progress (not so with multi_processing ones,
    # which report nothing until the end: no progress line then).
    counted_here = options.view_as(DirectOptions).direct_running_mode != "multi_processing"
    reporter = None
    if progress and in_process and counted_here:  # run() returns once the pipeline is done: report meanwhile
        reporter = ProgressReporter(records_done, _progress_total(plan), read_read=records_read).start()
    try:
        result = pipeline.run()
        job = _job_reference(result, options)
        write_json(FileSystems.join(staging, LAUNCH_FILE), {**launch, **job})
        if not wait:
            return {"status": "submitted", "output": config.output, "staging": staging, "runner": runner, **job}
        if progress and not in_process:
            if job["job_id"]:
                print(f"running on {runner}: job {job['job_id']}" + (f"  {job['job_url']}" if job["job_url"] else ""), file=sys.stderr)
            reporter = ProgressReporter(_records_done_by_metrics(result), _progress_total(plan),
                                        read_read=_records_read_by_metrics(result)).start()
        result.wait_until_finish()
    except ValueError as error:
        # Past the launcher's checks a ValueError is a fault, not a user error: keep its traceback.
        raise RuntimeError(f"the pipeline failed: {error}") from error
    except Exception as error:
        timed_out = _timed_out_batch(error)
        if timed_out is None:
            raise
        raise RunFailedError(f"the run was stopped: {timed_out}") from error
    finally:
        if reporter is not None:
            reporter.stop()
    return finalize_run(config.output, staging, _metrics(result), before_commit=before_commit)
