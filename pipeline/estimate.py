"""`attribution-pipeline run ... --dry-run`: what a job will take and cost, from a few timed batches,
before it runs. Nothing is written and the output folder is not touched.

The launcher's checks run as for a real run (settings, model, input columns); then the engine the
workers would build attributes a sample of the input (rows spread over the files, as the baseline
and the quality audit sample them) twice the same way after a warm-up batch, and the faster pass
gives this machine's rows/s with the run's compute threads. Input rows are counted from Parquet
footers; for TFRecord files up to MAX_COUNTED_FILES are walked record by record and the rest
extrapolated by their size.

The worker estimate assumes throughput proportional to vCPUs (each vCPU running one call: what
local runners do with a compute thread per core, and Dataflow with one SDK process per core;
bench/runners.py measures how close to linear this is on 2 cores). Worker price: an
n1-standard-4 (4 vCPU, 15 GB) at Dataflow's batch list prices for us-central1, $0.056 per vCPU-hour
and $0.003557 per GB-hour (cloud.google.com/dataflow/pricing, read 2026-12); pass
--vcpu-hour-price/--gb-hour-price for another region, machine or discount. Start-up (worker VMs,
model load, first trace) and the summaries' small share are not in the per-row figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["estimate_run", "format_estimate", "VCPU_HOUR_PRICE", "GB_HOUR_PRICE", "WORKER_VCPUS", "WORKER_MEMORY_GB"]

VCPU_HOUR_PRICE = 0.056  # USD, Dataflow batch, us-central1
GB_HOUR_PRICE = 0.003557  # USD per GB-hour of worker memory
WORKER_VCPUS = 4  # n1-standard-4
WORKER_MEMORY_GB = 15.0
# Records timed: from FIRST_TIMED_ROWS, four times more until a pass takes LONG_ENOUGH_SECONDS or
# holds the run's batch_size (at most MAX_SAMPLE_ROWS; fewer when the input holds fewer): per-batch
# costs are then shared as in the run, and slow methods are not timed for minutes.
FIRST_TIMED_ROWS = 256
LONG_ENOUGH_SECONDS = 1.0
MAX_SAMPLE_ROWS = 4096
WARM_UP_ROWS = 64
MAX_COUNTED_FILES = 8


@dataclass(frozen=True)
class Prices:
    vcpu_hour: float = VCPU_HOUR_PRICE
    gb_hour: float = GB_HOUR_PRICE

    def worker_hour(self) -> float:
        return WORKER_VCPUS * self.vcpu_hour + WORKER_MEMORY_GB * self.gb_hour


def estimate_run(config, pipeline_args: Sequence[str] = (), prices: Prices = Prices()) -> dict[str, Any]:
    """The dry run's figures (a JSON-ready dict); see the module docstring."""
    from attributions.concurrency import available_cores, run_ops_single_threaded
    from pipeline.baseline_sample import sample_records
    from pipeline.plan import resolve_plan
    from pipeline.run import _compute_threads
    from transforms.attribute import AttributionEngine

    threads = _compute_threads(config, list(pipeline_args))
    if threads > 1:
        run_ops_single_threaded()
    plan = resolve_plan(config, threads)
    rows, counted = count_rows(plan.input_files, plan.input_format)
    sample = min(config.batch_size, MAX_SAMPLE_ROWS)
    batch, _ = sample_records(plan.input_files, plan.settings.schema, sample + WARM_UP_ROWS)
    if batch is None or batch.num_records == 0:
        raise ValueError(f"no valid record was found in the sampled files of {list(config.input)}: nothing to time; check the input.")
    engine = AttributionEngine(plan.settings)
    warm = min(WARM_UP_ROWS, max(1, batch.num_records // 4))
    engine.attribute(_rows(batch, 0, warm))  # traces the model's functions for these call sizes
    available = batch.num_records - warm
    size = min(FIRST_TIMED_ROWS, available)
    seconds = _timed(engine, _rows(batch, warm, warm + size))
    while seconds < LONG_ENOUGH_SECONDS and size < available:  # a batch as large as the run's, or one that takes a while
        size = min(available, size * 4)
        seconds = _timed(engine, _rows(batch, warm, warm + size))
    timed = _rows(batch, warm, warm + size)
    seconds = min(seconds, _timed(engine, timed))  # the better of two passes: the machine may be shared
    target = config.target_spec()
    per_record_rows = target.k if target.mode == "top_k" else 1
    rate = timed.num_records / seconds  # records/s with `threads` calls side by side
    per_vcpu = rate / threads
    worker_rate = per_vcpu * WORKER_VCPUS
    hours_per_million = 1e6 / worker_rate / 3600.0
    return {
        "method": config.method, "model": config.model, "model_sha256": plan.model_fingerprint,
        "input_files": len(plan.input_files), "input_format": plan.input_format,
        "records": rows, "records_counted": counted,
        "timed_records": timed.num_records, "output_rows_per_record": per_record_rows,
        "threads": threads, "cores": available_cores(),
        # XLA as the run would use it: under 'auto' the warm-up batch made the choice (attributions.xla_check).
        "xla": engine.xla_decision.to_dict() if engine.xla_decision is not None else None,
        "records_per_second": rate, "records_per_second_per_vcpu": per_vcpu,
        "seconds_here": None if rows is None else rows / rate,
        "worker": {"machine": f"n1-standard-{WORKER_VCPUS}", "vcpus": WORKER_VCPUS, "memory_gb": WORKER_MEMORY_GB,
                   "price_per_hour": prices.worker_hour(), "vcpu_hour_price": prices.vcpu_hour, "gb_hour_price": prices.gb_hour,
                   "records_per_second": worker_rate, "worker_hours_per_million": hours_per_million,
                   "cost_per_million": hours_per_million * prices.worker_hour(),
                   "worker_hours": None if rows is None else rows / 1e6 * hours_per_million,
                   "cost": None if rows is None else rows / 1e6 * hours_per_million * prices.worker_hour()},
    }


def _timed(engine, batch) -> float:
    started = time.perf_counter()
    engine.attribute(batch)
    return time.perf_counter() - started


def _rows(batch, start: int, stop: int):
    """Records start..stop of a DecodedBatch."""
    import dataclasses

    index = np.arange(start, stop)
    return dataclasses.replace(batch, keys=batch.keys.take(index), inputs=tuple(x[start:stop] for x in batch.inputs),
                               labels=None if batch.labels is None else batch.labels[start:stop],
                               passthrough={k: v.take(index) for k, v in batch.passthrough.items()})


def count_rows(files: Sequence[str], input_format: str) -> tuple[Optional[int], bool]:
    """(records in the files, whether every file was counted): Parquet from its footers, TFRecord
    by walking up to MAX_COUNTED_FILES files' length headers and extrapolating the rest by size."""
    from apache_beam.io.filesystems import FileSystems

    if input_format == "parquet":
        import pyarrow.parquet as pq

        total = 0
        for path in files:
            with FileSystems.open(path) as handle:
                total += pq.ParquetFile(handle).metadata.num_rows
        return total, True
    sizes = {m.path: m.size_in_bytes for result in FileSystems.match(list(files)) for m in result.metadata_list}
    walked = list(files)[:MAX_COUNTED_FILES]
    counted = sum(_tfrecord_records(path) for path in walked)
    walked_bytes = sum(sizes.get(p, 0) for p in walked)
    rest_bytes = sum(sizes.get(p, 0) for p in files[MAX_COUNTED_FILES:])
    if rest_bytes == 0:
        return counted, True
    return int(round(counted + rest_bytes * counted / max(walked_bytes, 1))), False


def _tfrecord_records(path: str) -> int:
    """Records in one TFRecord file (its compression from the name, as the reader decides)."""
    from apache_beam.io.filesystems import FileSystems

    from transforms.read import tfrecord_compression
    from transforms.tfrecord_lengths import count_records

    with FileSystems.open(path, compression_type="uncompressed") as raw:
        return count_records(raw, tfrecord_compression(path))


def format_estimate(figures: dict[str, Any]) -> str:
    """The dry run's answer as the terminal shows it."""
    worker = figures["worker"]
    records = figures["records"]
    counted = "" if figures["records_counted"] else " (TFRecord: some files extrapolated by size)"
    lines = [
        f"dry run: nothing was written. {figures['method']} on {figures['model']}",
        f"input: {records:,} records{counted} in {figures['input_files']} {figures['input_format']} file(s)" if records is not None
        else f"input: {figures['input_files']} {figures['input_format']} file(s)",
        f"timed: {figures['timed_records']:,} records after a warm-up: {figures['records_per_second']:,.0f} records/s here "
        f"({figures['threads']} compute thread(s) on {figures['cores']} core(s)) = {figures['records_per_second_per_vcpu']:,.0f} per vCPU",
    ]
    if figures.get("xla"):
        lines.append(f"xla: {'used' if figures['xla']['used'] else 'not used'}: {figures['xla']['reason']}")
    if figures["seconds_here"] is not None:
        lines.append(f"here: about {figures['seconds_here']:,.3g} s of attribution for the whole input, plus start-up (model load, first trace)")
    lines.append(
        f"on {worker['machine']} workers ({worker['vcpus']} vCPU, {worker['memory_gb']:g} GB, ${worker['price_per_hour']:.3f}/h): "
        f"{worker['records_per_second']:,.0f} records/s each, {worker['worker_hours_per_million']:.3g} worker-hours and "
        f"${worker['cost_per_million']:.3g} per million records"
        + (f"; this input: {worker['worker_hours']:.3g} worker-hours, ${worker['cost']:.3g}" if worker["cost"] is not None else ""))
    lines.append("prices: Dataflow batch list prices, us-central1 (--vcpu-hour-price, --gb-hour-price to change); "
                 "assumes throughput proportional to vCPUs; start-up not included")
    return "\n".join(lines)
