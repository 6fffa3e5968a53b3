"""Decoding record batches in the pipeline: the Beam adapter over `transforms.records.decode_batch`."""

from __future__ import annotations

import apache_beam as beam

from transforms.read import METRICS_NAMESPACE
from transforms.records import RecordSchema, decode_batch

__all__ = ["DecodeBatches"]


class DecodeBatches(beam.DoFn):
    """RawBatch -> DecodedBatch, and DeadLetter rows on the 'dead_letter' output."""

    DEAD_LETTER_TAG = "dead_letter"

    def __init__(self, schema: RecordSchema):
        self._schema = schema
        self._dead = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_dead_lettered")

    def process(self, raw):
        decoded, dead = decode_batch(raw, self._schema)
        if dead:
            self._dead.inc(len(dead))
            for letter in dead:
                yield beam.pvalue.TaggedOutput(self.DEAD_LETTER_TAG, letter.as_row())
        if decoded is not None:
            yield decoded
