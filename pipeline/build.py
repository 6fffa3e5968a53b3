"""Pipeline construction: `build_pipeline(p, config)` adds the attribution steps to a Beam pipeline.

    ReadRecords -> DecodeRecords -> Attribute -> WriteAttributions
                         |                 \\-> per-batch summaries -> WriteSummary (merged)
                         \\-> dead letters -> WriteDeadLetters (and counted in the summary)
    (read, attributed, dead-lettered) -> CountRecords;  all writes done -> MarkDone
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Union

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.parquetio import WriteToParquet

from pipeline.config import RunConfig
from pipeline.output_dir import ATTRIBUTIONS_PREFIX, DEAD_LETTER_PREFIX, DONE_MARKER, write_json
from pipeline.plan import RunPlan, resolve_plan
from transforms.attribute import AttributeBatches
from transforms.count import CountRecords
from transforms.decode import CountDuplicateKeys, DecodeBatches
from transforms.read import ReadRecords
from transforms.records import DEAD_LETTER_SCHEMA
from transforms.storage import use_options
from transforms.summarize import WriteSummary
from transforms.write import WriteAttributionTables

__all__ = ["build_pipeline", "BuiltPipeline"]


@dataclass(frozen=True)
class BuiltPipeline:
    """What build_pipeline added: the plan and the PCollections of output tables and dead letters."""

    plan: RunPlan
    attributions: beam.PCollection  # pyarrow.Table per batch
    dead_letters: beam.PCollection  # dict rows (key, source, record, error)
    summaries: beam.PCollection  # audit.summary.RunSummary per bundle (empty when summaries are off)


def _mark_done(_, path: str, filesystem_options: dict, *written: list) -> None:
    use_options(filesystem_options)
    write_json(path, {"finished": time.time(), "files_written": sum(len(files) for files in written)})


def build_pipeline(p: beam.Pipeline, config: Union[RunConfig, RunPlan], write: bool = True) -> BuiltPipeline:
    """Adds the attribution steps to `p`. A RunConfig is resolved (and validated) here first.

    With write=False nothing is written (tests can assert on the returned PCollections).
    """
    plan = config if isinstance(config, RunPlan) else resolve_plan(config)
    settings = plan.settings
    raw = p | "ReadRecords" >> ReadRecords(plan.input_files, plan.schema, plan.config.batch_size,
                                           filesystem_options=settings.filesystem_options, pre_buffer=plan.config.parquet_pre_buffer)
    decoded = raw | "DecodeRecords" >> beam.ParDo(DecodeBatches(plan.schema)).with_outputs(
        DecodeBatches.DEAD_LETTER_TAG, main="records"
    )
    attributed = decoded.records | "Attribute" >> beam.ParDo(AttributeBatches(settings)).with_outputs(
        AttributeBatches.SUMMARY_TAG, main="tables"
    )
    tables = attributed.tables
    dead_letters = decoded[DecodeBatches.DEAD_LETTER_TAG]
    duplicates = (
        [decoded.records | "CountDuplicateKeys" >> CountDuplicateKeys()] if plan.config.check_duplicate_keys else []
    )
    if write:
        written = [
            tables | "WriteAttributions" >> WriteAttributionTables(plan.output_path(ATTRIBUTIONS_PREFIX), settings.output_schema),
            dead_letters | "WriteDeadLetters" >> WriteToParquet(
                plan.output_path(DEAD_LETTER_PREFIX), schema=DEAD_LETTER_SCHEMA, file_name_suffix=".parquet"
            ),
            (raw, decoded.records, dead_letters, tables, *duplicates) | "CountRecords" >> CountRecords(plan.write_dir),
        ]
        if settings.summary is not None:
            written.append((attributed[AttributeBatches.SUMMARY_TAG], dead_letters) | "WriteSummary" >> WriteSummary(
                settings.summary, plan.write_dir, plan.config.to_dict(), plan.quality
            ))
        # The last step: its side inputs are complete only once every write above has finished.
        _ = (
            p
            | "MarkDone/Start" >> beam.Create([None])
            | "MarkDone/Write" >> beam.Map(_mark_done, FileSystems.join(plan.write_dir, DONE_MARKER), settings.filesystem_options,
                                           *[beam.pvalue.AsList(files) for files in written])
        )
    return BuiltPipeline(plan, tables, dead_letters, attributed[AttributeBatches.SUMMARY_TAG])
