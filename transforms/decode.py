"""Decoding record batches in the pipeline: the Beam adapter over `transforms.records.decode_batch`."""

from __future__ import annotations

import apache_beam as beam

from transforms import progress
from transforms.read import METRICS_NAMESPACE
from transforms.records import RecordSchema, decode_batch

__all__ = ["DecodeBatches", "CountDuplicateKeys"]


class DecodeBatches(beam.DoFn):
    """RawBatch -> DecodedBatch, and DeadLetter rows on the 'dead_letter' output."""

    DEAD_LETTER_TAG = "dead_letter"

    def __init__(self, schema: RecordSchema):
        self._schema = schema
        self._dead = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_dead_lettered")

    def process(self, raw):
        decoded, dead = decode_batch(raw, self._schema)
        progress.add_read((decoded.num_records if decoded is not None else 0) + len(dead))
        if dead:
            self._dead.inc(len(dead))
            progress.add_done(len(dead))
            for letter in dead:
                yield beam.pvalue.TaggedOutput(self.DEAD_LETTER_TAG, letter.as_row())
        if decoded is not None:
            yield decoded


class _CountRepeats(beam.DoFn):
    def __init__(self):
        self._keys = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "duplicate_keys")
        self._records = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_with_duplicate_keys")

    def process(self, key_and_count):
        _, count = key_and_count
        if count > 1:
            self._keys.inc()
            self._records.inc(count)
            yield "duplicate_keys", 1  # as data too: counted once even where a runner retries bundles
            yield "records_with_duplicate_keys", count


class CountDuplicateKeys(beam.PTransform):
    """DecodedBatches -> ("duplicate_keys", 1) per key seen more than once and
    ("records_with_duplicate_keys", n) for its n records (also as metrics). Every record is still
    attributed and written."""

    def expand(self, batches):
        return (
            batches
            | "Keys" >> beam.FlatMap(lambda batch: batch.keys.to_pylist())
            | "CountPerKey" >> beam.combiners.Count.PerElement()
            | "CountRepeats" >> beam.ParDo(_CountRepeats())
        )
