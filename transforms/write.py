"""Writing attribution tables to sharded Parquet files.

Beam's WriteToParquetBatched writes each element as its own row group with pyarrow's defaults,
which dictionary-encode every column: for float attributions that took ~6.8 ms per 1,024-row
table here, against ~1 ms without it (measured, see docs/architecture.md). This sink keeps
dictionary encoding and statistics for the identity columns (keys, pass-through, targets) only,
compresses with snappy, and gathers tables into row groups of `row_group_rows` rows.
Temporary files are renamed into place when the write finalizes (Beam's FileBasedSink).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, iobase
from apache_beam.io.filesystem import CompressionTypes

__all__ = ["WriteAttributionTables"]

ROW_GROUP_ROWS = 65536


class _Writer:
    """Gathers tables into row groups and encodes each in a background thread (pyarrow releases
    the GIL), so encoding overlaps the model's work on the next batches."""

    def __init__(self, handle, writer: pq.ParquetWriter):
        self.handle = handle
        self.writer = writer
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._in_flight = None

    def flush(self) -> None:
        if self.pending:
            self._wait()  # one row group in flight at a time: bounded memory, ordered writes
            self._in_flight = self._executor.submit(self.writer.write_table, pa.concat_tables(self.pending))
            self.pending, self.pending_rows = [], 0

    def _wait(self) -> None:
        if self._in_flight is not None:
            self._in_flight.result()  # re-raises a failed write
            self._in_flight = None

    def close(self) -> None:
        self.flush()
        self._wait()
        self._executor.shutdown()
        self.writer.close()
        self.handle.close()


class _AttributionParquetSink(filebasedsink.FileBasedSink):
    def __init__(self, file_path_prefix: str, schema: pa.Schema, row_group_rows: int):
        super().__init__(
            file_path_prefix,
            coder=None,
            file_name_suffix=".parquet",
            mime_type="application/x-parquet",
            compression_type=CompressionTypes.UNCOMPRESSED,  # Parquet compresses per page
        )
        self._schema = schema
        self._row_group_rows = row_group_rows

    def _identity_columns(self) -> list[str]:
        return [f.name for f in self._schema if not f.name.startswith("attr_") and not pa.types.is_floating(f.type)]

    def open(self, temp_path):
        handle = super().open(temp_path)
        identity = self._identity_columns()
        writer = pq.ParquetWriter(
            handle, self._schema, compression="snappy", use_dictionary=identity, write_statistics=identity
        )
        return _Writer(handle, writer)

    def write_record(self, writer: _Writer, table: pa.Table) -> None:
        writer.pending.append(table)
        writer.pending_rows += table.num_rows
        if writer.pending_rows >= self._row_group_rows:
            writer.flush()

    def close(self, writer: _Writer) -> None:
        writer.close()


class WriteAttributionTables(beam.PTransform):
    """Writes pyarrow Tables (all with `schema`) to `<prefix>-SSSSS-of-NNNNN.parquet`."""

    def __init__(self, file_path_prefix: str, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS):
        super().__init__()
        self._sink = _AttributionParquetSink(file_path_prefix, schema, row_group_rows)

    def expand(self, tables):
        return tables | iobase.Write(self._sink)
