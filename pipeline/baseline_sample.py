"""A deterministic sample of the input's rows, read on the launcher: the data integrated gradients'
median/mean baselines are computed from, and that any baseline is checked against.

Which rows: up to 8 files evenly spaced in the sorted list of matched files; in a Parquet file, up to 8
row groups evenly spaced, the first rows of each; in a TFRecord file, its first records. Twice the
rows asked for are read that way (so that short row groups and files still leave enough), then
thinned to `size` evenly spaced ones. The same files give the same sample. Invalid records are
skipped (they are dead-lettered in the run).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from transforms.read import parquet_row_group_sizes, read_parquet_shard, read_tfrecord_file
from transforms.records import DecodedBatch, RecordSchema, decode_batch

__all__ = ["InputSample", "sample_input_rows", "sample_records"]

_MOST_FILES = 8
_MOST_ROW_GROUPS = 8


@dataclass(frozen=True)
class InputSample:
    """rows: one (N, *shape) float32 array per model input; files: the files read."""

    rows: tuple[np.ndarray, ...]
    files: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.rows[0]) if self.rows else 0


def _evenly_spaced(count: int, most: int) -> list[int]:
    """min(count, most) distinct indices spread over range(count), first and last included."""
    picks = min(count, most)
    return sorted({round(i * (count - 1) / max(picks - 1, 1)) for i in range(picks)})


def sample_input_rows(files: Sequence[str], schema: RecordSchema, size: int) -> InputSample:
    """About `size` valid rows (fewer when the files hold fewer) of the model inputs in `schema`."""
    inputs_only = RecordSchema(input_format=schema.input_format, model_inputs=schema.model_inputs)
    chosen, parts = _sampled_batches(files, inputs_only, size)
    count = len(schema.model_inputs)
    if not parts:
        return InputSample(rows=tuple(np.zeros((0, *s.shape), np.float32) for s in schema.model_inputs), files=tuple(chosen))
    kept = _kept(parts, size)
    return InputSample(rows=tuple(np.concatenate([p.inputs[i] for p in parts])[kept] for i in range(count)), files=tuple(chosen))


def sample_records(files: Sequence[str], schema: RecordSchema, size: int) -> tuple[Optional[DecodedBatch], tuple[str, ...]]:
    """The same rows as `sample_input_rows`, with their keys and labels (`schema`'s label column):
    one DecodedBatch of at most `size` records (None when no valid record was found), and the
    files read."""
    chosen, parts = _sampled_batches(files, schema, size)
    if not parts:
        return None, tuple(chosen)
    kept = _kept(parts, size)
    keys = pa.concat_arrays([p.keys for p in parts]).take(pa.array(kept))
    inputs = tuple(np.concatenate([p.inputs[i] for p in parts])[kept] for i in range(len(schema.model_inputs)))
    labels = np.concatenate([p.labels for p in parts])[kept] if parts[0].labels is not None else None
    return DecodedBatch(keys=keys, inputs=inputs, labels=labels), tuple(chosen)


def _kept(parts: list[DecodedBatch], size: int) -> np.ndarray:
    """Indices of `size` evenly spaced rows among the parts' (all of them when fewer)."""
    return np.array(_evenly_spaced(sum(p.num_records for p in parts), size), dtype=np.int64)


def _sampled_batches(files: Sequence[str], schema: RecordSchema, size: int) -> tuple[list[str], list[DecodedBatch]]:
    files = sorted(files)  # the same files in any order (patterns given in another order) give the same sample
    chosen = [files[i] for i in _evenly_spaced(len(files), _MOST_FILES)]
    per_file = math.ceil(2 * size / len(chosen))
    parts: list[DecodedBatch] = []
    for path in chosen:
        for raw in itertools.islice(_raw_batches(path, schema, per_file), 64):
            decoded, _ = decode_batch(raw, schema)
            if decoded is not None and decoded.num_records:
                parts.append(decoded)
    return chosen, parts


def _raw_batches(path: str, schema: RecordSchema, rows: int):
    """RawBatches holding about `rows` records of `path` (see the module for which)."""
    prefix = os.path.basename(path)
    if schema.input_format == "tfrecord":
        taken = 0
        for raw in read_tfrecord_file(path, prefix, batch_size=rows):
            yield raw
            taken += raw.num_records
            if taken >= rows:
                return
        return
    sizes = parquet_row_group_sizes(path)
    if not sizes:
        return
    groups = _evenly_spaced(len(sizes), _MOST_ROW_GROUPS)
    per_group = math.ceil(rows / len(groups))
    for group in groups:
        first = sum(sizes[:group])
        batches = read_parquet_shard(path, prefix, range(group, group + 1), first, schema, batch_size=per_group)
        try:
            yield next(batches)
        except StopIteration:
            pass
        finally:
            batches.close()
