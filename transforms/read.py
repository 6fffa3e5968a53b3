"""Reading records in batches: Parquet row groups and TFRecord files as `RawBatch` elements.

Per-record Beam elements cost more than the gradient itself (see docs/architecture.md), so a
batch of records is one element from the reader on. Parquet files are split into shards of whole
row groups (so one large file still spreads over workers); a TFRecord file is one shard (the format
has no index to split on, as with Beam's own TFRecord source).
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from typing import Iterator, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.records import RawBatch, RecordSchema, parquet_schema_problem
from transforms.storage import use_options
from transforms.tfrecord_lengths import first_impossible_length

__all__ = [
    "ReadRecords",
    "read_parquet_shard",
    "parquet_read_options",
    "parquet_row_group_sizes",
    "read_tfrecord_file",
    "readable_by_tensorflow",
    "read_all",
    "key_prefixes",
    "detect_format",
    "tfrecord_compression",
    "BatchRamp",
]

METRICS_NAMESPACE = "attribution"
# Row groups per Parquet shard: small enough to spread a file over workers, large enough that a
# shard's fixed cost (opening the file, reading the footer) stays negligible.
ROW_GROUPS_PER_SHARD = 4


def detect_format(paths: Sequence[str], declared: str) -> str:
    """'parquet' or 'tfrecord', from `declared` or else from the files' extensions."""
    if declared != "auto":
        return declared
    formats = set()
    for path in paths:
        name = _without_compression_suffix(path.lower())
        if name.endswith((".parquet", ".pq")):
            formats.add("parquet")
        elif name.endswith((".tfrecord", ".tfrecords", ".tfr")):
            formats.add("tfrecord")
        else:
            raise ValueError(
                f"cannot tell the format of {path!r} from its extension (.parquet or .tfrecord); pass "
                f"--input-format parquet|tfrecord."
            )
    if len(formats) > 1:
        raise ValueError(
            f"the input mixes Parquet and TFRecord files; run each format separately or pass "
            f"--input-format. Files: {list(paths)[:5]}"
        )
    return formats.pop()


def _without_compression_suffix(name: str) -> str:
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


_COMPRESSION_SUFFIXES = {".gz": "GZIP", ".gzip": "GZIP", ".zlib": "ZLIB"}
_GZIP_MAGIC = b"\x1f\x8b"
_ZLIB_FLAGS = (0x01, 0x5E, 0x9C, 0xDA)  # the second header byte after 0x78, per compression level


def tfrecord_compression(path: str) -> str:
    """TensorFlow's compression_type for a TFRecord file: 'GZIP', 'ZLIB' or '' (uncompressed).

    From the extension (.gz, .gzip, .zlib), else from the first bytes: the gzip magic 1f 8b; a
    zlib header (78 01/5e/9c/da) only when the bytes are not a valid plain first record (its length
    and the length's masked CRC-32C), since a plain record's length may start with 0x78.
    """
    name = path.lower()
    for suffix, compression in _COMPRESSION_SUFFIXES.items():
        if name.endswith(suffix):
            return compression
    with _open(path) as handle:
        head = handle.read(12)
    if head.startswith(_GZIP_MAGIC):
        return "GZIP"
    if len(head) >= 2 and head[0] == 0x78 and head[1] in _ZLIB_FLAGS and not _plain_record_header(head):
        return "ZLIB"
    return ""


def _plain_record_header(head: bytes) -> bool:
    """Whether 12 bytes are a plain TFRecord header: uint64 length, then its masked CRC-32C."""
    if len(head) < 12:
        return False
    return int.from_bytes(head[8:12], "little") == _masked_crc32c(head[:8])


def _masked_crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, masked as TFRecord headers store it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    crc ^= 0xFFFFFFFF
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def key_prefixes(paths: Sequence[str]) -> dict[str, str]:
    """Each file's name in synthesized keys: its path relative to the files' common directory."""
    if len(paths) == 1:
        return {paths[0]: os.path.basename(paths[0])}
    common = os.path.commonpath([p.replace("://", ":/") for p in paths]) if paths else ""
    prefixes = {}
    for path in paths:
        normalized = path.replace("://", ":/")
        prefixes[path] = normalized[len(common) :].lstrip("/") or os.path.basename(path)
    return prefixes


def _open(path: str):
    return FileSystems.open(path, mime_type="application/octet-stream", compression_type="uncompressed")


@contextlib.contextmanager
def readable_by_tensorflow(path: str, limit_bytes: Optional[int] = None) -> Iterator[str]:
    """A path TensorFlow's TFRecord reader can open: `path` itself when local; for a bucket
    (s3://, gs://, ...), a private local copy made through Beam's filesystems, deleted afterwards
    (TensorFlow 2.21 has no s3://, and its gs:// takes neither the pipeline's options nor an
    emulator). limit_bytes: copy at most this many bytes (the launcher reads only a first record).
    A worker needs local disk for one input file at a time."""
    if "://" not in path:
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="attribution-tfrecord-") as folder:
        local = os.path.join(folder, os.path.basename(path.rstrip("/")) or "input.tfrecord")
        with _open(path) as source, open(local, "wb") as copy:
            left = limit_bytes
            while left is None or left > 0:
                chunk = source.read(1 << 22 if left is None else min(1 << 22, left))
                if not chunk:
                    break
                copy.write(chunk)
                left = None if left is None else left - len(chunk)
        yield local


# What pyarrow raises on a damaged Parquet file (bad magic bytes, thrift, pages, compression).
_PARQUET_ERRORS = (OSError, pa.ArrowException)


def parquet_row_group_sizes(path: str) -> list[int]:
    """Rows per row group of a Parquet file ([] when its footer cannot be read)."""
    with _open(path) as handle:
        try:
            metadata = pq.ParquetFile(handle).metadata
        except _PARQUET_ERRORS:
            return []
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def parquet_shards(path: str) -> list[tuple[str, int, Optional[int], int]]:
    """(path, first row group, end row group, index of the shard's first record) per shard. A file
    whose footer cannot be read is one shard with end None: its reader reports it unreadable."""
    with _open(path) as handle:
        try:
            metadata = pq.ParquetFile(handle).metadata
        except _PARQUET_ERRORS:
            return [(path, 0, None, 0)]
    shards, first_record = [], 0
    for start in range(0, metadata.num_row_groups, ROW_GROUPS_PER_SHARD):
        end = min(start + ROW_GROUPS_PER_SHARD, metadata.num_row_groups)
        shards.append((path, start, end, first_record))
        first_record += sum(metadata.row_group(i).num_rows for i in range(start, end))
    return shards


# Parquet reads without pre-buffering: each column streamed in reads of this size.
STREAM_BUFFER_BYTES = 1 << 20


def parquet_read_options(path: str, pre_buffer: Optional[bool] = None) -> dict:
    """pq.ParquetFile's read options for `path`. pre_buffer None: on for object stores (path has a
    scheme), where each streamed read would be a request fetching Beam's whole read buffer; off for
    local files, where it holds every column of a row group at once (docs/performance.md)."""
    if pre_buffer is None:
        pre_buffer = "://" in path
    return {"pre_buffer": True} if pre_buffer else {"pre_buffer": False, "buffer_size": STREAM_BUFFER_BYTES}


def read_parquet_shard(
    path: str, key_prefix: str, row_groups: Optional[range], first_index: int, schema: RecordSchema, batch_size: int,
    pre_buffer: Optional[bool] = None,
) -> Iterator[RawBatch]:
    """Yields the shard's records as RawBatches of at most `batch_size` rows (row_groups None: the
    whole file). A file whose columns do not fit `schema` yields one RawBatch with `read_error`
    standing for all the shard's records; a damaged file, see `_read_row_groups`. pre_buffer: see
    `parquet_read_options`."""
    with _open(path) as handle:
        try:
            parquet = pq.ParquetFile(handle, **parquet_read_options(path, pre_buffer))
        except _PARQUET_ERRORS as error:  # its row count is unknown: one dead letter for the file
            yield RawBatch(
                source=path, key_prefix=key_prefix, first_index=0, unreadable=1, dead_key=f"{key_prefix}:*",
                read_error=f"file {path} is not a readable Parquet file ({_first_line(error)}); this one dead letter stands for all its records",
            )
            return
        if row_groups is None:  # its footer could not be read when the file was split, but can now
            row_groups, first_index = range(parquet.metadata.num_row_groups), 0
        problem = parquet_schema_problem(parquet.schema_arrow, schema)
        if problem is not None:
            rows = sum(parquet.metadata.row_group(i).num_rows for i in row_groups)
            yield RawBatch(source=path, key_prefix=key_prefix, first_index=first_index, read_error=f"file {path}: {problem}", unreadable=rows)
            return
        oversized = _oversized_row_groups(parquet, row_groups, schema)
        index, run = first_index, []  # runs of row groups that can be read, between oversized ones
        for group in [*row_groups, None]:
            if group is not None and group not in oversized:
                run.append(group)
                continue
            if run:
                yield from _read_row_groups(parquet, path, key_prefix, range(run[0], run[-1] + 1), index, schema.read_columns, batch_size)
                index += sum(parquet.metadata.row_group(g).num_rows for g in run)
                run = []
            if group is not None:
                rows = parquet.metadata.row_group(group).num_rows
                yield RawBatch(source=path, key_prefix=key_prefix, first_index=index, unreadable=rows,
                               read_error=f"row group {group} of file {path}: {oversized[group]}; the row group is not read")
                index += rows


# A list column may hold this many values beyond what its rows should (rows x the model input's
# length) before its row group is refused unread: a row slightly too long is dead-lettered by
# itself when decoded; a row group holding far more (an 835-byte file whose one cell decoded to
# 500 MB, seen) is never materialised.
MAX_EXTRA_LIST_VALUES = 1 << 20


def _oversized_row_groups(parquet: pq.ParquetFile, row_groups: range, schema: RecordSchema) -> dict[int, str]:
    """{row group: why} for row groups whose list columns hold far more values than their rows
    can use, from the footer's value counts (nothing is decoded)."""
    lists = {c.name: c.length for c in schema.source_columns if c.is_list and c.image is None and c.dtype != "string"}
    if not lists:
        return {}
    metadata = parquet.metadata
    leaves = {}  # column name -> index of its leaf column chunk
    for j in range(metadata.num_columns):
        top = metadata.schema.column(j).path.split(".", 1)[0]
        if top in lists:
            leaves[top] = j
    oversized = {}
    for group in row_groups:
        row_group = metadata.row_group(group)
        for name, j in leaves.items():
            values, allowed = row_group.column(j).num_values, row_group.num_rows * lists[name]
            if values > allowed + MAX_EXTRA_LIST_VALUES:
                oversized[group] = (f"column {name!r} holds {values:,} values for {row_group.num_rows:,} rows of "
                                    f"{lists[name]} values each (at most {allowed:,}): a row far longer than the model input")
                break
    return oversized


def _read_row_groups(
    parquet: pq.ParquetFile, path: str, key_prefix: str, row_groups: range, first_index: int, columns: list, batch_size: int
) -> Iterator[RawBatch]:
    """The row groups' records as RawBatches. When a row group cannot be decoded (a damaged page),
    the records before the damage are kept, each record of the damaged row group not yet read is
    one dead letter (the footer gives the count), and the later row groups are read."""
    index = first_index
    try:
        for table in prefetched(_batches_by_row_group(parquet, row_groups, columns, batch_size)):
            yield RawBatch(source=path, key_prefix=key_prefix, first_index=index, table=table)
            index += table.num_rows
        return
    except _PARQUET_ERRORS:
        pass
    # Slow path, damaged files only: the rest of the shard row group by row group.
    group_first = first_index
    for group in row_groups:
        rows = parquet.metadata.row_group(group).num_rows
        done = index - group_first  # records of this group already yielded
        group_first += rows
        if done >= rows:
            continue
        try:
            table = parquet.read_row_group(group, columns=columns).slice(done)
        except _PARQUET_ERRORS as error:
            yield RawBatch(
                source=path, key_prefix=key_prefix, first_index=index, unreadable=rows - done,
                read_error=f"row group {group} of file {path} is unreadable ({_first_line(error)})",
            )
            index += rows - done
            continue
        for batch in table.to_batches(max_chunksize=batch_size):
            yield RawBatch(source=path, key_prefix=key_prefix, first_index=index, table=pa.Table.from_batches([batch]))
            index += batch.num_rows


def _batches_by_row_group(parquet: pq.ParquetFile, row_groups: range, columns: list, batch_size: int) -> Iterator[pa.Table]:
    """Tables of `batch_size` records (the last one fewer) from the row groups, one row group's
    reader at a time; a table may span row groups, so small row groups still make full batches.

    pyarrow pre-buffers (reads ahead, coalesced) every row group a reader is given and keeps what
    it read until the reader is done, so one reader over a shard held all its row groups (4 x 16
    MB for the bench's 1M-record file; tests/transforms/test_read.py). Measured on that file, plain
    gradient: peak RSS 939 -> 889 MB."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for group in row_groups:
        for batch in parquet.iter_batches(batch_size=batch_size, row_groups=[group], columns=columns):
            pending.append(batch)
            rows += batch.num_rows
            while rows >= batch_size:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, batch_size)  # slices share the buffers: no copy
                rest = table.slice(batch_size)
                pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


_DONE = object()


def prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """Iterates `items` in a background thread, `depth` items ahead.

    Decoding the next Parquet batch (pyarrow releases the GIL) then overlaps the model's work on
    the current one, which runs while this generator is suspended at its `yield`. Exceptions are
    re-raised here; an early exit stops the thread at its next item.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def fill() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put((item, None))
        except BaseException as error:  # re-raised in the consumer
            buffer.put((None, error))
            return
        buffer.put((_DONE, None))

    thread = threading.Thread(target=fill, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.01)


def read_tfrecord_file(path: str, key_prefix: str, batch_size: int) -> Iterator[RawBatch]:
    """Yields the file's serialized records as RawBatches of at most `batch_size` records.

    Uses TensorFlow's reader (CRC-checked, C++) on the file, or on a local copy of a file in a
    bucket (`readable_by_tensorflow`); GZIP and ZLIB files are decompressed (see
    `tfrecord_compression`). A truncated or corrupted file yields every record before the damage,
    then one RawBatch with `read_error` set that stands for the unreadable rest (one dead letter,
    so counts reconcile).
    """
    with readable_by_tensorflow(path) as local:
        yield from _read_local_tfrecord_file(local, path, key_prefix, batch_size)


def _read_local_tfrecord_file(local: str, path: str, key_prefix: str, batch_size: int) -> Iterator[RawBatch]:
    """read_tfrecord_file on `local`, a path TensorFlow reads; batches name `path` as their source."""
    import tensorflow as tf

    compression = tfrecord_compression(local)
    impossible = first_impossible_length(local, compression)  # TensorFlow must never read that header

    def dataset():
        records = tf.data.TFRecordDataset([local], compression)
        return records if impossible is None else records.take(impossible[0])

    index = 0
    # Kept as string tensors: converting each record to a Python bytes object would cost as much
    # as parsing it; tf.io.parse_example takes the tensor as it is.
    batches = prefetched(iter(dataset().batch(batch_size)))
    while True:
        try:
            records = next(batches)  # tf.string tensor (n,)
        except StopIteration:
            if impossible is None:
                return
            records, reason = [], impossible[1]
            break
        except tf.errors.DataLossError:
            records, reason = None, "read error"
            break
        yield RawBatch(source=path, key_prefix=key_prefix, first_index=index, serialized=records)
        index += len(records)
    if records is None:  # slow path, damaged files only: re-read the failed batch record by record up to the damage
        records = []
        try:
            for record in dataset().skip(index).as_numpy_iterator():
                records.append(record)
        except tf.errors.DataLossError as error:
            reason = error.message.strip().splitlines()[0]
    if records:
        yield RawBatch(source=path, key_prefix=key_prefix, first_index=index, serialized=records)
        index += len(records)
    yield RawBatch(
        source=path, key_prefix=key_prefix, first_index=index, unreadable=1,
        read_error=f"file is truncated or corrupted after record {index - 1}; the rest is unreadable ({reason})",
    )


def read_all(path: str, schema: RecordSchema, batch_size: int = 4096, pre_buffer: Optional[bool] = None) -> Iterator[RawBatch]:
    """Every record of one file, in batches (for baselines and background rows)."""
    prefix = os.path.basename(path)
    if schema.input_format == "parquet":
        for shard_path, start, end, first in parquet_shards(path):
            yield from read_parquet_shard(shard_path, prefix, _row_groups(start, end), first, schema, batch_size, pre_buffer)
    else:
        yield from read_tfrecord_file(path, prefix, batch_size)


def _row_groups(start: int, end: Optional[int]) -> Optional[range]:
    return None if end is None else range(start, end)


class _ExpandShards(beam.DoFn):
    """file path -> (path, first row group, end row group, first record index) per shard."""

    def __init__(self, input_format: str, filesystem_options: Optional[dict] = None):
        self._input_format = input_format
        self._filesystem_options = filesystem_options

    def setup(self):
        use_options(self._filesystem_options)

    def process(self, path: str):
        if self._input_format == "parquet":
            yield from parquet_shards(path)
        else:
            yield (path, 0, 0, 0)


# A reader's first batches are small and grow eightfold up to --batch-size (16, 128, 1,024, then
# 4,096), so a heavy job (images x 64 integrated-gradient steps: 0.04-0.4 s a record here) shows
# records done within seconds instead of after its first full batch; a cheap one pays for three
# more batches per reader (bench/first_progress.py).
FIRST_BATCH_RECORDS = 16
RAMP_GROWTH = 8


class BatchRamp:
    """Splits the first RawBatches of a reader into pieces of FIRST_BATCH_RECORDS, RAMP_GROWTH times
    that, ... until a piece would reach `batch_size`; from then on batches pass whole. One per reader
    instance (a worker thread), not per shard."""

    def __init__(self, batch_size: int, first: Optional[int] = None):
        first = FIRST_BATCH_RECORDS if first is None else first
        self._batch_size = batch_size
        self._next = first if first < batch_size else None

    def pieces(self, batch: RawBatch) -> Iterator[RawBatch]:
        start = 0
        while self._next is not None and batch.read_error is None and batch.num_records - start > self._next:
            yield _slice(batch, start, self._next)
            start += self._next
            self._next = self._next * RAMP_GROWTH if self._next * RAMP_GROWTH < self._batch_size else None
        if start == 0:
            yield batch
        elif start < batch.num_records:
            yield _slice(batch, start, batch.num_records - start)


def _slice(batch: RawBatch, start: int, length: int) -> RawBatch:
    """Records [start, start + length) of a readable batch (Arrow slices and tensor slices share buffers)."""
    if batch.table is not None:
        return RawBatch(batch.source, batch.key_prefix, batch.first_index + start, table=batch.table.slice(start, length))
    return RawBatch(batch.source, batch.key_prefix, batch.first_index + start, serialized=batch.serialized[start:start + length])


class _ReadShard(beam.DoFn):
    """shard -> RawBatches; counts the records read."""

    def __init__(self, schema: RecordSchema, prefixes: dict[str, str], batch_size: int, filesystem_options: Optional[dict] = None,
                 pre_buffer: Optional[bool] = None):
        self._schema = schema
        self._prefixes = prefixes
        self._batch_size = batch_size
        self._filesystem_options = filesystem_options
        self._pre_buffer = pre_buffer
        self._records_read = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_read")

    def setup(self):
        use_options(self._filesystem_options)
        self._ramp = BatchRamp(self._batch_size)

    def process(self, shard):
        path, start, end, first_index = shard
        prefix = self._prefixes[path]
        if self._schema.input_format == "parquet":
            batches = read_parquet_shard(path, prefix, _row_groups(start, end), first_index, self._schema, self._batch_size,
                                         self._pre_buffer)
        else:
            batches = read_tfrecord_file(path, prefix, self._batch_size)
        for batch in batches:
            self._records_read.inc(batch.num_records)
            yield from self._ramp.pieces(batch)


class ReadRecords(beam.PTransform):
    """Reads the given files as RawBatch elements of at most `batch_size` records.

    Args:
      paths: the matched input files (expanded on the launcher).
      schema: what to read (the format, and the columns: Parquet reads only these).
      batch_size: records per batch.
      filesystem_options: Beam's filesystem options for workers Beam gives none (transforms.storage).
      pre_buffer: Parquet read-ahead per row group (None: automatic, see `parquet_read_options`).
    """

    def __init__(
        self, paths: Sequence[str], schema: RecordSchema, batch_size: int, label: Optional[str] = None,
        filesystem_options: Optional[dict] = None, pre_buffer: Optional[bool] = None,
    ):
        super().__init__(label)
        self._paths = list(paths)
        self._schema = schema
        self._batch_size = batch_size
        self._filesystem_options = filesystem_options
        self._pre_buffer = pre_buffer

    def expand(self, pbegin):
        return (
            pbegin
            | "CreateFileList" >> beam.Create(self._paths)
            | "SpreadFiles" >> beam.Reshuffle()
            | "ExpandShards" >> beam.ParDo(_ExpandShards(self._schema.input_format, self._filesystem_options))
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShards" >> beam.ParDo(
                _ReadShard(self._schema, key_prefixes(self._paths), self._batch_size, self._filesystem_options, self._pre_buffer)
            )
        )
