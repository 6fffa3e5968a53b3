"""Running an attribution job end to end: plan, pipeline, wait, reconcile counts, manifest.

The pipeline writes into a staging directory inside the output (`.staging-<id>/`); when it has
finished, the previous run's files are deleted (its manifest first), the staged files are moved
into place, and the manifest (`manifest.json`) is written last: a manifest with status
'complete' marks a complete run, and a run killed at any point leaves either the previous result
or files without such a manifest. It holds the counts (read = attributed + dead-lettered), input and output files, settings,
versions, timings and every Beam metric of the run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from audit.summary_output import SUMMARY_FILE, SUMMARY_FILES
from pipeline.build import build_pipeline
from pipeline.config import RunConfig
from pipeline.errors import RunFailedError
from pipeline.plan import ATTRIBUTIONS_PREFIX, DEAD_LETTER_PREFIX, MANIFEST_NAME, RunPlan, resolve_plan
from pipeline.version import __version__
from transforms.count import COUNTS_FILE, read_counts
from transforms.read import METRICS_NAMESPACE

__all__ = ["run_attribution", "make_pipeline", "RunFailedError"]

_LOGGER = logging.getLogger(__name__)
STAGING_PREFIX = ".staging-"
_LOCAL_RUNNERS = (None, "DirectRunner", "direct", "FnApiRunner")


def make_pipeline(options: PipelineOptions) -> beam.Pipeline:
    """A Beam pipeline for `options`. DirectRunner (the default) runs on Beam's in-process
    FnApiRunner directly: DirectRunner would first try PrismRunner, which downloads a binary."""
    runner_name = options.view_as(StandardOptions).runner
    if runner_name in _LOCAL_RUNNERS:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def _existing_outputs(output: str) -> list[str]:
    names = (f"{ATTRIBUTIONS_PREFIX}*", f"{DEAD_LETTER_PREFIX}*", MANIFEST_NAME, COUNTS_FILE, *SUMMARY_FILES)
    patterns = [FileSystems.join(output, name) for name in names]
    return [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]


def _complete_manifest(output: str) -> bool:
    path = FileSystems.join(output, MANIFEST_NAME)
    if not FileSystems.exists(path):
        return False
    try:
        with FileSystems.open(path, compression_type="uncompressed") as handle:
            return json.loads(handle.read()).get("status") == "complete"
    except ValueError:  # unreadable: a manifest cut short is not a completion marker
        return False


def _check_output(config: RunConfig) -> None:
    """Refuses to replace a complete run unless config.overwrite. Files of a run that did not
    complete (no manifest saying 'complete') are not a result anyone may rely on: they are
    replaced when this run commits."""
    existing = _existing_outputs(config.output)
    if existing and _complete_manifest(config.output) and not config.overwrite:
        raise ValueError(
            f"output {config.output!r} already holds a complete run ({len(existing)} files, e.g. "
            f"{existing[0]!r}); choose a new --output or pass --overwrite to replace it."
        )


def _staging_dirs(output: str) -> list[str]:
    """Staging directories left in `output` by runs that were killed before committing."""
    pattern = FileSystems.join(output, f"{STAGING_PREFIX}*")
    return sorted({_child_of(output, m.path) for m in FileSystems.match([pattern + "/**"])[0].metadata_list})


def _child_of(parent: str, path: str) -> str:
    relative = path[len(parent.rstrip("/")) + 1 :]
    return FileSystems.join(parent, relative.split("/", 1)[0])


def _commit(plan: RunPlan) -> None:
    """Moves the staged files into the output directory, replacing the previous run's files.

    The old manifest is deleted first and the new one is written after this returns, so at no
    moment does a manifest vouch for files that are not its own; a run killed before this point
    leaves the previous result untouched."""
    output, staging = plan.config.output, plan.staging_dir
    staged = _existing_outputs(staging)
    existing = _existing_outputs(output)
    manifests = [path for path in existing if path.endswith(MANIFEST_NAME)]
    if manifests:
        FileSystems.delete(manifests)
    others = [path for path in existing if path not in manifests]
    if others:
        FileSystems.delete(others)
    if staged:
        FileSystems.rename(staged, [FileSystems.join(output, path.rsplit("/", 1)[-1]) for path in staged])
    FileSystems.delete([staging])


def _metrics(result) -> dict[str, Any]:
    """Every counter and distribution of the run, by 'namespace/name'."""
    query = result.metrics().query()
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


def _parquet_files(output: str, prefix: str) -> list[dict[str, Any]]:
    pattern = FileSystems.join(output, f"{prefix}-*.parquet")
    files = []
    for metadata in sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path):
        with FileSystems.open(metadata.path, compression_type="uncompressed") as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        files.append({"path": metadata.path, "rows": rows, "bytes": metadata.size_in_bytes})
    return files


def _versions() -> dict[str, str]:
    import keras
    import numpy
    import pyarrow
    import tensorflow

    return {
        "attribution_pipeline": __version__,
        "apache_beam": beam.__version__,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }


def _summary_files(plan: RunPlan) -> tuple[list[dict[str, Any]], Optional[dict]]:
    """The summary files in the output directory and summary.json's content (None when off/missing)."""
    if plan.settings.summary is None:
        return [], None
    files, document = [], None
    for name in SUMMARY_FILES:
        matched = FileSystems.match([FileSystems.join(plan.config.output, name)])[0].metadata_list
        files += [{"path": m.path, "bytes": m.size_in_bytes} for m in matched]
        if name == SUMMARY_FILE and matched:
            with FileSystems.open(matched[0].path, compression_type="uncompressed") as handle:
                document = json.loads(handle.read())
    return files, document


def _data_counts(output: str) -> Optional[dict[str, int]]:
    path = FileSystems.join(output, COUNTS_FILE)
    return read_counts(path) if FileSystems.exists(path) else None


def _counts(
    plan: RunPlan, metrics: dict, data_counts: Optional[dict], outputs: list, dead_files: list, summary: Optional[dict]
) -> tuple[dict[str, int], list[str]]:
    """The run's counts, and what is wrong with them (empty when the run can be trusted).

    Record counts come from the data (transforms.count), not from metrics, which some runners
    count more than once for retried bundles; the metrics stay in the manifest beside them."""

    def metric(name: str) -> int:
        return int(metrics.get(f"{METRICS_NAMESPACE}/{name}", 0))

    if data_counts is None:
        return {}, [f"{COUNTS_FILE} was not written"]
    counts = {
        "records_read": data_counts["records_read"],
        "records_attributed": data_counts["records_attributed"],
        "records_dead_lettered": data_counts["records_dead_lettered"],
        "rows_written": sum(f["rows"] for f in outputs),
        "rows_not_finite": data_counts["rows_not_finite"],
        "dead_letter_rows_written": sum(f["rows"] for f in dead_files),
        "rows_per_record": plan.settings.target.rows_per_example,
    }
    if plan.config.check_duplicate_keys:
        counts["duplicate_keys"] = metric("duplicate_keys")
        counts["records_with_duplicate_keys"] = metric("records_with_duplicate_keys")
    problems = []
    if counts["records_read"] != counts["records_attributed"] + counts["records_dead_lettered"]:
        problems.append("records_read != records_attributed + records_dead_lettered")
    if counts["rows_written"] != counts["records_attributed"] * counts["rows_per_record"]:
        problems.append("rows_written != records_attributed x rows_per_record")
    if counts["dead_letter_rows_written"] != counts["records_dead_lettered"]:
        problems.append("dead_letter_rows_written != records_dead_lettered")
    if plan.settings.summary is not None:
        if summary is None:
            problems.append("summary.json was not written")
        else:
            counts["summary_rows"] = summary["rows"]
            if summary["rows"] != counts["rows_written"]:
                problems.append("summary rows != rows_written")
            if summary["dead_letters"] != counts["records_dead_lettered"]:
                problems.append("summary dead_letters != records_dead_lettered")
    counts["reconciled"] = not problems
    differing = [name for name in ("records_read", "records_attributed", "records_dead_lettered") if metric(name) != counts[name]]
    if differing:  # reported, not a failure: the data counts are the ones that hold
        counts["metrics_differ_from_data"] = {name: metric(name) for name in differing}
    limit = plan.config.max_dead_letter_fraction
    if counts["records_read"] and counts["records_dead_lettered"] > limit * counts["records_read"]:
        problems.append(
            f"{counts['records_dead_lettered']} of {counts['records_read']} records were dead-lettered, more than "
            f"max_dead_letter_fraction {limit}; see the dead_letter-*.parquet files for the reasons, fix the "
            f"input or raise --max-dead-letter-fraction"
        )
    return counts, problems


def run_attribution(config: RunConfig, pipeline_args: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Runs the job, waits for it, writes and returns the manifest.

    `pipeline_args` are Beam pipeline options (--runner, --project, ...). Raises ValueError for a
    misconfigured run before the pipeline starts, ReconciliationError if counts do not add up.
    """
    started = time.time()
    plan = resolve_plan(config)
    _check_output(config)
    stale = _staging_dirs(config.output)
    if stale:
        _LOGGER.warning("removing %d staging directories of runs that did not finish: %s", len(stale), stale)
        FileSystems.delete(stale)
    staging = FileSystems.join(config.output, f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}")
    plan = dataclasses.replace(plan, staging_dir=staging)
    planned = time.time()
    options = PipelineOptions(list(pipeline_args or []))
    pipeline = make_pipeline(options)
    build_pipeline(pipeline, plan)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except ValueError as error:
        # Past the launcher's checks a ValueError is a fault, not a user error: keep its traceback.
        raise RuntimeError(f"the pipeline failed: {error}") from error
    finished = time.time()

    metrics = _metrics(result)
    _commit(plan)
    outputs = _parquet_files(config.output, ATTRIBUTIONS_PREFIX)
    dead_files = _parquet_files(config.output, DEAD_LETTER_PREFIX)
    summary_files, summary = _summary_files(plan)
    counts, problems = _counts(plan, metrics, _data_counts(config.output), outputs, dead_files, summary)
    manifest = {
        "status": "failed" if problems else "complete",
        "failure": "; ".join(problems) or None,
        "counts": counts,
        "input": {"patterns": list(config.input), "format": plan.input_format, "files": list(plan.input_files)},
        "output": {
            "attributions": outputs, "dead_letters": dead_files, "summary": summary_files,
            "record_counts": FileSystems.join(config.output, COUNTS_FILE),
        },
        "model": {"path": config.model, "sha256": plan.model_fingerprint},
        "settings": config.to_dict(),
        "pipeline_options": list(pipeline_args or []),
        "versions": _versions(),
        "timings": {
            "started_utc": datetime.fromtimestamp(started, timezone.utc).isoformat(),
            "finished_utc": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
            "plan_seconds": round(planned - started, 3),
            "pipeline_seconds": round(finished - planned, 3),
            "total_seconds": round(finished - started, 3),
        },
        "metrics": metrics,
    }
    with FileSystems.create(FileSystems.join(config.output, MANIFEST_NAME)) as handle:
        handle.write(json.dumps(manifest, indent=2, sort_keys=False).encode())
    if problems:
        raise RunFailedError(f"the run finished but failed its checks: {manifest['failure']}. Counts: {counts}")
    return manifest
