"""Pipeline construction: `build_pipeline(p, config)` adds the attribution steps to a Beam pipeline.

    ReadRecords -> DecodeRecords -> Attribute -> WriteAttributions
                         |                 \\-> per-batch summaries -> WriteSummary (merged)
                         \\-> dead letters -> WriteDeadLetters (and counted in the summary)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import apache_beam as beam
from apache_beam.io.parquetio import WriteToParquet

from pipeline.config import RunConfig
from pipeline.plan import ATTRIBUTIONS_PREFIX, DEAD_LETTER_PREFIX, RunPlan, resolve_plan
from transforms.attribute import AttributeBatches
from transforms.count import CountRecords
from transforms.decode import CountDuplicateKeys, DecodeBatches
from transforms.read import ReadRecords
from transforms.records import DEAD_LETTER_SCHEMA
from transforms.summarize import WriteSummary
from transforms.write import WriteAttributionTables

__all__ = ["build_pipeline", "BuiltPipeline"]


@dataclass(frozen=True)
class BuiltPipeline:
    """What build_pipeline added: the plan and the PCollections of output tables and dead letters."""

    plan: RunPlan
    attributions: beam.PCollection  # pyarrow.Table per batch
    dead_letters: beam.PCollection  # dict rows (key, source, record, error)
    summaries: beam.PCollection  # audit.summary.RunSummary per batch (empty when summaries are off)


def build_pipeline(p: beam.Pipeline, config: Union[RunConfig, RunPlan], write: bool = True) -> BuiltPipeline:
    """Adds the attribution steps to `p`. A RunConfig is resolved (and validated) here first.

    With write=False nothing is written (tests can assert on the returned PCollections).
    """
    plan = config if isinstance(config, RunPlan) else resolve_plan(config)
    settings = plan.settings
    raw = p | "ReadRecords" >> ReadRecords(plan.input_files, plan.schema, plan.config.batch_size)
    decoded = raw | "DecodeRecords" >> beam.ParDo(DecodeBatches(plan.schema)).with_outputs(
        DecodeBatches.DEAD_LETTER_TAG, main="records"
    )
    attributed = decoded.records | "Attribute" >> beam.ParDo(AttributeBatches(settings)).with_outputs(
        AttributeBatches.SUMMARY_TAG, main="tables"
    )
    tables = attributed.tables
    dead_letters = decoded[DecodeBatches.DEAD_LETTER_TAG]
    if plan.config.check_duplicate_keys:
        _ = decoded.records | "CountDuplicateKeys" >> CountDuplicateKeys()
    if write:
        _ = tables | "WriteAttributions" >> WriteAttributionTables(
            plan.output_path(ATTRIBUTIONS_PREFIX), settings.output_schema
        )
        _ = dead_letters | "WriteDeadLetters" >> WriteToParquet(
            plan.output_path(DEAD_LETTER_PREFIX), schema=DEAD_LETTER_SCHEMA, file_name_suffix=".parquet"
        )
        _ = (raw, decoded.records, dead_letters, tables) | "CountRecords" >> CountRecords(plan.write_dir)
        if settings.summary is not None:
            _ = (attributed[AttributeBatches.SUMMARY_TAG], dead_letters) | "WriteSummary" >> WriteSummary(
                settings.summary, plan.write_dir, plan.config.to_dict()
            )
    return BuiltPipeline(plan, tables, dead_letters, attributed[AttributeBatches.SUMMARY_TAG])
