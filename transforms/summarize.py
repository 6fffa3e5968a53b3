"""Beam adapter for dataset summaries: merge per-batch `RunSummary`s, write the summary files.

The per-batch summaries come from `AttributeBatches`' summary output; `MergeSummaries` is a
CombineFn, so each worker merges its own before anything crosses the network (combiner lifting).
"""

from __future__ import annotations

import io
from typing import Optional
from functools import reduce

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from audit import json_safe
from audit.summary import RunSummary, SummarySpec
from audit.summary_output import (
    EXEMPLARS_FILE, FEATURES_FILE, POINTS_FILE, SUMMARY_FILE, TOKENS_FILE, exemplars_table, features_table, points_features,
    points_table, summary_document, tokens_table,
)

__all__ = ["MergeSummaries", "WriteSummary", "write_summary_files"]


class MergeSummaries(beam.CombineFn):
    def __init__(self, spec: SummarySpec):
        self._spec = spec

    def create_accumulator(self) -> RunSummary:
        return RunSummary.empty(self._spec)

    def add_input(self, accumulator: RunSummary, summary: RunSummary) -> RunSummary:
        return accumulator.merge(summary)

    def merge_accumulators(self, accumulators) -> RunSummary:
        return reduce(RunSummary.merge, accumulators, self.create_accumulator())

    def extract_output(self, accumulator: RunSummary) -> RunSummary:
        return accumulator


def write_summary_files(summary: RunSummary, output_dir: str, dead_letters: int, settings: dict,
                        quality: Optional[dict] = None) -> list[str]:
    """Writes summary.json and the summary Parquet files (the token totals only for a run with
    inputs attributed at a layer, the beeswarm's points only for one with scalar features) into `output_dir` (any Beam filesystem); returns their paths."""
    paths = []
    tables = [(FEATURES_FILE, features_table(summary)), (EXEMPLARS_FILE, exemplars_table(summary))]
    if summary.spec.token_features:
        tables.append((TOKENS_FILE, tokens_table(summary)))
    if points_features(summary):
        tables.append((POINTS_FILE, points_table(summary)))
    for name, table in tables:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="snappy")
        paths.append(_write(FileSystems.join(output_dir, name), buffer.getvalue()))
    document = summary_document(summary, dead_letters, settings, quality)
    paths.append(_write(FileSystems.join(output_dir, SUMMARY_FILE), json_safe.dumps(document, indent=1).encode()))
    return paths


def _write(path: str, data: bytes) -> str:
    with FileSystems.create(path) as handle:
        handle.write(data)
    return path


class WriteSummary(beam.PTransform):
    """(per-batch summaries, dead letters) -> the summary files in `output_dir`."""

    def __init__(self, spec: SummarySpec, output_dir: str, settings: dict, quality: Optional[dict] = None):
        super().__init__()
        self._spec, self._output_dir, self._settings, self._quality = spec, output_dir, settings, quality

    def expand(self, inputs):
        summaries, dead_letters = inputs
        merged = summaries | "Merge" >> beam.CombineGlobally(MergeSummaries(self._spec))
        dead_count = dead_letters | "CountDeadLetters" >> beam.combiners.Count.Globally()
        return merged | "Write" >> beam.Map(
            write_summary_files, self._output_dir, beam.pvalue.AsSingleton(dead_count), self._settings, self._quality
        )
