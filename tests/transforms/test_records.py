"""Decoding batches: valid records to model inputs, invalid ones to dead letters with reasons."""

import json

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf

from transforms.records import ColumnSpec, FieldSpec, ModelInputSpec, RawBatch, RecordSchema, decode_batch, parquet_schema_problem

IMAGE = ModelInputSpec("image", (2, 2, 1), (ColumnSpec("pixels", 4, True),))
TABULAR = ModelInputSpec("tabular", (2,), (ColumnSpec("a", 1, False), ColumnSpec("b", 1, False)))


def _parquet_schema(**kwargs):
    return RecordSchema("parquet", (IMAGE, TABULAR), key=FieldSpec("id", pa.int64()), **kwargs)


def test_parquet_batch_decodes_list_and_scalar_columns():
    table = pa.table({"id": [7, 8], "pixels": [[1, 2, 3, 4], [5, 6, 7, 8]], "a": [0.5, 1.5], "b": [2, 3]})
    decoded, dead = decode_batch(RawBatch("f.parquet", "f.parquet", 0, table=table), _parquet_schema())
    assert dead == []
    assert decoded.keys.to_pylist() == [7, 8]
    np.testing.assert_array_equal(decoded.inputs[0], np.arange(1, 9, dtype=np.float32).reshape(2, 2, 2, 1))
    np.testing.assert_array_equal(decoded.inputs[1], [[0.5, 2], [1.5, 3]])
    assert decoded.inputs[0].dtype == np.float32


def test_parquet_bad_rows_go_to_dead_letters_and_the_rest_is_kept():
    table = pa.table(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "pixels": [[1, 2, 3, 4], [1, 2, 3], None, [1, None, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]],
            "a": [0.0, 0.0, 0.0, 0.0, float("nan"), 1.0],
            "b": [1.0, 1.0, 1.0, 1.0, 1.0, None],
        }
    )
    decoded, dead = decode_batch(RawBatch("f.parquet", "f.parquet", 0, table=table), _parquet_schema())
    assert decoded.keys.to_pylist() == [1]
    reasons = {d.key: d.error for d in dead}
    assert reasons == {
        "2": "column 'pixels' has 3 values, expected 4",
        "3": "column 'pixels' is null",
        "4": "column 'pixels' holds null values",
        "5": "column 'a' holds NaN or infinite values",
        "6": "column 'b' is null",
    }
    assert json.loads(dead[0].record)["pixels"] == [1, 2, 3]
    assert all(d.source == "f.parquet" for d in dead)


def test_synthesized_keys_are_file_and_record_index():
    schema = RecordSchema("parquet", (TABULAR,))
    table = pa.table({"a": [1.0, float("inf"), 3.0], "b": [1.0, 2.0, 3.0]})
    decoded, dead = decode_batch(RawBatch("/d/x.parquet", "x.parquet", 100, table=table), schema)
    assert decoded.keys.to_pylist() == ["x.parquet:100", "x.parquet:102"]
    assert [d.key for d in dead] == ["x.parquet:101"]


def test_labels_out_of_range_are_dead_lettered():
    schema = RecordSchema("parquet", (TABULAR,), label=FieldSpec("y", pa.int64()), num_outputs=3)
    table = pa.table({"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0], "y": [0, 3, 2]})
    decoded, dead = decode_batch(RawBatch("x", "x", 0, table=table), schema)
    np.testing.assert_array_equal(decoded.labels, [0, 2])
    assert dead[0].error == "label column 'y' value 3 is out of range [0, 3) of the explained output"


def _example(**features):
    feature = {}
    for name, value in features.items():
        if isinstance(value, bytes):
            feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        elif isinstance(value, int):
            feature[name] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
        else:
            feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=value))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def test_tfrecord_batch_with_malformed_records():
    schema = RecordSchema(
        "tfrecord",
        (ModelInputSpec("v", (3,), (ColumnSpec("v", 3, True),)),),
        key=FieldSpec("id", pa.string()),
        passthrough=(FieldSpec("label", pa.int64(), "int64_list"),),
    )
    records = [
        _example(id=b"ok-1", v=[1.0, 2.0, 3.0], label=1),
        _example(id=b"short", v=[1.0, 2.0], label=1),
        _example(id=b"missing", label=0),
        _example(id=b"ints", v=[1.0, 2.0, 3.0], label=[1.0]),
        b"\xff\xfe not a proto",
        _example(id=b"ok-2", v=[4.0, 5.0, 6.0], label=2),
    ]
    decoded, dead = decode_batch(RawBatch("r.tfrecord", "r.tfrecord", 10, serialized=records), schema)
    assert decoded.keys.to_pylist() == ["ok-1", "ok-2"]
    assert decoded.passthrough["label"].to_pylist() == [1, 2]
    np.testing.assert_array_equal(decoded.inputs[0], [[1, 2, 3], [4, 5, 6]])
    assert [(d.key, d.error) for d in dead] == [
        ("short", "feature 'v' has 2 values, expected 3"),
        ("missing", "feature 'v' is missing"),
        ("ints", "feature 'label' is float_list, expected int64_list"),
        ("r.tfrecord:14", dead[3].error),
    ]
    assert dead[3].error.startswith("record is not a serialized tf.train.Example")
    assert dead[0].record == records[1]


def test_all_bad_batch_yields_no_records():
    schema = RecordSchema("parquet", (TABULAR,))
    decoded, dead = decode_batch(RawBatch("x", "x", 0, table=pa.table({"a": [None], "b": [1.0]}, schema=pa.schema([("a", pa.float64()), ("b", pa.float64())]))), schema)
    assert decoded is None and len(dead) == 1


def test_fixed_size_list_column_with_nulls_takes_the_checked_path():
    schema = RecordSchema("parquet", (IMAGE,))
    column = pa.array([[1, 2, 3, 4], None, [1, None, 3, 4], [5, 6, 7, 8]], type=pa.list_(pa.float32(), 4))
    decoded, dead = decode_batch(RawBatch("f", "f", 0, table=pa.table({"pixels": column})), schema)
    np.testing.assert_array_equal(decoded.inputs[0].reshape(2, 4), [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert [d.error for d in dead] == ["column 'pixels' is null", "column 'pixels' holds null values"]


def _sequence_example(context: bytes, feature_lists: bool = True) -> bytes:
    parsed = tf.train.Example.FromString(context)
    lists = {"steps": tf.train.FeatureList(feature=[tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))])}
    message = tf.train.SequenceExample(context=parsed.features)
    if feature_lists:
        message.feature_lists.CopyFrom(tf.train.FeatureLists(feature_list=lists))
    return message.SerializeToString()


def test_sequence_examples_and_other_messages_are_not_examples_even_when_their_features_fit():
    schema = RecordSchema("tfrecord", (ModelInputSpec("v", (3,), (ColumnSpec("v", 3, True),)),), key=FieldSpec("id", pa.string()))
    good = _example(id=b"ok", v=[1.0, 2.0, 3.0])
    other = good + b"\x1a\x02hi"  # an unknown field 3 after a valid Example
    records = [good, _sequence_example(_example(id=b"seq", v=[1.0, 2.0, 3.0])), other]
    decoded, dead = decode_batch(RawBatch("r.tfrecord", "r.tfrecord", 0, serialized=records), schema)
    assert decoded.keys.to_pylist() == ["ok"]
    assert [(d.key, d.error) for d in dead] == [
        ("seq", "record is a tf.train.SequenceExample, not a tf.train.Example (it has feature_lists)"),
        ("ok", "record is not a tf.train.Example (it holds fields an Example does not have)"),
    ]


def test_records_shaped_like_examples_take_the_vectorised_path():
    from transforms.records import _shaped_like_examples

    big = _example(v=[0.5] * 300)  # a multi-byte length varint
    context_only = _sequence_example(_example(v=[1.0]), feature_lists=False)  # the same bytes as an Example
    shaped = _shaped_like_examples([big, b"", context_only, _sequence_example(_example(v=[1.0])), big + b"\x1a\x00"])
    assert shaped.tolist() == [True, True, True, False, False]


def test_equivalent_types_are_read_as_the_first_files_and_values_that_do_not_fit_are_dead_lettered():
    schema = RecordSchema("parquet", (TABULAR,), key=FieldSpec("id", pa.string()), passthrough=(FieldSpec("n", pa.int32()),))
    table = pa.table({
        "a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0],
        "id": pa.array(["x", "y", "z"]).dictionary_encode(),
        "n": pa.array([1, 2**40, 3], pa.int64()),
    })
    assert parquet_schema_problem(table.schema, schema) is None
    decoded, dead = decode_batch(RawBatch("f.parquet", "f.parquet", 0, table=table), schema)
    assert decoded.keys.type == pa.string() and decoded.keys.to_pylist() == ["x", "z"]
    assert decoded.passthrough["n"].type == pa.int32() and decoded.passthrough["n"].to_pylist() == [1, 3]
    assert [(d.key, d.error) for d in dead] == [("y", "column 'n' value 1099511627776 is not within the range of int32 (the column is read as int32)")]


@pytest.mark.parametrize(
    "actual, expected, readable",
    [
        (pa.large_string(), pa.string(), True),
        (pa.dictionary(pa.int32(), pa.string()), pa.large_string(), True),
        (pa.large_binary(), pa.binary(), True),
        (pa.int8(), pa.int64(), True),
        (pa.int64(), pa.int32(), True),  # values checked one by one
        (pa.float32(), pa.float64(), True),
        (pa.float64(), pa.float32(), False),  # would round
        (pa.string(), pa.binary(), False),
        (pa.int64(), pa.string(), False),
    ],
)
def test_which_key_and_passthrough_types_count_as_the_same(actual, expected, readable):
    schema = RecordSchema("parquet", (TABULAR,), key=FieldSpec("id", expected))
    problem = parquet_schema_problem(pa.schema([("a", pa.float32()), ("b", pa.float32()), ("id", actual)]), schema)
    assert (problem is None) == readable, problem


def test_a_tfrecord_key_that_is_not_utf8_dead_letters_its_record_only():
    schema = RecordSchema("tfrecord", (ModelInputSpec("v", (3,), (ColumnSpec("v", 3, True),)),), key=FieldSpec("id", pa.string()))
    records = [_example(id=b"ok", v=[1.0, 2.0, 3.0]), _example(id=b"\xff\xfebad", v=[1.0, 2.0, 3.0])]
    decoded, dead = decode_batch(RawBatch("r.tfrecord", "r.tfrecord", 5, serialized=records), schema)
    assert decoded.keys.to_pylist() == ["ok"]
    assert [(d.key, d.error) for d in dead] == [("r.tfrecord:6", "key column 'id' value b'\\xff\\xfebad' is not valid UTF-8 text (the column is read as string)")]


def test_float64_values_beyond_the_float32_range_are_named_apart_from_infinities():
    schema = RecordSchema("parquet", (IMAGE,))
    pixels = pa.array([[1.0, 2.0, 3.0, 4.0], [1.0, -3.5e38, 3.0, 4.0], [1.0, np.inf, 3.0, 4.0]], pa.list_(pa.float64()))
    decoded, dead = decode_batch(RawBatch("f.parquet", "f.parquet", 0, table=pa.table({"pixels": pixels})), schema)
    assert decoded.inputs[0].dtype == np.float32 and decoded.num_records == 1
    assert [d.error for d in dead] == [
        "column 'pixels' value -3.5e+38 is outside the float32 range (±3.4e38)",
        "column 'pixels' holds NaN or infinite values",
    ]


TOKENS = ModelInputSpec("tokens", (3,), (ColumnSpec("tokens", 3, True, "int64_list", dtype="int64"),), id_range=10, id_layer="emb")


def test_id_columns_are_read_exactly_as_int64_and_bad_ids_dead_letter():
    big = 2**40 + 1  # not exact in float32: ids must not pass through float
    table = pa.table({
        "id": [1, 2, 3, 4],
        "tokens": pa.array([[1, 2, 3], [1, 10, 3], [-1, 0, 0], [4, 5, 6]], pa.list_(pa.int64())),
    })
    schema = RecordSchema("parquet", (TOKENS,), key=FieldSpec("id", pa.int64()))
    decoded, dead = decode_batch(RawBatch("f.parquet", "f.parquet", 0, table=table), schema)
    assert decoded.keys.to_pylist() == [1, 4]
    assert decoded.inputs[0].dtype == np.int64
    np.testing.assert_array_equal(decoded.inputs[0], [[1, 2, 3], [4, 5, 6]])
    assert [(d.key, d.error) for d in dead] == [
        ("2", "column 'tokens' value 10 is out of range [0, 10) of layer 'emb' (the ids model input 'tokens' takes)"),
        ("3", "column 'tokens' value -1 is out of range [0, 10) of layer 'emb' (the ids model input 'tokens' takes)"),
    ]
    unbounded = ModelInputSpec("tokens", (3,), (ColumnSpec("tokens", 3, True, "int64_list", dtype="int64"),))
    table = pa.table({"id": [1, 2], "tokens": pa.array([[big, 0, 1], [1.0, 2.5, 3.0]], pa.list_(pa.float64()))})
    decoded, dead = decode_batch(RawBatch("f.parquet", "f.parquet", 0, table=table), RecordSchema("parquet", (unbounded,), key=FieldSpec("id", pa.int64())))
    assert decoded.inputs[0].tolist() == [[big, 0, 1]]
    assert [(d.key, d.error) for d in dead] == [
        ("2", "column 'tokens' value 2.5 is not a whole-number id (the model input is an integer id)")]


def test_tfrecord_int64_ids_and_bytes_text():
    text = ModelInputSpec("text", (1,), (ColumnSpec("text", 1, False, "bytes_list", dtype="string"),))
    schema = RecordSchema("tfrecord", (TOKENS, text))
    records = []
    for tokens, words in (([1, 2, 3], b"hello world"), ([9, 9, 12], b"bad id")):
        feature = {"tokens": tf.train.Feature(int64_list=tf.train.Int64List(value=tokens)),
                   "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[words]))}
        records.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    decoded, dead = decode_batch(RawBatch("f.tfrecord", "f.tfrecord", 0, serialized=records), schema)
    assert decoded.inputs[0].dtype == np.int64 and decoded.inputs[0].tolist() == [[1, 2, 3]]
    assert decoded.inputs[1].tolist() == [[b"hello world"]]
    assert [(d.key, d.error) for d in dead] == [
        ("f.tfrecord:1", "column 'tokens' value 12 is out of range [0, 10) of layer 'emb' (the ids model input 'tokens' takes)")]


def test_a_dead_letter_keeps_the_first_64_kib_of_a_huge_record_and_says_how_long_it_was():
    from transforms.records import MAX_DEAD_LETTER_RECORD_BYTES, DeadLetter

    row = DeadLetter("k", "f.parquet", b"x" * 3_000_000, "column 'pixels' has 750000 values, expected 6").as_row()
    assert len(row["record"]) == MAX_DEAD_LETTER_RECORD_BYTES == 65_536
    assert row["error"] == "column 'pixels' has 750000 values, expected 6 [record truncated to its first 65,536 of 3,000,000 bytes]"
    small = DeadLetter("k", "f.parquet", b"{}", "why").as_row()
    assert small["record"] == b"{}" and small["error"] == "why"
