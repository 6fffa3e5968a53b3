"""Finishing a run: commit its staged files, reconcile its counts, write `manifest.json` last.

`finalize_run` is what `run` does once its pipeline has finished, and what
`attribution-pipeline finalize OUTPUT` does for a job that was submitted without waiting (a
remote runner): everything it needs is in the staging directory (launch.json, the data counts,
the completion marker), so it works without the runner's metrics.

The manifest holds the counts (read = attributed + dead-lettered, counted from the data; rows
found in the written files), input and output files, model fingerprint, settings, pipeline
options, versions, timings and the runner's metrics when there are any.
"""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from attributions.methods import COMPLETENESS_METHODS, XLA_METHODS
from attributions.result import COMPLETENESS_MEASURE
from attributions.xla_check import XLA_DIFFERENCE_METRIC, XLA_METRICS, describe_engines
from audit.runs import MANIFEST_NAME
from audit.summary_output import SUMMARY_FILE, SUMMARY_FILES
from pipeline.config import RunConfig
from pipeline.deferred_signals import signals_deferred
from pipeline.errors import RunFailedError
from pipeline.output_dir import (
    ATTRIBUTIONS_PREFIX, DEAD_LETTER_PREFIX, LAUNCH_FILE, commit, done_marker, launched_staging_dirs, read_json, read_launch, write_json,
)
from pipeline.version import __version__
from transforms.count import COUNTS_FILE, read_counts
from transforms.read import METRICS_NAMESPACE

__all__ = ["finalize_run"]


def _parquet_files(output: str, prefix: str) -> list[dict[str, Any]]:
    pattern = FileSystems.join(output, f"{prefix}-*.parquet")
    files = []
    for metadata in sorted(FileSystems.match([pattern])[0].metadata_list, key=lambda m: m.path):
        with FileSystems.open(metadata.path, compression_type="uncompressed") as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        files.append({"path": metadata.path, "rows": rows, "bytes": metadata.size_in_bytes})
    return files


def _summary_files(config: RunConfig) -> tuple[list[dict[str, Any]], Optional[dict]]:
    """The summary files in the output directory and summary.json's content (None when off/missing)."""
    if not config.summaries:
        return [], None
    files, document = [], None
    for name in SUMMARY_FILES:
        matched = FileSystems.match([FileSystems.join(config.output, name)])[0].metadata_list
        files += [{"path": m.path, "bytes": m.size_in_bytes} for m in matched]
        if name == SUMMARY_FILE and matched:
            document = read_json(matched[0].path)
    return files, document


def _versions() -> dict[str, str]:
    import apache_beam
    import keras
    import numpy
    import pyarrow
    import tensorflow

    return {
        "attribution_pipeline": __version__,
        "apache_beam": apache_beam.__version__,
        "tensorflow": tensorflow.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "pyarrow": pyarrow.__version__,
        "python": platform.python_version(),
    }


def _counts(
    config: RunConfig, metrics: dict, data_counts: Optional[dict], outputs: list, dead_files: list, summary: Optional[dict]
) -> tuple[dict[str, Any], list[str]]:
    """The run's counts, and what is wrong with them (empty when the run can be trusted).

    Record counts come from the data (transforms.count), not from metrics, which some runners
    count more than once for retried bundles; metrics that differ are shown beside them."""

    def metric(name: str) -> int:
        return int(metrics.get(f"{METRICS_NAMESPACE}/{name}", 0))

    if data_counts is None:
        return {}, [f"{COUNTS_FILE} was not written"]
    counts: dict[str, Any] = {
        "records_read": data_counts["records_read"],
        "records_attributed": data_counts["records_attributed"],
        "records_dead_lettered": data_counts["records_dead_lettered"],
        "rows_written": sum(f["rows"] for f in outputs),
        "rows_not_finite": data_counts["rows_not_finite"],
        "dead_letter_rows_written": sum(f["rows"] for f in dead_files),
        "rows_per_record": config.target_spec().rows_per_example,
    }
    if config.check_duplicate_keys:
        counts["duplicate_keys"] = data_counts.get("duplicate_keys", 0)
        counts["records_with_duplicate_keys"] = data_counts.get("records_with_duplicate_keys", 0)
    problems = []
    if counts["records_read"] != counts["records_attributed"] + counts["records_dead_lettered"]:
        problems.append("records_read != records_attributed + records_dead_lettered")
    if counts["rows_written"] != counts["records_attributed"] * counts["rows_per_record"]:
        problems.append("rows_written != records_attributed x rows_per_record")
    if counts["dead_letter_rows_written"] != counts["records_dead_lettered"]:
        problems.append("dead_letter_rows_written != records_dead_lettered")
    if config.summaries:
        if summary is None:
            problems.append("summary.json was not written")
        else:
            counts["summary_rows"] = summary["rows"]
            if summary["rows"] != counts["rows_written"]:
                problems.append("summary rows != rows_written")
            if summary["dead_letters"] != counts["records_dead_lettered"]:
                problems.append("summary dead_letters != records_dead_lettered")
    counts["reconciled"] = not problems
    if metrics:
        names = ("records_read", "records_attributed", "records_dead_lettered")
        differing = {name: metric(name) for name in names if metric(name) != counts[name]}
        if differing:  # reported, not a failure: the data counts are the ones that hold
            counts["metrics_differ_from_data"] = differing
    limit = config.max_dead_letter_fraction
    if counts["records_read"] and counts["records_dead_lettered"] > limit * counts["records_read"]:
        problems.append(
            f"{counts['records_dead_lettered']} of {counts['records_read']} records were dead-lettered, more than "
            f"max_dead_letter_fraction {limit}; see the dead_letter-*.parquet files for the reasons, fix the "
            f"input or raise --max-dead-letter-fraction"
        )
    return counts, problems


def _completeness(config: RunConfig, summary: Optional[dict]) -> dict[str, Any]:
    """How completeness was measured and judged, with the run's overall figures when summarized."""
    overall = next((g for g in (summary or {}).get("groups", []) if g["kind"] == "overall"), None)
    figures = (overall or {}).get("completeness") or {}
    return {
        "measure": COMPLETENESS_MEASURE,
        "column": "completeness_error",
        "threshold": config.completeness_threshold,
        "target": config.completeness_target,
        "max_steps": config.setting("max_steps") if config.completeness_target is not None else None,
        "rows_over_threshold": figures.get("rows_over_threshold"),
        "share_over_threshold": figures.get("share_over_threshold"),
        "steps_used": figures.get("steps_used"),
    }


def finalize_run(
    output: str, staging: Optional[str] = None, metrics: Optional[dict] = None, before_commit: Optional[Callable[[], None]] = None
) -> dict[str, Any]:
    """Commits a finished run's staged files and writes its manifest; returns the manifest.

    staging: the run's staging directory (default: the only launched one in `output`).
    before_commit: called just before the first change to `output` (the lock's check that it is
    still held); it stops the commit by raising. SIGINT/SIGTERM/SIGHUP wait until the manifest is
    written (pipeline.deferred_signals). Raises ValueError when there is nothing to finalize or the
    pipeline has not finished writing, RunFailedError when the counts do not reconcile or too many
    records were dead-lettered.
    """
    if staging is None:
        pending = launched_staging_dirs(output)
        if not pending:
            raise ValueError(f"{output!r} holds no launched run to finalize (no .staging-*/{LAUNCH_FILE}).")
        if len(pending) > 1:
            raise ValueError(f"{output!r} holds {len(pending)} launched runs ({pending}); pass the one to finalize.")
        staging = pending[0]
    launch = read_launch(staging)
    if "settings" not in launch:
        raise ValueError(
            f"{FileSystems.join(staging, LAUNCH_FILE)} is missing or not a launch record of this program (not valid JSON, "
            f"or cut short); that run cannot be finalized. Delete the folder {staging} and run the job again."
        )
    done = done_marker(staging)
    if done is None:
        raise ValueError(
            f"the job launched into {staging!r} (job {launch.get('job_id')!r}) has not finished writing: its last step "
            f"writes pipeline_done.json. Wait for the job to finish (or check why it failed) and finalize again."
        )
    config = RunConfig.from_mapping(launch["settings"])
    with signals_deferred():
        if before_commit is not None:
            before_commit()
        commit(output, staging)
        return _write_manifest(output, config, launch, done, metrics)


def _xla(config: RunConfig, metrics: dict) -> dict[str, Any]:
    """What ran on XLA (attributions.xla_check), from the worker engines' metrics (one engine per
    worker process; a runner that retries bundles on new workers counts those too): the setting,
    the bound, the counts, and one line saying why."""
    counts = {name: int(metrics.get(f"{METRICS_NAMESPACE}/{name}", 0)) for name in XLA_METRICS.values()}
    difference = metrics.get(f"{METRICS_NAMESPACE}/{XLA_DIFFERENCE_METRIC}")
    largest = difference["max"] / 1e9 if isinstance(difference, dict) and difference.get("count") else None
    reason = describe_engines(config.xla, config.method in XLA_METHODS, config.xla_bound(), counts["engines_on_xla"],
                              counts["engines_xla_failed"], counts["engines_xla_disagreed"], largest, counts["engines_xla_slower"])
    return {"mode": config.xla, "bound": config.xla_bound(), **counts, "largest_difference": largest, "reason": reason}


def _write_manifest(output: str, config: RunConfig, launch: dict, done: dict, metrics: Optional[dict]) -> dict[str, Any]:
    finished = time.time()
    outputs = _parquet_files(output, ATTRIBUTIONS_PREFIX)
    dead_files = _parquet_files(output, DEAD_LETTER_PREFIX)
    summary_files, summary = _summary_files(config)
    counts_path = FileSystems.join(output, COUNTS_FILE)
    data_counts = read_counts(counts_path) if FileSystems.exists(counts_path) else None
    counts, problems = _counts(config, metrics or {}, data_counts, outputs, dead_files, summary)
    manifest = {
        "status": "failed" if problems else "complete",
        "failure": "; ".join(problems) or None,
        "counts": counts,
        "input": launch["input"],
        "output": {"attributions": outputs, "dead_letters": dead_files, "summary": summary_files, "record_counts": counts_path},
        "model": launch["model"],
        **({"baseline": launch["baseline"]} if launch.get("baseline") else {}),
        **({"quality": launch["quality"]} if launch.get("quality") is not None else {}),
        "settings": launch["settings"],
        "pipeline_options": launch["pipeline_options"],
        "job": {k: launch.get(k) for k in ("runner", "job_id", "job_url", "compute_threads")},
        "xla": _xla(config, metrics or {}),
        "versions": _versions(),
        "timings": {
            "started_utc": datetime.fromtimestamp(launch["started"], timezone.utc).isoformat(),
            "finished_utc": datetime.fromtimestamp(finished, timezone.utc).isoformat(),
            "plan_seconds": round(launch["planned"] - launch["started"], 3),
            "pipeline_seconds": round(done["finished"] - launch["planned"], 3),
            "total_seconds": round(finished - launch["started"], 3),
        },
        "metrics": metrics or {},
    }
    if config.method in COMPLETENESS_METHODS:
        manifest["completeness"] = _completeness(config, summary)
    write_json(FileSystems.join(output, MANIFEST_NAME), manifest)
    if problems:
        raise RunFailedError(f"the run finished but failed its checks: {manifest['failure']}. Counts: {counts}")
    return manifest
