"""The attribution Parquet sink: row groups, encodings, and identical content."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
import apache_beam as beam

from transforms.write import WriteAttributionTables


def _table(start, rows):
    return pa.table({
        "key": pa.array([f"k{i}" for i in range(start, start + rows)]),
        "target": pa.array(np.zeros(rows, np.int32)),
        "attr_x": pa.array(np.arange(start, start + rows, dtype=np.float32)),
    })


def test_tables_are_written_whole_in_gathered_row_groups_without_float_dictionaries(tmp_path):
    tables = [_table(i * 100, 100) for i in range(7)]
    with TestPipeline(runner=FnApiRunner()) as p:
        _ = p | beam.Create(tables, reshuffle=False) | WriteAttributionTables(str(tmp_path / "attributions"), tables[0].schema, row_group_rows=250)
    (path,) = tmp_path.glob("attributions-*.parquet")
    written = pq.read_table(path)
    assert sorted(written.column("attr_x").to_pylist()) == list(range(700))
    metadata = pq.ParquetFile(path).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [300, 300, 100]
    columns = {metadata.row_group(0).column(i).path_in_schema: metadata.row_group(0).column(i) for i in range(3)}
    assert "PLAIN_DICTIONARY" not in columns["attr_x"].encodings and "RLE_DICTIONARY" not in columns["attr_x"].encodings
    assert columns["attr_x"].compression == "SNAPPY"
