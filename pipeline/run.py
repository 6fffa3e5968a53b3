"""Running an attribution job end to end: plan, pipeline, wait, reconcile counts, manifest.

The manifest (`manifest.json` beside the outputs) is written last: its presence marks a complete
run. It holds the counts (read = attributed + dead-lettered), input and output files, settings,
versions, timings and every Beam metric of the run.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from datetime import datetime, timezone
from typing import Any, Optional, Sequence

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline.build import build_pipeline
from pipeline.config import RunConfig
from pipeline.errors import RunFailedError
from pipeline.plan import ATTRIBUTIONS_PREFIX, DEAD_LETTER_PREFIX, MANIFEST_NAME, RunPlan, resolve_plan
from pipeline.version import __version__
from audit.summary_output import SUMMARY_FILE, SUMMARY_FILES
from transforms.read import METRICS_NAMESPACE

__all__ = ["run_attribution", "make_pipeline", "RunFailedError"]

_LOGGER = logging.getLogger(__name__)
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
    names = (f"{ATTRIBUTIONS_PREFIX}*", f"{DEAD_LETTER_PREFIX}*", MANIFEST_NAME, *SUMMARY_FILES)
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


def _prepare_output(config: RunConfig) -> None:
    """Refuses to replace a complete run unless config.overwrite; clears what an incomplete run
    left (files without a manifest saying 'complete' are not a result anyone may rely on)."""
    existing = _existing_outputs(config.output)
    if not existing:
        return
    if _complete_manifest(config.output) and not config.overwrite:
        raise ValueError(
            f"output {config.output!r} already holds a complete run ({len(existing)} files, e.g. "
            f"{existing[0]!r}); choose a new --output or pass --overwrite to replace it."
        )
    if not config.overwrite:
        _LOGGER.warning("output %s holds %d files of an incomplete run; replacing them", config.output, len(existing))
    # The manifest goes first: a run killed while deleting never leaves a manifest that vouches
    # for files that are gone.
    manifests = [path for path in existing if path.endswith(MANIFEST_NAME)]
    if manifests:
        FileSystems.delete(manifests)
    others = [path for path in existing if path not in manifests]
    if others:
        FileSystems.delete(others)


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
    """The summary files written by the run and summary.json's content (None when off/missing)."""
    if plan.settings.summary is None:
        return [], None
    files, document = [], None
    for name in SUMMARY_FILES:
        matched = FileSystems.match([plan.output_path(name)])[0].metadata_list
        files += [{"path": m.path, "bytes": m.size_in_bytes} for m in matched]
        if name == SUMMARY_FILE and matched:
            with FileSystems.open(matched[0].path, compression_type="uncompressed") as handle:
                document = json.loads(handle.read())
    return files, document


def _counts(
    plan: RunPlan, metrics: dict, outputs: list, dead_files: list, summary: Optional[dict]
) -> tuple[dict[str, int], list[str]]:
    """The run's counts, and what is wrong with them (empty when the run can be trusted)."""

    def metric(name: str) -> int:
        return int(metrics.get(f"{METRICS_NAMESPACE}/{name}", 0))

    counts = {
        "records_read": metric("records_read"),
        "records_attributed": metric("records_attributed"),
        "records_dead_lettered": metric("records_dead_lettered"),
        "rows_written": sum(f["rows"] for f in outputs),
        "rows_not_finite": metric("rows_not_finite"),
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
    _prepare_output(config)
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
    outputs = _parquet_files(config.output, ATTRIBUTIONS_PREFIX)
    dead_files = _parquet_files(config.output, DEAD_LETTER_PREFIX)
    summary_files, summary = _summary_files(plan)
    counts, problems = _counts(plan, metrics, outputs, dead_files, summary)
    manifest = {
        "status": "failed" if problems else "complete",
        "failure": "; ".join(problems) or None,
        "counts": counts,
        "input": {"patterns": list(config.input), "format": plan.input_format, "files": list(plan.input_files)},
        "output": {"attributions": outputs, "dead_letters": dead_files, "summary": summary_files},
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
