"""A deterministic sample of the input's rows, read on the launcher: the data integrated gradients'
median/mean baselines are computed from, and that any baseline is checked against.

Which rows: up to 8 files evenly spaced in the matched (sorted) list; in a Parquet file, up to 8
row groups evenly spaced, the first rows of each; in a TFRecord file, its first records. The same
files give the same sample. Invalid records are skipped (they are dead-lettered in the run).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from transforms.read import parquet_row_group_sizes, read_parquet_shard, read_tfrecord_file
from transforms.records import RecordSchema, decode_batch

__all__ = ["InputSample", "sample_input_rows"]

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
    chosen = [files[i] for i in _evenly_spaced(len(files), _MOST_FILES)]
    per_file = math.ceil(size / len(chosen))
    parts: list[tuple] = []
    for path in chosen:
        for raw in itertools.islice(_raw_batches(path, inputs_only, per_file), 64):
            decoded, _ = decode_batch(raw, inputs_only)
            if decoded is not None:
                parts.append(decoded.inputs)
    count = len(schema.model_inputs)
    rows = tuple(np.concatenate([p[i] for p in parts])[:size] if parts else np.zeros((0, *schema.model_inputs[i].shape), np.float32)
                 for i in range(count))
    return InputSample(rows=rows, files=tuple(chosen))


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
