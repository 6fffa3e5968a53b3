"""Records in batches: what the reader yields, how a batch is checked and decoded into model inputs.

No Beam import: these are plain functions on Arrow tables and serialized `tf.train.Example`s, called
by the Beam DoFns in `transforms.read` and `transforms.decode`, and by the launcher to read
baselines and background rows.

A batch moves through the pipeline as one element:
  RawBatch (a Parquet record batch, or a string tensor of serialized Examples, from one file)
  -> decode_batch -> DecodedBatch (float32 model inputs, keys, pass-through columns) + DeadLetters.
Per-record work happens only for records that fail a vectorised check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.images import ImageSpec, decode_images

__all__ = [
    "parquet_schema_problem",
    "ColumnSpec",
    "ModelInputSpec",
    "FieldSpec",
    "RecordSchema",
    "RawBatch",
    "DecodedBatch",
    "DeadLetter",
    "decode_batch",
    "not_an_example_reason",
]

TFRECORD_KINDS = ("float_list", "int64_list", "bytes_list")


@dataclass(frozen=True)
class ColumnSpec:
    """A source column (Parquet) or feature (TFRecord) feeding a model input.

    length: values per record (1 for a scalar column); is_list: the source holds a list per record
    (its attribution column is then list<float32>, row-major); kind: the TFRecord feature kind;
    dtype: 'float32' (a float model input), 'int64' (ids for an integer input attributed at a
    layer: read exactly, a non-integer value dead-letters its record) or 'string' (text for a
    string input: Parquet string/list<string>, TFRecord bytes_list; an object array of str/bytes).
    attr_length: attribution values per record when they differ from `length` (a string input
    whose TextVectorization yields T positions); None: `length`.
    image: set for an image column: the source holds one encoded image per record (a TFRecord
    bytes feature or a Parquet binary column), decoded to `length` = H*W*C values (transforms.images).
    """

    name: str
    length: int
    is_list: bool
    kind: str = "float_list"
    # Keyword-only: what a column holds is named at every call site (a positional ImageSpec once
    # landed in `dtype` when fields were added).
    dtype: str = field(default="float32", kw_only=True)
    attr_length: Optional[int] = field(default=None, kw_only=True)
    image: Optional[ImageSpec] = field(default=None, kw_only=True)


@dataclass(frozen=True)
class ModelInputSpec:
    """One model input: its name, per-example shape, and the columns that fill it, in order (one
    tensor column reshaped to `shape`, or several scalar columns stacked into a vector)."""

    name: str
    shape: tuple[int, ...]
    columns: tuple[ColumnSpec, ...]
    # Ids must lie in [0, id_range) (the Embedding's input_dim / CategoryEncoding's num_tokens of
    # layer `id_layer`, which reads this input directly); a record with another id dead-letters.
    id_range: Optional[int] = None
    id_layer: Optional[str] = None
    # The output also carries tokens_<column>: the model's vocabulary token at each position.
    tokens: bool = False


@dataclass(frozen=True)
class FieldSpec:
    """A column copied as it is (key, pass-through) or read as an integer (label).
    arrow_type: its type in the output; kind: its TFRecord feature kind."""

    name: str
    arrow_type: pa.DataType
    kind: str = "bytes_list"


@dataclass(frozen=True)
class RecordSchema:
    """How the records of one run are read and decoded; resolved once on the launcher."""

    input_format: str  # 'parquet' or 'tfrecord'
    model_inputs: tuple[ModelInputSpec, ...]
    key: Optional[FieldSpec] = None  # None: key = "<file>:<record index>"
    passthrough: tuple[FieldSpec, ...] = ()
    label: Optional[FieldSpec] = None  # for target mode 'label'
    num_outputs: int = 1  # labels must lie in [0, num_outputs)
    key_name: str = "key"

    @property
    def source_columns(self) -> tuple[ColumnSpec, ...]:
        return tuple(c for spec in self.model_inputs for c in spec.columns)

    @property
    def read_columns(self) -> list[str]:
        """Every column a reader must read, without repeats, in a stable order."""
        names = [c.name for c in self.source_columns]
        names += [f.name for f in (self.key, self.label, *self.passthrough) if f is not None]
        return list(dict.fromkeys(names))


@dataclass
class RawBatch:
    """Records read from one file: a Parquet table or serialized tf.train.Examples.

    source: the file's path; key_prefix: the file's name in synthesized keys; first_index: the
    record index (in its file) of the batch's first record.
    """

    source: str
    key_prefix: str
    first_index: int
    table: Optional[pa.Table] = None
    serialized: Optional[Sequence[bytes]] = None  # a tf.string tensor (n,), or a list of bytes
    read_error: Optional[str] = None  # set: the batch stands for `unreadable` records it could not read
    unreadable: int = 0
    dead_key: Optional[str] = None  # with read_error: the one dead letter's key when the records cannot be counted ('<file>:*')

    @property
    def num_records(self) -> int:
        if self.read_error is not None:
            return self.unreadable
        return self.table.num_rows if self.table is not None else len(self.serialized)


@dataclass
class DecodedBatch:
    """Valid records of one batch, ready for the model.

    keys: Arrow array (n,); inputs: one float32 (n, *shape) array per model input; passthrough:
    Arrow arrays (n,) by column; labels: int64 (n,) for target mode 'label'.
    """

    keys: pa.Array
    inputs: tuple
    passthrough: dict = field(default_factory=dict)
    labels: Optional[np.ndarray] = None

    @property
    def num_records(self) -> int:
        return len(self.keys)


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be attributed: its key, file, the raw record and why."""

    key: str
    source: str
    record: bytes  # the serialized Example, or the Parquet row as UTF-8 JSON
    error: str

    def as_row(self) -> dict:
        """The dead-letter row; a record longer than MAX_DEAD_LETTER_RECORD_BYTES keeps its first
        bytes only, and the error says how long it was (a dead letter file is for reading)."""
        record, error = self.record, self.error
        if record is not None and len(record) > MAX_DEAD_LETTER_RECORD_BYTES:
            error = f"{error} [record truncated to its first {MAX_DEAD_LETTER_RECORD_BYTES:,} of {len(record):,} bytes]"
            record = record[:MAX_DEAD_LETTER_RECORD_BYTES]
        return {"key": self.key, "source": self.source, "record": record, "error": error}


# The most bytes of a record a dead letter keeps (a 500 MB cell once made a 625 MB dead-letter file).
MAX_DEAD_LETTER_RECORD_BYTES = 1 << 16


DEAD_LETTER_SCHEMA = pa.schema(
    [("key", pa.string()), ("source", pa.string()), ("record", pa.binary()), ("error", pa.string())]
)


def synthesized_keys(raw: RawBatch, rows: np.ndarray) -> pa.Array:
    """'<file>:<index in file>' for the given rows of the batch (vectorised: no per-row Python)."""
    indices = pc.cast(pa.array(np.asarray(rows, dtype=np.int64) + raw.first_index), pa.string())
    return pc.binary_join_element_wise(pa.scalar(f"{raw.key_prefix}:"), indices, pa.scalar(""))


def parquet_schema_problem(arrow_schema: pa.Schema, schema: RecordSchema) -> Optional[str]:
    """Why a Parquet file's columns cannot be read with `schema` (resolved from the first input
    file), or None. Numeric types may differ (they are converted); lists must stay lists, and the
    key, label and pass-through columns must keep their type up to how it is stored (see
    `_readable_as`)."""
    names = set(arrow_schema.names)
    for column in schema.source_columns:
        if column.name not in names:
            return f"column {column.name!r} is missing (the first input file has it)"
        if arrow_schema.names.count(column.name) > 1:
            return f"column {column.name!r} appears {arrow_schema.names.count(column.name)} times (columns are read by name)"
        arrow_type = _plain_type(arrow_schema.field(column.name).type)
        if column.image is not None:
            if not _is_binary_type(arrow_type):
                return f"column {column.name!r} has type {arrow_type}, expected binary (encoded images) as in the first input file"
            continue
        value_type = arrow_type.value_type if _is_list_type(arrow_type) else arrow_type
        if column.dtype == "string":
            fits = _is_text_type(value_type)
            expected = "a list of strings" if column.is_list else "a string"
        else:
            fits = pa.types.is_integer(value_type) or pa.types.is_floating(value_type)
            expected = "a list of numbers" if column.is_list else "a number"
        if _is_list_type(arrow_type) != column.is_list or not fits:
            return f"column {column.name!r} has type {arrow_type}, expected {expected} as in the first input file"
    for f in (schema.key, schema.label, *schema.passthrough):
        if f is None:
            continue
        if f.name not in names:
            return f"column {f.name!r} is missing (the first input file has it)"
        if not _readable_as(arrow_schema.field(f.name).type, f.arrow_type):
            return f"column {f.name!r} has type {arrow_schema.field(f.name).type}, the first input file has {f.arrow_type}"
    return None


def _is_text_type(arrow_type: pa.DataType) -> bool:
    arrow_type = _plain_type(arrow_type)
    return any(check(arrow_type) for check in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary))


def _plain_type(arrow_type: pa.DataType) -> pa.DataType:
    """A dictionary type's value type: dictionary encoding is how a column is stored, not what it holds."""
    return arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type


_SAME_VALUES = ((pa.string(), pa.large_string()), (pa.binary(), pa.large_binary()))


def _readable_as(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a key/label/pass-through column of type `actual` can be read as `expected` (its
    type in the first input file): the same values stored differently (dictionary-encoded,
    string/large_string, binary/large_binary), an integer of any width (a value that does not fit
    dead-letters its record, see `_as_type`), or a float no wider than `expected`."""
    actual, expected = _plain_type(actual), _plain_type(expected)
    if actual == expected or any(actual in group and expected in group for group in _SAME_VALUES):
        return True
    if pa.types.is_integer(actual) and pa.types.is_integer(expected):
        return True
    return pa.types.is_floating(actual) and pa.types.is_floating(expected) and actual.bit_width <= expected.bit_width


# ----------------------------------------------------------------------------------------------
# Column extraction: source column -> (n, length) values plus a per-record reason when invalid.


class _Problems:
    """Collects the first problem found for each bad record of a batch."""

    def __init__(self, num_records: int):
        self.reasons: dict[int, str] = {}
        self.num_records = num_records

    def add(self, rows, message_for_row) -> None:
        for row in np.flatnonzero(rows) if isinstance(rows, np.ndarray) and rows.dtype == bool else rows:
            self.reasons.setdefault(int(row), message_for_row(int(row)))

    def good_mask(self) -> np.ndarray:
        mask = np.ones(self.num_records, dtype=bool)
        if self.reasons:
            mask[list(self.reasons)] = False
        return mask


def _arrow_column(table: pa.Table, name: str) -> pa.Array:
    column = table.column(name)
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    return column.dictionary_decode() if pa.types.is_dictionary(column.type) else column


def _is_binary_type(arrow_type: pa.DataType) -> bool:
    return pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type)


def _image_values(encoded: np.ndarray, spec: ColumnSpec, rows: np.ndarray, problems: _Problems) -> np.ndarray:
    """float32 (n, H*W*C) pixels of the encoded images `encoded` (n,) (bytes, None for null),
    aligned with record indices `rows`; a null, undecodable or wrong-channel image dead-letters its
    record (pixels 0)."""
    present = np.array([e is not None for e in encoded], dtype=bool) if encoded.dtype == object else np.ones(len(encoded), bool)
    problems.add(rows[~present], lambda r: f"column {spec.name!r} is null")
    values = np.zeros((len(encoded), spec.length), dtype=np.float32)
    if present.any():
        pixels, reasons = decode_images(encoded[present] if not present.all() else encoded, spec.image)
        values[present] = pixels.reshape(len(pixels), -1)
        where = np.flatnonzero(present)
        for i, reason in reasons.items():
            problems.add([rows[where[i]]], lambda r, reason=reason: f"column {spec.name!r} {reason}")
    return values


def _is_list_type(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_fixed_size_list(arrow_type)


def _parquet_strings(column: pa.Array, spec: ColumnSpec, problems: _Problems) -> np.ndarray:
    """object (n, length) text of a string or list<string> column; bad rows filled with ''."""
    n = len(column)
    if not _is_list_type(column.type):
        problems.add(column.is_null().to_numpy(zero_copy_only=False), lambda r: f"column {spec.name!r} is null")
        return np.array(column.fill_null("").to_pylist(), dtype=object).reshape(n, 1)
    values = np.full((n, spec.length), "", dtype=object)
    for row, items in enumerate(column.to_pylist()):  # text is per-record Python objects anyway
        if items is None:
            problems.add([row], lambda r: f"column {spec.name!r} is null")
        elif len(items) != spec.length:
            problems.add([row], lambda r, k=len(items): f"column {spec.name!r} has {k} values, expected {spec.length}")
        elif any(v is None for v in items):
            problems.add([row], lambda r: f"column {spec.name!r} holds null values")
        else:
            values[row] = items
    return values


def _parquet_values(table: pa.Table, spec: ColumnSpec, problems: _Problems) -> np.ndarray:
    """float32 (n, length) values of a numeric or list column (int64 ids, or object text, as
    spec.dtype says; the pixels of an image column); bad rows filled with 0."""
    column = _arrow_column(table, spec.name)
    if spec.dtype == "string":
        return _parquet_strings(column, spec, problems)
    n = len(column)
    if spec.image is not None:
        if not _is_binary_type(column.type):
            raise ValueError(f"image column {spec.name!r} holds {column.type} values; expected binary (encoded images).")
        return _image_values(column.to_numpy(zero_copy_only=False), spec, np.arange(n), problems)
    if (
        pa.types.is_fixed_size_list(column.type)
        and column.type.list_size == spec.length
        and column.null_count == 0
        and column.values.null_count == 0
        and column.offset == 0
    ):  # the common case: one zero-copy view, no per-row checks needed
        return _as_values(column.values.to_numpy(zero_copy_only=False).reshape(n, spec.length), spec, problems)
    if _is_list_type(column.type):
        lengths = column.value_lengths().fill_null(-1).to_numpy(zero_copy_only=False)  # (n,)
        problems.add(lengths < 0, lambda r: f"column {spec.name!r} is null")
        problems.add(
            (lengths >= 0) & (lengths != spec.length),
            lambda r: f"column {spec.name!r} has {lengths[r]} values, expected {spec.length}",
        )
        ok = lengths == spec.length
        if not ok.all():
            column = column.filter(pa.array(ok))
        flat = column.flatten()
        if flat.null_count:
            has_null = np.zeros(n, dtype=bool)
            null_positions = np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))
            has_null[np.flatnonzero(ok)[null_positions // spec.length]] = True
            problems.add(has_null, lambda r: f"column {spec.name!r} holds null values")
            flat = flat.fill_null(0)
        if not (pa.types.is_integer(flat.type) or pa.types.is_floating(flat.type)):
            raise ValueError(f"column {spec.name!r} holds {flat.type} values; expected numbers.")
        flat_values = flat.to_numpy(zero_copy_only=False)
        values = np.zeros((n, spec.length), dtype=flat_values.dtype)
        values[ok] = flat_values.reshape(-1, spec.length)
        return _as_values(values, spec, problems)
    problems.add(column.is_null().to_numpy(zero_copy_only=False), lambda r: f"column {spec.name!r} is null")
    return _as_values(column.fill_null(0).to_numpy(zero_copy_only=False).reshape(n, 1), spec, problems)


def _as_values(values: np.ndarray, spec: ColumnSpec, problems: _Problems) -> np.ndarray:
    """(n, length) values as the model input reads them: float32, int64 ids or text (see ColumnSpec)."""
    if spec.dtype == "string":
        return values
    return _as_ids(values, spec, problems) if spec.dtype == "int64" else _as_float32(values, spec, problems)


def _as_ids(values: np.ndarray, spec: ColumnSpec, problems: _Problems) -> np.ndarray:
    """(n, length) values as int64 ids; a float that is not a whole number dead-letters its record."""
    if values.dtype.kind in "iu":
        return values.astype(np.int64, copy=False)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2.0**62)  # (n, length)
    problems.add(
        bad.any(axis=1),
        lambda r: f"column {spec.name!r} value {float(values[r][bad[r]][0])} is not a whole-number id (the model input is an integer id)",
    )
    return np.where(bad, 0, values).astype(np.int64)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


class _RowProblems:
    """Problems of the parsed records `rows` (TFRecord): row i of a parsed array is record rows[i]."""

    def __init__(self, problems: _Problems, rows: np.ndarray):
        self._problems, self._rows = problems, rows

    def add(self, mask: np.ndarray, message_for_row) -> None:
        self._problems.add(self._rows[np.flatnonzero(mask)], lambda r: message_for_row(int(np.searchsorted(self._rows, r))))


def _as_float32(values: np.ndarray, spec: ColumnSpec, problems: _Problems) -> np.ndarray:
    """(n, length) values of one record per row as float32. A finite float64 value beyond the
    float32 range (it would become ±inf) dead-letters its record with the value."""
    if values.dtype.kind == "f" and values.dtype.itemsize > 4:  # integers up to int64 fit the range
        big = (values > _FLOAT32_MAX) | (values < -_FLOAT32_MAX)  # (n, length); ±inf too
        if big.any():
            big &= np.isfinite(values)
            problems.add(
                big.any(axis=1),
                lambda r: f"column {spec.name!r} value {values[r][big[r]][0]:.3g} is outside the float32 range (±3.4e38)",
            )
            with np.errstate(over="ignore"):
                return values.astype(np.float32)
    return values.astype(np.float32, copy=False)


_TF_DTYPES = {"float_list": "float32", "int64_list": "int64", "bytes_list": "string"}


def _parse_examples(serialized, schema: RecordSchema) -> dict:
    """tf.io.parse_example over the whole batch -> numpy arrays by feature name."""
    import tensorflow as tf

    features = {
        c.name: tf.io.FixedLenFeature([], tf.string) if c.image is not None else tf.io.FixedLenFeature([c.length], getattr(tf, _TF_DTYPES[c.kind]))
        for c in schema.source_columns
    }
    for f in (schema.key, schema.label, *schema.passthrough):
        if f is not None:
            features[f.name] = tf.io.FixedLenFeature([], getattr(tf, _TF_DTYPES[f.kind]))
    parsed = tf.io.parse_example(serialized, features)  # a string tensor or a list of bytes
    return {name: tensor.numpy() for name, tensor in parsed.items()}


def try_parse_examples(serialized, schema: RecordSchema) -> Optional[dict]:
    """Features of the whole batch by name, or None when any record fails to parse (the caller
    then finds the bad records one by one)."""
    import tensorflow as tf

    try:
        return _parse_examples(serialized, schema)
    except (tf.errors.InvalidArgumentError, ValueError):
        return None


def _example_problem(serialized: bytes, schema: RecordSchema) -> Optional[str]:
    """The first reason (if any) one serialized Example cannot be parsed with the schema."""
    import tensorflow as tf

    try:
        example = tf.train.Example.FromString(serialized)
    except Exception as error:  # protobuf's DecodeError
        return f"record is not a serialized tf.train.Example ({error})"
    other = not_an_example_reason(serialized, example)
    if other is not None:
        return other
    feature_map = example.features.feature
    expected = [(c.name, "bytes_list", 1) if c.image is not None else (c.name, c.kind, c.length) for c in schema.source_columns]
    expected += [(f.name, f.kind, 1) for f in (schema.key, schema.label, *schema.passthrough) if f is not None]
    for name, kind, length in expected:
        if name not in feature_map:
            return f"feature {name!r} is missing"
        actual_kind = feature_map[name].WhichOneof("kind")
        if actual_kind != kind:
            return f"feature {name!r} is {actual_kind}, expected {kind}"
        actual_length = len(getattr(feature_map[name], kind).value)
        if actual_length != length:
            return f"feature {name!r} has {actual_length} values, expected {length}"
    return None


def not_an_example_reason(serialized: bytes, example=None) -> Optional[str]:
    """Why a record that protobuf parses as a tf.train.Example is none, or None when it is one.

    Protobuf parses any message whose field 1 fits as an Example and keeps the rest as unknown
    fields: a tf.train.SequenceExample parses as an Example of its context features. So a record
    with fields an Example does not have is not an Example. `example`: the record already parsed.
    """
    import tensorflow as tf

    example = tf.train.Example.FromString(serialized) if example is None else example
    size = example.ByteSize()
    example.DiscardUnknownFields()
    if example.ByteSize() == size:
        return None
    try:
        if tf.train.SequenceExample.FromString(serialized).HasField("feature_lists"):
            return "record is a tf.train.SequenceExample, not a tf.train.Example (it has feature_lists)"
    except Exception:  # protobuf's DecodeError: some other message
        pass
    return "record is not a tf.train.Example (it holds fields an Example does not have)"


def _shaped_like_examples(serialized) -> np.ndarray:
    """bool (n,): whether each record is empty or exactly one field-1 entry, as a serialized
    tf.train.Example is. Vectorised over the batch; a record that is not (another message, a
    SequenceExample with feature_lists) takes the per-record check in `_example_problem`."""
    import tensorflow as tf

    lengths = tf.strings.length(serialized).numpy().astype(np.int64)  # (n,)
    head = tf.io.decode_raw(tf.strings.substr(serialized, 0, 6), tf.uint8, fixed_length=6).numpy()  # (n, 6)
    # Field 1, length-delimited: tag byte 0x0a, then the field's length as a varint (<= 5 bytes).
    value = np.zeros(len(lengths), dtype=np.int64)
    size = np.zeros(len(lengths), dtype=np.int64)
    done = np.zeros(len(lengths), dtype=bool)
    for k in range(5):
        byte = head[:, 1 + k].astype(np.int64)
        active = ~done
        value[active] |= (byte[active] & 0x7F) << (7 * k)
        size[active] += 1
        done |= (byte & 0x80) == 0
    return (lengths == 0) | ((head[:, 0] == 0x0A) & done & (1 + size + value == lengths))


def _parse_tfrecord(raw: RawBatch, schema: RecordSchema, problems: _Problems) -> tuple[dict, np.ndarray]:
    """Parses the batch in one call; only when that fails, or a record is not shaped like an
    Example, finds the bad records one by one.
    Returns (features of the good records, indices of the good records)."""
    parsed = try_parse_examples(raw.serialized, schema) if _shaped_like_examples(raw.serialized).all() else None
    if parsed is not None:
        return parsed, np.arange(raw.num_records)
    records = _as_bytes(raw.serialized)
    for i, record in enumerate(records):
        reason = _example_problem(record, schema)
        if reason is not None:
            problems.add([i], lambda r, reason=reason: reason)
    good = np.flatnonzero(problems.good_mask())
    if len(good) == 0:
        return {}, good
    return _parse_examples([records[i] for i in good], schema), good


def _string_or_number_array(values: np.ndarray) -> pa.Array:
    """A parsed feature as Arrow: binary for tf.string values, else the numbers' own type."""
    if values.dtype == object:  # bytes from tf.string
        return pa.array(values.tolist(), type=pa.binary())
    return pa.array(values)


def _as_type(array: pa.Array, spec: FieldSpec, role: str, rows: np.ndarray, problems: _Problems) -> pa.Array:
    """`array` (aligned with `rows`) cast to `spec.arrow_type`. A value that does not fit (bytes
    that are not UTF-8 for a string, an integer out of the type's range) dead-letters its record
    and is null in the result."""
    if array.type == spec.arrow_type:
        return array
    try:
        return array.cast(spec.arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    values = array.to_pylist()  # slow path: a batch holding a value that does not fit
    bad = np.array([v is not None and not _fits(v, spec.arrow_type) for v in values], dtype=bool)
    expected = "valid UTF-8 text" if pa.types.is_string(spec.arrow_type) or pa.types.is_large_string(spec.arrow_type) else f"within the range of {spec.arrow_type}"
    problems.add(
        rows[bad],
        lambda r: f"{role} {spec.name!r} value {values[np.searchsorted(rows, r)]!r} is not {expected} "
        f"(the column is read as {spec.arrow_type})",
    )
    return pc.if_else(pa.array(bad), pa.nulls(len(array), array.type), array).cast(spec.arrow_type)


def _fits(value, arrow_type: pa.DataType) -> bool:
    try:
        pa.array([value]).cast(arrow_type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


# ----------------------------------------------------------------------------------------------


def decode_batch(raw: RawBatch, schema: RecordSchema) -> tuple[Optional[DecodedBatch], list[DeadLetter]]:
    """Checks and decodes a batch. Returns the valid records (None if there are none) and one
    DeadLetter per invalid record, with a reason naming the field and the problem."""
    if raw.dead_key is not None:
        return None, [DeadLetter(raw.dead_key, raw.source, b"", raw.read_error)]
    if raw.read_error is not None:
        first = raw.first_index
        return None, [DeadLetter(f"{raw.key_prefix}:{i}", raw.source, b"", raw.read_error) for i in range(first, first + raw.unreadable)]
    problems = _Problems(raw.num_records)
    if raw.table is not None:
        rows = np.arange(raw.num_records)
        values = {c.name: _parquet_values(raw.table, c, problems) for c in schema.source_columns}
        fields = {f.name: _arrow_column(raw.table, f.name) for f in (schema.key, schema.label, *schema.passthrough) if f}
    else:
        parsed, rows = _parse_tfrecord(raw, schema, problems)
        values = {
            c.name: _image_values(parsed[c.name], c, rows, problems) if c.image is not None
            else _as_values(parsed[c.name], c, _RowProblems(problems, rows))
            for c in schema.source_columns
        } if len(rows) else {}
        fields = {
            f.name: _string_or_number_array(parsed[f.name])
            for f in (schema.key, schema.label, *schema.passthrough)
            if f is not None and len(rows)
        }
    # `values`/`fields` are aligned with `rows` (the records that parsed); problems use record indices.
    roles = {f.name: role for f, role in ((schema.key, "key column"), (schema.label, "label column")) if f is not None}
    for f in (schema.key, schema.label, *schema.passthrough):
        if f is not None and f.name in fields:
            fields[f.name] = _as_type(fields[f.name], f, roles.get(f.name, "column"), rows, problems)
    for name, array in values.items():
        if array.dtype == object:  # text: nothing to be finite
            continue
        finite = np.isfinite(array).all(axis=1)
        problems.add(rows[~finite], lambda r, name=name: f"column {name!r} holds NaN or infinite values")
    for spec in schema.model_inputs:
        if spec.id_range is None:
            continue
        for c in spec.columns:
            ids = values.get(c.name)
            if ids is None:
                continue
            outside = (ids < 0) | (ids >= spec.id_range)  # (n, length)
            problems.add(
                rows[outside.any(axis=1)],
                lambda r, ids=ids, outside=outside, c=c, spec=spec: (
                    f"column {c.name!r} value {ids[np.searchsorted(rows, r)][outside[np.searchsorted(rows, r)]][0]} is out of "
                    f"range [0, {spec.id_range}) of layer {spec.id_layer!r} (the ids model input {spec.name!r} takes)"
                ),
            )
    labels = None
    if schema.label is not None and len(rows):
        label_array = fields[schema.label.name]
        problems.add(rows[label_array.is_null().to_numpy(zero_copy_only=False)], lambda r: f"label column {schema.label.name!r} is null")
        labels = label_array.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        out_of_range = (labels < 0) | (labels >= schema.num_outputs)
        problems.add(
            rows[out_of_range],
            lambda r: f"label column {schema.label.name!r} value {labels[np.searchsorted(rows, r)]} is out of range "
            f"[0, {schema.num_outputs}) of the explained output",
        )
    if schema.key is not None and len(rows):
        key_array = fields[schema.key.name]
        problems.add(rows[key_array.is_null().to_numpy(zero_copy_only=False)], lambda r: f"key column {schema.key.name!r} is null")

    dead = _dead_letters(raw, schema, problems, fields, rows)
    keep = problems.good_mask()[rows]  # over the parsed rows
    if not keep.any():
        return None, dead
    kept_rows = rows[keep]
    take = None if keep.all() else pa.array(np.flatnonzero(keep))

    def pick(array: pa.Array) -> pa.Array:
        return array if take is None else array.take(take)

    inputs = []
    for spec in schema.model_inputs:
        parts = [values[c.name] if keep.all() else values[c.name][keep] for c in spec.columns]
        stacked = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)  # (n, prod(shape))
        inputs.append(np.ascontiguousarray(stacked.reshape(len(kept_rows), *spec.shape)))  # (n, *shape)
    keys = pick(fields[schema.key.name]) if schema.key is not None else synthesized_keys(raw, kept_rows)
    return (
        DecodedBatch(
            keys=keys,
            inputs=tuple(inputs),
            passthrough={f.name: pick(fields[f.name]) for f in schema.passthrough},
            labels=None if labels is None else labels[keep],
        ),
        dead,
    )


def _as_bytes(serialized) -> list:
    """Serialized records as a list of bytes (only on the slow paths: one object per record)."""
    return serialized.numpy().tolist() if hasattr(serialized, "numpy") else list(serialized)


def _dead_letters(raw: RawBatch, schema: RecordSchema, problems: _Problems, fields: dict, rows: np.ndarray) -> list[DeadLetter]:
    letters = []
    records = _as_bytes(raw.serialized) if raw.serialized is not None and problems.reasons else None
    for index in sorted(problems.reasons):
        key = None
        position = np.searchsorted(rows, index)
        in_rows = position < len(rows) and rows[position] == index  # the record parsed
        if schema.key is not None and schema.key.name in fields and in_rows:
            key = fields[schema.key.name][int(position)].as_py()  # None: null, or a value that did not fit
        elif schema.key is not None and raw.serialized is not None:
            key = _key_from_example(records[index], schema.key.name)
        if key is None:
            key = f"{raw.key_prefix}:{raw.first_index + index}"
        if raw.table is not None:
            record = json.dumps(raw.table.slice(index, 1).to_pylist()[0], default=str).encode()
        else:
            record = records[index]
        letters.append(DeadLetter(str(key), raw.source, record, problems.reasons[index]))
    return letters


def _key_from_example(serialized: bytes, name: str) -> Optional[str]:
    """The key feature of a record that failed to parse as a whole, when it can be read."""
    import tensorflow as tf

    try:
        feature = tf.train.Example.FromString(serialized).features.feature[name]
    except Exception:  # not an Example at all
        return None
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else []
    if len(values) != 1:
        return None
    value = values[0]
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
