import threading

import pytest

from transforms.read import _masked_crc32c, detect_format, key_prefixes, prefetched, read_all, read_tfrecord_file, tfrecord_compression
from transforms.records import _as_bytes


def test_prefetched_yields_everything_in_order():
    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))


def test_prefetched_reraises_the_producers_error_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_prefetched_stops_its_thread_when_the_consumer_stops_early():
    before = threading.active_count()
    generator = prefetched(iter(range(10_000)), depth=2)
    assert next(generator) == 0
    generator.close()
    assert threading.active_count() == before


def test_format_from_extensions_and_mixed_input_is_refused():
    assert detect_format(["a.parquet", "b.pq"], "auto") == "parquet"
    assert detect_format(["a.tfrecord"], "auto") == "tfrecord"
    assert detect_format(["a.bin"], "tfrecord") == "tfrecord"
    with pytest.raises(ValueError, match="mixes Parquet and TFRecord"):
        detect_format(["a.parquet", "b.tfrecord"], "auto")


def test_key_prefixes_are_paths_below_the_common_directory():
    assert key_prefixes(["/d/x/a.parquet", "/d/y/a.parquet"]) == {"/d/x/a.parquet": "x/a.parquet", "/d/y/a.parquet": "y/a.parquet"}
    assert key_prefixes(["/d/x/a.parquet"]) == {"/d/x/a.parquet": "a.parquet"}


def _write_tfrecord(path, records, compression=""):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), compression) as writer:
        for record in records:
            writer.write(record)
    return str(path)


@pytest.mark.parametrize("compression", ["", "GZIP", "ZLIB"])
def test_compression_is_detected_from_the_bytes_without_an_extension(compression, tmp_path):
    path = _write_tfrecord(tmp_path / "data.tfrecord", [b"record one", b"record two"], compression)
    assert tfrecord_compression(path) == compression
    batches = list(read_tfrecord_file(path, "data.tfrecord", batch_size=10))
    assert [b.read_error for b in batches] == [None]
    assert _as_bytes(batches[0].serialized) == [b"record one", b"record two"]


def test_compression_from_the_extension_and_of_an_empty_file(tmp_path):
    assert tfrecord_compression(str(tmp_path / "a.tfrecord.gz")) == "GZIP"
    assert tfrecord_compression(str(tmp_path / "a.tfrecord.zlib")) == "ZLIB"
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    assert tfrecord_compression(str(tmp_path / "empty.tfrecord")) == ""
    assert detect_format(["a.tfrecord.gz", "b.tfrecord.zlib", "c.tfrecord"], "auto") == "tfrecord"


def test_a_plain_record_whose_length_looks_like_a_zlib_header_stays_plain(tmp_path):
    record = b"x" * (0x9C78)  # its length's first two bytes are 78 9c, a zlib header
    path = _write_tfrecord(tmp_path / "long.tfrecord", [record])
    assert open(path, "rb").read(2) == b"\x78\x9c"
    assert tfrecord_compression(path) == ""
    (batch,) = read_tfrecord_file(path, "long.tfrecord", batch_size=10)
    assert _as_bytes(batch.serialized) == [record]


def test_masked_crc32c_matches_tensorflows_record_headers(tmp_path):
    path = _write_tfrecord(tmp_path / "one.tfrecord", [b"abc"])
    head = open(path, "rb").read(12)
    assert _masked_crc32c(head[:8]) == int.from_bytes(head[8:12], "little")


def _damaged_parquet(path, rows=12, row_group_size=4, damaged_group=1):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": np.arange(rows), "a": np.arange(rows) * 0.5}), str(path), row_group_size=row_group_size)
    chunk = pq.ParquetFile(str(path)).metadata.row_group(damaged_group).column(1)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 12] = bytes(b ^ 0xFF for b in data[start : start + 12])
    path.write_bytes(bytes(data))
    return str(path)


def _tabular_schema():
    import pyarrow as pa

    from transforms.records import ColumnSpec, FieldSpec, ModelInputSpec, RecordSchema

    return RecordSchema("parquet", (ModelInputSpec("x", (1,), (ColumnSpec("a", 1, False),)),), key=FieldSpec("id", pa.int64()))


@pytest.mark.parametrize("batch_size", [3, 5, 100])
def test_a_damaged_row_group_dead_letters_its_records_and_the_others_are_read(batch_size, tmp_path):
    path = _damaged_parquet(tmp_path / "d.parquet")
    batches = list(read_all(path, _tabular_schema(), batch_size=batch_size))
    read = [i for b in batches if b.table is not None for i in b.table.column("id").to_pylist()]
    unreadable = [(b.first_index, b.unreadable) for b in batches if b.read_error is not None]
    assert read == [0, 1, 2, 3, 8, 9, 10, 11]
    assert unreadable == [(4, 4)]
    assert all(b.num_records <= batch_size for b in batches if b.table is not None)


def test_a_file_whose_footer_is_unreadable_is_one_dead_letter_keyed_file_star(tmp_path):
    from transforms.records import decode_batch

    (tmp_path / "bad.parquet").write_bytes(b"garbage" * 20)
    (batch,) = read_all(str(tmp_path / "bad.parquet"), _tabular_schema())
    assert batch.num_records == 1
    decoded, (letter,) = decode_batch(batch, _tabular_schema())
    assert decoded is None and letter.key == "bad.parquet:*" and "is not a readable Parquet file" in letter.error


@pytest.mark.parametrize("pre_buffer", [True, False])
def test_reading_a_shard_holds_about_one_row_group_not_all_of_them(pre_buffer, tmp_path):
    import tracemalloc

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.read import ROW_GROUPS_PER_SHARD
    from transforms.records import ColumnSpec, ModelInputSpec, RecordSchema

    rows_per_group = 4096
    values = np.random.default_rng(0).random((ROW_GROUPS_PER_SHARD * rows_per_group, 64)).astype(np.float32)  # incompressible
    path = str(tmp_path / "groups.parquet")
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 64)
    pq.write_table(pa.table({"pixels": column}), path, row_group_size=rows_per_group)
    group_bytes = pq.ParquetFile(path).metadata.row_group(0).total_byte_size  # ~1 MB
    schema = RecordSchema("parquet", (ModelInputSpec("pixels", (64,), (ColumnSpec("pixels", 64, True),)),))
    tracemalloc.start()  # the file is read through a Python file object: what it reads is Python bytes
    try:
        records = sum(batch.num_records for batch in read_all(path, schema, batch_size=1024, pre_buffer=pre_buffer))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert records == len(values)
    # One reader over the shard's row groups kept every group it had read ahead: 4 groups' bytes.
    assert peak < 2 * group_bytes, (peak, group_bytes)


def test_small_row_groups_still_make_full_batches(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = str(tmp_path / "small_groups.parquet")
    pq.write_table(pa.table({"id": np.arange(30), "a": np.arange(30) * 0.5}), path, row_group_size=7)  # 5 groups
    batches = [b for b in read_all(path, _tabular_schema(), batch_size=10) if b.table is not None]
    ids = [i for b in batches for i in b.table.column("id").to_pylist()]
    assert ids == list(range(30))
    # Shards are 4 row groups (28 records) and 1 (2): batches span row groups within a shard.
    assert [b.num_records for b in batches] == [10, 10, 8, 2]
    assert [b.first_index for b in batches] == [0, 10, 20, 28]


def test_streamed_reads_hold_a_buffer_not_a_row_group_and_read_the_same_records(tmp_path):
    """pre_buffer off (local files by default): a column is read in 1 MiB pieces, so a 16 MiB row
    group is never held whole in read bytes; pre_buffer on reads it in one piece. Same records."""
    import tracemalloc

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.read import STREAM_BUFFER_BYTES, parquet_read_options
    from transforms.records import ColumnSpec, ModelInputSpec, RecordSchema

    values = np.random.default_rng(1).random((65536, 64)).astype(np.float32)  # incompressible, one 16 MiB row group
    path = str(tmp_path / "one_group.parquet")
    pq.write_table(pa.table({"pixels": pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), 64)}), path,
                   row_group_size=len(values))
    group_bytes = pq.ParquetFile(path).metadata.row_group(0).total_byte_size
    schema = RecordSchema("parquet", (ModelInputSpec("pixels", (64,), (ColumnSpec("pixels", 64, True),)),))
    peaks, read = {}, {}
    for pre_buffer in (True, False):
        tracemalloc.start()
        try:
            tables = [b.table for b in read_all(path, schema, batch_size=4096, pre_buffer=pre_buffer) if b.table is not None]
            peaks[pre_buffer] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        read[pre_buffer] = np.concatenate([t.column("pixels").combine_chunks().flatten().to_numpy() for t in tables])
    np.testing.assert_array_equal(read[True], values.reshape(-1))
    np.testing.assert_array_equal(read[False], values.reshape(-1))
    assert peaks[True] > 0.9 * group_bytes, (peaks, group_bytes)
    assert peaks[False] < 4 * STREAM_BUFFER_BYTES < group_bytes / 3, (peaks, group_bytes)
    assert parquet_read_options("s3://b/x.parquet") == {"pre_buffer": True}  # automatic: on for buckets, off locally
    assert parquet_read_options(path) == {"pre_buffer": False, "buffer_size": STREAM_BUFFER_BYTES}
    assert parquet_read_options(path, pre_buffer=True) == {"pre_buffer": True}


def test_a_readers_first_batches_ramp_up_to_the_batch_size_and_keep_every_record_in_order(tmp_path):
    """16, 128, 1,024, ... records, then whole batches; the ramp spans batches (one per reader), indices stay
    continuous, a TFRecord batch is sliced the same way and an unreadable batch passes whole."""
    import numpy as np
    import pyarrow as pa

    from transforms.read import BatchRamp
    from transforms.records import RawBatch

    ramp = BatchRamp(batch_size=2000)
    table = pa.table({"id": np.arange(2310)})
    pieces = list(ramp.pieces(RawBatch("f", "f", 0, table=table.slice(0, 300))))
    pieces += list(ramp.pieces(RawBatch("f", "f", 300, table=table.slice(300, 10))))
    assert [p.num_records for p in pieces] == [16, 128, 156, 10]
    assert [p.first_index for p in pieces] == [0, 16, 144, 300]
    pieces += list(ramp.pieces(RawBatch("f", "f", 310, table=table.slice(310, 2000))))
    assert [p.num_records for p in pieces[4:]] == [1024, 976]
    assert [i for p in pieces for i in p.table.column("id").to_pylist()] == list(range(2310))
    assert [p.num_records for p in ramp.pieces(RawBatch("f", "f", 2310, table=table.slice(0, 2000)))] == [2000]

    records = [b"r%d" % i for i in range(40)]
    pieces = list(BatchRamp(batch_size=4096).pieces(RawBatch("t", "t", 5, serialized=records)))
    assert [p.num_records for p in pieces] == [16, 24] and [p.first_index for p in pieces] == [5, 21]
    assert [r for p in pieces for r in p.serialized] == records
    broken = RawBatch("t", "t", 0, read_error="truncated", unreadable=100)
    assert list(BatchRamp(batch_size=4096).pieces(broken)) == [broken]
    assert [p.num_records for p in BatchRamp(batch_size=8).pieces(RawBatch("f", "f", 0, table=table))] == [2310]
