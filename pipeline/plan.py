"""Resolving a RunConfig into a plan, on the launcher, before any worker starts.

Everything that can be checked without the workers is checked here: the input glob matches files
of one known format, the model loads and its inputs map onto columns of the right length, the
target fits the model's output, the baseline/background files decode. A mistake fails here with a
ValueError that says what is wrong and how to fix it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from attributions.loading import LoadedModel, load_model
from attributions.methods import BASELINE_METHODS, COMPLETENESS_METHODS, PLAYER_METHODS
from audit.summary import FeatureSpec, SummarySpec, TokenFeatureSpec
from pipeline.baselines import ResolvedBaseline, resolve_baseline
from pipeline.config import METHOD_SETTINGS, RunConfig, parse_baseline, parse_layer_baseline
from pipeline.quick_checks import did_you_mean
from pipeline.version import __version__
from transforms.attribute import AttributionSettings, load_reference_rows
from transforms.output import RESERVED_COLUMNS, grad_cam_column_name, output_schema
from transforms.read import detect_format, readable_by_tensorflow, tfrecord_compression
from transforms.images import ImageSpec
from transforms.records import ColumnSpec, FieldSpec, ModelInputSpec, RecordSchema, not_an_example_reason
from transforms.storage import model_storage
from transforms.tfrecord_lengths import first_impossible_length

__all__ = ["RunPlan", "LayerChoice", "resolve_plan", "match_files", "summary_spec", "describe_mapping", "resolve_layers"]



@dataclass(frozen=True)
class RunPlan:
    """A validated run: the config, the matched input files and the workers' settings."""

    config: RunConfig
    input_files: tuple[str, ...]
    input_format: str
    settings: AttributionSettings
    model_fingerprint: str
    # Where the pipeline writes: a staging directory inside the output that run_attribution moves
    # into place once the run is over (None: the output directory itself).
    staging_dir: Optional[str] = None
    # Model inputs attributed at a layer's output (attributions.layers), with why that layer.
    layers: tuple["LayerChoice", ...] = ()
    # Integrated gradients' baseline as the manifest describes it (pipeline.baselines), and the
    # launch warning when it lies far from the data.
    baseline: Optional[dict] = None
    baseline_warning: Optional[str] = None
    # The quality audit's results (pipeline.quality), summary.json's and the manifest's `quality`;
    # None: not run (quality_rows 0, or a plan not launched by run_attribution).
    quality: Optional[dict] = None

    @property
    def schema(self) -> RecordSchema:
        return self.settings.schema

    @property
    def write_dir(self) -> str:
        return self.staging_dir or self.config.output

    def output_path(self, name: str) -> str:
        return FileSystems.join(self.write_dir, name)


def match_files(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """Expands globs (any Beam filesystem); a pattern matching nothing is an error. Local
    patterns are made absolute first: Beam's local match finds nothing for a bare '*.parquet'."""
    files: list[str] = []
    absolute = [p if "://" in p else os.path.abspath(p) for p in patterns]
    for pattern, result in zip(patterns, FileSystems.match(absolute)):
        matched = sorted(m.path for m in result.metadata_list)
        if not matched:
            raise ValueError(f"input pattern {pattern!r} matches no files; check the path and the glob.")
        files.extend(matched)
    return tuple(dict.fromkeys(files))


# ----------------------------------------------------------------------------------------------
# What the input offers: column name -> (kind, length, arrow type).


@dataclass(frozen=True)
class _SourceColumn:
    name: str
    numeric: bool
    is_list: bool
    length: Optional[int]  # None: a variable-length list (checked per record)
    arrow_type: pa.DataType
    kind: str = ""  # TFRecord feature kind


def _parquet_catalog(path: str) -> dict[str, _SourceColumn]:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        try:
            schema = pq.ParquetFile(handle).schema_arrow
        except (OSError, pa.ArrowException) as error:
            raise ValueError(
                f"cannot read the Parquet footer of {path!r}, the first input file, to learn the columns "
                f"({type(error).__name__}: {str(error).strip().splitlines()[0]}); replace or remove the file, "
                f"or list a readable file first."
            ) from None
    repeated = sorted({name for name in schema.names if schema.names.count(name) > 1})
    if repeated:
        raise ValueError(
            f"the first input file {path!r} has several columns named {repeated[0]!r} ({len(repeated)} repeated name(s): "
            f"{repeated[:5]}); columns are read by name, so each must be unique. Rename or drop the repeated columns."
        )
    catalog = {}
    for f in schema:
        t = f.type.value_type if pa.types.is_dictionary(f.type) else f.type  # dictionary encoding is storage
        if pa.types.is_fixed_size_list(t) or pa.types.is_list(t) or pa.types.is_large_list(t):
            value_type = t.value_type
            numeric = pa.types.is_integer(value_type) or pa.types.is_floating(value_type)
            length = t.list_size if pa.types.is_fixed_size_list(t) else None
            catalog[f.name] = _SourceColumn(f.name, numeric, True, length, t)
        else:
            numeric = pa.types.is_integer(t) or pa.types.is_floating(t)
            catalog[f.name] = _SourceColumn(f.name, numeric, False, 1, t)
    return catalog


def _tfrecord_catalog(paths: tuple[str, ...]) -> dict[str, _SourceColumn]:
    """Features of the first record of the first non-empty file (empty files are skipped)."""
    import tensorflow as tf

    example = None
    for path in paths:
        try:
            first = _first_records(path)
            example = tf.train.Example.FromString(first[0]) if first else None
            other = not_an_example_reason(first[0], example) if first else None
        except Exception as error:  # DataLossError, protobuf DecodeError
            raise ValueError(
                f"cannot read the first record of {path!r} to learn the features ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[0]}); is it a TFRecord file (plain, GZIP or ZLIB) of tf.train.Example?"
            ) from None
        if other is not None:
            raise ValueError(f"the first record of {path!r} cannot be read as features: {other}; the input must be tf.train.Example records.")
        if example is not None:
            break
    if example is None:
        raise ValueError(f"the input files hold no records ({len(paths)} files, all empty); nothing to attribute.")
    catalog = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        length = len(getattr(feature, kind).value) if kind else 0
        arrow_type = {"float_list": pa.float32(), "int64_list": pa.int64(), "bytes_list": pa.string()}.get(kind, pa.string())
        catalog[name] = _SourceColumn(name, kind in ("float_list", "int64_list"), length != 1, length, arrow_type, kind or "bytes_list")
    return catalog


def _first_records(path: str) -> list[bytes]:
    """[the first record] of a TFRecord file ([] when it is empty). A file in a bucket is read from
    a local copy of its first 64 MiB (of the whole file when its first record is longer)."""
    import tensorflow as tf

    def first(local: str) -> list[bytes]:
        compression = tfrecord_compression(local)
        impossible = first_impossible_length(local, compression, max_records=1)  # TensorFlow must never read it
        if impossible is not None:
            raise ValueError(f"{impossible[1]} (a damaged or hostile length header)")
        return list(tf.data.TFRecordDataset([local], compression).take(1).as_numpy_iterator())

    if "://" in path:
        with readable_by_tensorflow(path, 64 << 20) as local:
            try:
                return first(local)
            except (tf.errors.DataLossError, ValueError):
                pass  # a first record longer than the copy: read the whole file
    with readable_by_tensorflow(path) as local:
        return first(local)


def _holds_bytes(column: _SourceColumn) -> bool:
    """A column of raw bytes (Parquet binary, a TFRecord bytes_list feature): encoded images, often."""
    if column.kind:
        return column.kind == "bytes_list" and not column.is_list
    return not column.is_list and (pa.types.is_binary(column.arrow_type) or pa.types.is_large_binary(column.arrow_type))


def _describe(catalog: dict[str, _SourceColumn]) -> str:
    parts = []
    for c in catalog.values():
        kind = "list of " + str(c.length or "n") if c.is_list else "bytes" if _holds_bytes(c) else "scalar" if c.numeric else "text"
        parts.append(f"{c.name} ({kind})")
    return ", ".join(parts[:40]) + (" ..." if len(parts) > 40 else "")


def _image_hint(shape: tuple, config: RunConfig, catalog: dict[str, _SourceColumn]) -> str:
    """For an (H, W, C) model input and a bytes column not yet declared an image: the --image flag."""
    if len(shape) != 3:
        return ""
    taken = {config.key_column, *config.passthrough_columns, *config.slice_columns, *config.images}
    columns = [c.name for c in catalog.values() if _holds_bytes(c) and c.name not in taken]
    if not columns:
        return ""
    columns.sort(key=lambda name: not any(word in name.lower() for word in ("image", "img", "png", "jp", "photo", "picture", "encoded")))
    height, width, channels = shape
    return (f" Column {columns[0]!r} holds bytes: if they are encoded PNG/JPEG images, pass "
            f"--image '{columns[0]}:{height}x{width}x{channels}' (docs/images.md).")


@dataclass(frozen=True)
class LayerChoice:
    """A model input attributed at a layer's output: which layer, why, and what it implies.

    positions: attribution values per record (the layer's output shape without its last axis);
    id_range: ids the input may hold, [0, id_range), when the layer reads the input directly
    (Embedding input_dim, CategoryEncoding num_tokens); None otherwise.
    """

    input: str
    layer: str
    reason: str
    positions: int
    id_range: Optional[int] = None
    # tokens_<column> from the vocabulary of this lookup layer (StringLookup, TextVectorization, ...)
    vocabulary_layer: Optional[str] = None

    def describe(self) -> dict[str, Any]:
        return {"input": self.input, "layer": self.layer, "reason": self.reason, "positions": self.positions,
                "id_range": self.id_range, "vocabulary_layer": self.vocabulary_layer}


def resolve_layers(config: RunConfig, model: LoadedModel) -> tuple[LayerChoice, ...]:
    """The layers the run attributes at: config.layers, else for each integer/string model input
    the first float layer after it (attributions.layers.default_layers); () for a float model
    without layers. Splits the model there once, so an unsplittable choice fails here. grad_cam:
    () (its one layer is the convolutional layer it reads: _grad_cam_parameters)."""
    from attributions.layers import default_layers, id_range, is_float_dtype, token_lookup, vocabulary_layer

    if config.method == "grad_cam":
        return ()

    non_float = [(n, d) for n, d in zip(model.input_names, model.input_dtypes) if not is_float_dtype(d)]
    if not config.layers and not non_float:
        return ()
    if model.kind != "keras":
        what = f"layers {list(config.layers)} were requested" if config.layers else (
            f"model input {non_float[0][0]!r} has dtype {non_float[0][1]}, which has no gradient and is attributed at "
            f"the first float layer after it (its Embedding)")
        raise ValueError(
            f"{what}, but {config.model!r} is a SavedModel, which has no layer graph to split there. Pass the Keras "
            f"(.keras) file the SavedModel was exported from, or a model whose inputs are floats."
        )
    if config.layers:
        names = config.layers
        reasons = {n: "given with --layer (config key 'layers')" for n in names}
    else:
        defaults = default_layers(model._keras_model)
        names = tuple(defaults.values())
        reasons = {
            layer: f"default: the first float layer after model input {name!r} ({dict(non_float)[name]})"
            for name, layer in defaults.items()
        }
    split, _ = model.layer_functions(names, config.output_name, config.explain_logits)
    choices = []
    for layer, name, shape in zip(split.layer_names, split.replaced_inputs, split.activation_shapes):
        positions = math.prod(shape[:-1]) if len(shape) > 1 else 1
        size = math.prod(model.input_shapes[model.input_names.index(name)])
        vocabulary = token_lookup(model._keras_model, layer) is not None
        text = model.input_dtypes[model.input_names.index(name)] == "string"
        if positions != size and not (text and vocabulary):
            raise ValueError(
                f"layer {layer!r} outputs shape {shape}: {positions} position(s) once its last axis is summed, but model "
                f"input {name!r} holds {size} values per record, so its attributions would not line up with the input's "
                f"positions. Pick a layer that keeps one row per input position (e.g. the input's Embedding)."
            )
        lookup = vocabulary_layer(model._keras_model, layer) if vocabulary else None
        choices.append(LayerChoice(name, layer, reasons[layer], positions, id_range(model._keras_model, layer),
                                   lookup[0].name if lookup else None))
    return tuple(choices)


def _map_model_inputs(
    model: LoadedModel, config: RunConfig, catalog: dict[str, _SourceColumn], layers: tuple[LayerChoice, ...] = ()
) -> tuple[ModelInputSpec, ...]:
    unknown = sorted(set(config.inputs) - set(model.input_names))
    if unknown:
        raise ValueError(f"inputs maps {unknown}, which the model does not have; its inputs are {list(model.input_names)}.")
    at_layer = {choice.input: choice for choice in layers}
    specs = []
    for name, shape, dtype in zip(model.input_names, model.input_shapes, model.input_dtypes):
        is_float = "float" in dtype or "half" in dtype or "bfloat" in dtype
        if not is_float and name in at_layer and "int" not in dtype and dtype != "string":
            raise ValueError(
                f"model input {name!r} has dtype {dtype}; only float, integer id and string inputs can be read. "
                f"Feed the model integer ids or strings."
            )
        if not is_float and name not in at_layer:
            raise ValueError(
                f"model input {name!r} has dtype {dtype}; gradients are defined only for floating-point "
                f"inputs. Attribute a model whose inputs are floats (e.g. embed categorical values "
                f"outside the model or explain a sub-model that starts at the embedding output)."
            )
        size = math.prod(shape)
        value_dtype = "float32" if is_float else "string" if dtype == "string" else "int64"
        columns = _columns_for(name, shape, config, catalog, model.input_names)
        hint = (
            f"map it in the config (inputs: {{{name}: COLUMN}} or inputs: {{{name}: [COL1, COL2, ...]}}) or "
            f"with --inputs {name}=COLUMN[,COLUMN...] or a glob --inputs {name}='PREFIX*'. Input columns: {_describe(catalog)}"
        )
        if isinstance(columns, str):
            if columns not in catalog:
                raise ValueError(
                    f"model input {name!r} (shape {shape}) matches no input column {columns!r}{did_you_mean(columns, catalog)}"
                    f"{_candidates_note(name, shape, config, catalog, model.input_names)}; {hint}.{_image_hint(tuple(shape), config, catalog)}"
                )
            source = catalog[columns]
            if columns in config.images:
                specs.append(ModelInputSpec(name, tuple(shape), (_image_column(name, tuple(shape), source, config.images[columns]),)))
                continue
            _check_column_type(source, value_dtype)
            if source.is_list:
                if source.length is not None and source.length != size:
                    raise ValueError(
                        f"column {columns!r} holds {source.length} values per record but model input {name!r} "
                        f"has shape {shape} ({size} values); {hint}"
                    )
                column_specs = (ColumnSpec(columns, size, True, source.kind or "float_list", dtype=value_dtype),)
            else:
                if size != 1:
                    raise ValueError(
                        f"column {columns!r} is a scalar but model input {name!r} has shape {shape} ({size} "
                        f"values); map a list column or {size} scalar columns to it. {hint}"
                    )
                column_specs = (ColumnSpec(columns, 1, False, source.kind or "float_list", dtype=value_dtype),)
        else:
            missing = [c for c in columns if c not in catalog]
            if missing:
                raise ValueError(f"model input {name!r} is mapped to columns {missing} that the input lacks; {hint}")
            if len(columns) != size:
                raise ValueError(
                    f"model input {name!r} has shape {shape} ({size} values) but is mapped to {len(columns)} columns; {hint}"
                )
            for c in columns:
                _check_column_type(catalog[c], value_dtype)
                if catalog[c].is_list:
                    raise ValueError(f"column {c!r} is a list; a model input mapped to several columns needs scalar columns.")
            column_specs = tuple(ColumnSpec(c, 1, False, catalog[c].kind or "float_list", dtype=value_dtype) for c in columns)
        choice = at_layer.get(name)
        id_range = choice.id_range if choice is not None and not is_float else None
        if choice is not None and choice.positions != size:  # text: T positions from one string
            if len(column_specs) != 1:
                raise ValueError(
                    f"model input {name!r} is attributed at {choice.positions} positions of layer {choice.layer!r}; map it "
                    f"to one column (--inputs {name}=COLUMN), not {len(column_specs)}."
                )
            column_specs = (dataclasses.replace(column_specs[0], attr_length=choice.positions),)
        tokens = choice is not None and choice.vocabulary_layer is not None
        specs.append(ModelInputSpec(name, tuple(shape), column_specs, id_range, choice.layer if id_range else None, tokens))
    used = {c.name for spec in specs for c in spec.columns}
    unused = sorted(set(config.images) - used)
    if unused:
        raise ValueError(
            f"images configures column(s) {unused}, which no model input reads (model inputs: "
            f"{ {s.name: [c.name for c in s.columns] for s in specs} }); map one with --inputs INPUT=COLUMN (inputs: {{INPUT: COLUMN}}), or drop it from images."
        )
    return tuple(specs)


def _image_column(name: str, shape: tuple, source: _SourceColumn, image: ImageSpec) -> ColumnSpec:
    """The ColumnSpec of an image column feeding model input `name`: the column must hold one
    byte string per record and the model input must have the decoded shape (H, W, C)."""
    binary = (source.kind == "bytes_list" and source.length == 1) if source.kind else (
        pa.types.is_binary(source.arrow_type) or pa.types.is_large_binary(source.arrow_type)
    )
    if not binary:
        held = f"a TFRecord {source.kind} feature with {source.length} values" if source.kind else f"type {source.arrow_type}"
        raise ValueError(
            f"image column {source.name!r} holds {held}; an image column must hold one encoded image (JPEG/PNG bytes) per "
            f"record: a TFRecord bytes feature or a Parquet binary column. Drop it from images to read it as numbers."
        )
    if tuple(shape) != image.shape:
        raise ValueError(
            f"image column {source.name!r} is decoded to {image.shape[0]}x{image.shape[1]}x{image.shape[2]} (size "
            f"[{image.height}, {image.width}], channels {image.channels}) but model input {name!r} has shape {tuple(shape)}; "
            f"set images.{source.name}.size/channels to the model's (--image {source.name}:"
            f"{'x'.join(str(d) for d in shape) if len(shape) == 3 else 'HxWxC'})."
        )
    return ColumnSpec(source.name, math.prod(shape), True, "bytes_list", image=image)


def _columns_for(
    name: str, shape: tuple, config: RunConfig, catalog: dict[str, _SourceColumn], model_inputs: tuple[str, ...]
) -> Union[str, tuple[str, ...]]:
    """The column(s) model input `name` reads: as mapped (a glob such as 'f*' expands to the
    matching columns in file order), else the column of its own name, else, for a (k,) input,
    the k numeric scalar columns that are not the key, pass-through, label or slice columns."""
    mapped = config.inputs.get(name)
    if mapped is not None:
        return _expand_globs(name, mapped, catalog)
    if name not in catalog and len(shape) == 3 and len(model_inputs) == 1 and len(config.images) == 1:
        return next(iter(config.images))  # one image input, one image column
    if name in catalog or len(shape) != 1:
        return name
    candidates = _tabular_candidates(config, catalog, model_inputs)
    # Only one model input may claim the remaining columns, and only when their count fits exactly.
    unmapped = [n for n in model_inputs if n not in config.inputs and n not in catalog]
    if len(candidates) != shape[0] or len(unmapped) != 1:
        return name  # the caller explains what the input offers and how to map it
    return candidates


# Columns named like a label are never read as features by default (map them explicitly to use one):
# a file with a 'label' column beside its 13 features would otherwise offer 14 for a 13-wide input.
LABEL_LIKE_COLUMNS = ("label", "labels", "target", "y", "class")


def _label_like(name: str) -> bool:
    return name.lower() in LABEL_LIKE_COLUMNS


def _tabular_candidates(config: RunConfig, catalog: dict[str, _SourceColumn], model_inputs: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Numeric scalar columns that are not the key, pass-through, label (or named like one) or
    slice columns, nor read by another model input (the column of its own name, or mapped to
    it), in file order."""
    mapped = [c for columns in config.inputs.values() for c in ((columns,) if isinstance(columns, str) else columns)]
    taken = {config.key_column, *config.passthrough_columns, *config.slice_columns, config.target_spec().column,
             *(n for n in model_inputs if n in catalog), *mapped, *config.images}
    return tuple(c.name for c in catalog.values() if c.numeric and not c.is_list and c.name not in taken and not _label_like(c.name))


def _candidates_note(name: str, shape: tuple, config: RunConfig, catalog: dict[str, _SourceColumn],
                     model_inputs: tuple[str, ...] = ()) -> str:
    if name in config.inputs or len(shape) != 1:
        return ""
    candidates = _tabular_candidates(config, catalog, model_inputs)
    shown = ", ".join(candidates[:8]) + (", ..." if len(candidates) > 8 else "")
    labels = [c for c in catalog if _label_like(c)]
    left_out = f"; left out as label-like: {', '.join(labels)}" if labels else ""
    return (
        f" (and the input has {len(candidates)} numeric scalar columns that are not key, pass-through, label or slice "
        f"columns nor read by another model input{': ' + shown if candidates else ''}; read by default only when there are exactly {shape[0]}{left_out})"
    )


def describe_mapping(schema: RecordSchema) -> dict[str, list[str]]:
    """Model input -> the columns it reads, in order (recorded in the manifest)."""
    return {spec.name: [c.name for c in spec.columns] for spec in schema.model_inputs}


def _expand_globs(name: str, mapped: Union[str, tuple[str, ...]], catalog: dict[str, _SourceColumn]) -> Union[str, tuple[str, ...]]:
    patterns = (mapped,) if isinstance(mapped, str) else mapped
    if not any(_is_glob(p) for p in patterns):
        return mapped
    columns: list[str] = []
    for pattern in patterns:
        if not _is_glob(pattern):
            columns.append(pattern)
            continue
        matched = [c for c in catalog if fnmatch.fnmatchcase(c, pattern) and c not in columns]
        if not matched:
            raise ValueError(f"inputs[{name!r}] pattern {pattern!r} matches no input column. Input columns: {_describe(catalog)}")
        columns += matched
    return tuple(columns)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _check_column_type(source: _SourceColumn, value_dtype: str) -> None:
    """A model input's column holds numbers, or text for a string input (attributed at a layer)."""
    if value_dtype == "string":
        value_type = source.arrow_type.value_type if source.is_list and hasattr(source.arrow_type, "value_type") else source.arrow_type
        if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type) or pa.types.is_binary(value_type)
                or pa.types.is_large_binary(value_type)):
            raise ValueError(
                f"column {source.name!r} has type {source.arrow_type}; a string model input needs text (string/binary, "
                f"a list of them, or a TFRecord bytes_list)."
            )
        return
    _check_numeric(source)


def _check_numeric(source: _SourceColumn) -> None:
    if not source.numeric:
        raise ValueError(
            f"column {source.name!r} has type {source.arrow_type}; a model input needs numbers "
            f"(float/int, or a list of them)."
        )


def _field(catalog: dict[str, _SourceColumn], name: str, role: str) -> FieldSpec:
    if name not in catalog:
        raise ValueError(f"{role} {name!r} is not a column of the input{did_you_mean(name, catalog)}. Input columns: {_describe(catalog)}")
    source = catalog[name]
    if source.kind and source.is_list:
        raise ValueError(f"{role} {name!r} is a TFRecord feature with {source.length} values; it must hold one value.")
    return FieldSpec(name, source.arrow_type, source.kind or "bytes_list")


def _plain_value_field(catalog: dict[str, _SourceColumn], name: str, role: str) -> FieldSpec:
    """A key or slice column: one plain value per record (keys are compared, slices grouped by)."""
    spec = _field(catalog, name, role)
    arrow_type = spec.arrow_type.value_type if pa.types.is_dictionary(spec.arrow_type) else spec.arrow_type
    if pa.types.is_nested(arrow_type):
        raise ValueError(
            f"{role} {name!r} has type {arrow_type}; a {role} must hold one plain value per record (a string, a number or "
            f"a boolean), not a list or a struct. Choose another column, or flatten this one into a plain column."
        )
    return spec


def _record_schema(
    config: RunConfig, model: LoadedModel, input_format: str, catalog: dict, num_outputs: int, layers: tuple[LayerChoice, ...] = ()
) -> RecordSchema:
    # The named columns before the model inputs: a mistyped key would otherwise be read as a
    # feature, and the error name the model input instead of the key.
    key = _plain_value_field(catalog, config.key_column, "key column") if config.key_column else None
    for column in config.slice_columns:
        _plain_value_field(catalog, column, "slice column")
    passthrough = tuple(_field(catalog, c, "pass-through column") for c in config.passthrough_columns)
    passthrough += tuple(
        _field(catalog, c, "slice column") for c in _extra_slice_columns(config)
    )  # slices are summarized from the output rows, so they are copied there
    target = config.target_spec()
    label = None
    if target.mode == "label":
        label = _field(catalog, target.column, "label column")
        if not pa.types.is_integer(label.arrow_type):
            raise ValueError(f"label column {target.column!r} has type {label.arrow_type}; target labels must be integers.")
    model_inputs = _map_model_inputs(model, config, catalog, layers)
    key_name = config.key_column or "key"
    attribution_columns = {f"attr_{c.name}" for spec in model_inputs for c in spec.columns}
    if config.method == "grad_cam":
        attribution_columns |= {grad_cam_column_name(c.name) for spec in model_inputs for c in spec.columns}
    attribution_columns |= {f"tokens_{spec.columns[0].name}" for spec in model_inputs if spec.tokens}
    names = [key_name, *config.passthrough_columns, *_extra_slice_columns(config)]
    clashes = sorted({n for n in names if n in RESERVED_COLUMNS or n in attribution_columns} | {n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(
            f"column name(s) {clashes} would clash in the output (reserved: {list(RESERVED_COLUMNS)} and "
            f"attr_<column>, or repeated); rename them or leave them out of the key/pass-through columns."
        )
    return RecordSchema(input_format, model_inputs, key, passthrough, label, num_outputs, key_name)


def _extra_slice_columns(config: RunConfig) -> tuple[str, ...]:
    """Slice columns not already in the output as the key or a pass-through column."""
    present = {config.key_column, *config.passthrough_columns}
    return tuple(c for c in dict.fromkeys(config.slice_columns) if c not in present)


def summary_spec(config: RunConfig, schema: RecordSchema, token_features: tuple[TokenFeatureSpec, ...] = ()) -> Optional[SummarySpec]:
    """What the run summarizes, or None when summaries are off. token_features: the inputs of
    token/category ids or text attributed at a layer (`token_feature_specs`)."""
    if not config.summaries:
        return None
    features = []
    for spec in schema.model_inputs:
        for column in spec.columns:
            if column.attr_length is not None:  # text attributed at T positions
                shape: tuple[int, ...] = (column.attr_length,)
            elif not column.is_list:
                shape = ()
            else:
                shape = tuple(spec.shape) if len(spec.columns) == 1 else (column.length,)
            features.append(FeatureSpec(column.name, column.attr_length or column.length, shape))
    return SummarySpec(
        features=tuple(features),
        path_method=config.method in COMPLETENESS_METHODS,
        slice_columns=tuple(dict.fromkeys(config.slice_columns)),
        sample_size=config.summary_sample_size,
        completeness_threshold=float(config.completeness_threshold),
        max_slice_values=config.max_slice_values,
        adaptive=config.method == "integrated_gradients" and config.completeness_target is not None,
        token_features=token_features,
        bootstrap_replicates=config.bootstrap_replicates,
    )


def token_feature_specs(model: LoadedModel, schema: RecordSchema, layers: tuple[LayerChoice, ...],
                        vocabularies: Optional[Mapping[str, tuple[str, ...]]] = None) -> tuple[TokenFeatureSpec, ...]:
    """The id/text inputs attributed at a layer, for the summaries' token view: each one's
    vocabulary (a lookup layer's, when the model holds one, else the user's `vocabularies` entry
    for its column) and padding id (the vocabulary's '' entry, or 0 for an Embedding with
    mask_zero reading the ids). A vocabulary given for any other column is refused."""
    from attributions.layers import token_lookup

    features = []
    given = dict(vocabularies or {})
    by_input = {choice.input: choice for choice in layers}
    for index, spec in enumerate(schema.model_inputs):
        choice = by_input.get(spec.name)
        if choice is None or len(spec.columns) != 1 or spec.columns[0].dtype not in ("int64", "string"):
            continue
        lookup = token_lookup(model._keras_model, choice.layer)
        vocabulary = tuple(str(t) for t in lookup.vocabulary) if lookup is not None else None
        column = spec.columns[0].name
        if column in given:
            if vocabulary is not None or spec.columns[0].dtype != "int64":
                raise ValueError(f"--vocabulary {column}=...: the model holds its own vocabulary for {column!r} "
                                 f"({'a lookup layer' if vocabulary is not None else 'text'}), which names its tokens already; drop it.")
            vocabulary = given.pop(column)
        padding = None
        if vocabulary is not None and "" in vocabulary:
            padding = vocabulary.index("")
        elif vocabulary is None and getattr(model._keras_model.get_layer(choice.layer), "mask_zero", False):
            padding = 0
        if vocabulary is None and spec.columns[0].dtype == "string":
            continue  # text without a vocabulary layer: no ids to total
        features.append(TokenFeatureSpec(spec.columns[0].name, index, vocabulary, padding))
    if given:
        ids = [f.name for f in features] or "none"
        raise ValueError(f"--vocabulary names column(s) {sorted(given)}, which are not integer id inputs attributed at a layer "
                         f"(those of this run: {ids}); a vocabulary names the categories/tokens of such a column.")
    return tuple(features)


def _check_output_dtype(model: LoadedModel, output_name: Optional[str]) -> None:
    index = model.output_index(output_name)
    dtype = model.output_dtypes[index] if model.output_dtypes else "float32"
    if not ("float" in dtype or "half" in dtype):
        raise ValueError(
            f"model output {model.output_names[index]!r} has dtype {dtype}; the gradient of an integer "
            f"output is zero or undefined (it is piecewise constant), so every attribution would be 0. "
            f"Explain a floating-point output instead: the scores or probabilities before the argmax/cast "
            f"(export them as an output and pick it with --output-name)."
        )


def _check_target(config: RunConfig, num_outputs: int) -> None:
    target = config.target_spec()
    if target.mode == "index" and target.index >= num_outputs:
        raise ValueError(f"target index {target.index} is out of range: the explained output has {num_outputs} values (0..{num_outputs - 1}).")
    if target.mode == "top_k" and target.k > num_outputs:
        raise ValueError(f"top_k {target.k} exceeds the {num_outputs} values of the explained output.")
    if target.mode == "top_k":
        _check_top_k_memory(config, target.k, num_outputs)


def _method_params(config: RunConfig, at_layers: bool = False) -> dict[str, Any]:
    """The method's own settings with defaults filled in (the IG baseline is recorded apart; the
    completeness target and max_steps only when the target is set, and the layer baseline only
    for a run at layers, so a fixed-step run's metadata is what it was before them)."""
    adaptive = () if config.completeness_target is None else ("completeness_target", "max_steps")
    return {
        name: config.setting(name) for name in METHOD_SETTINGS.get(config.method, {})
        if name != "baseline" and (name not in ("completeness_target", "max_steps") or name in adaptive)
        and (name != "layer_baseline" or at_layers)
    }


# A top_k batch holds every output row's scores: batch_size x k rows of num_outputs float32. Past
# this many times the gradient calls' budget (chunk_memory_mib), a batch is refused at launch
# (top_k:100000 on a 100k-class model asked for 1.82 TiB in the workers).
_TOP_K_BUDGET_FACTOR = 4


def _check_top_k_memory(config: RunConfig, k: int, num_outputs: int) -> None:
    budget = config.chunk_memory_mib * _TOP_K_BUDGET_FACTOR * 2**20
    per_record = k * num_outputs * 4  # bytes of scores per input record
    if config.batch_size * per_record > budget:
        fits = budget // per_record
        hint = f"lower --batch-size to {fits} or less, or " if fits >= 1 else ""
        raise ValueError(
            f"top_k {k} on an output of {num_outputs:,} values makes {config.batch_size * k:,} output rows per batch of "
            f"{config.batch_size} records, holding {config.batch_size * per_record / 2**30:.1f} GiB of scores, more than "
            f"{budget / 2**30:.1f} GiB ({_TOP_K_BUDGET_FACTOR} x chunk_memory_mib); {hint}lower k."
        )


def _grad_cam_parameters(model: LoadedModel, config: RunConfig, schema: RecordSchema) -> dict[str, Any]:
    """grad_cam: the layer it reads (checked here: a Keras model with one (H, W, C) input and a
    4-D layer before the output) and that layer's output shape (h, w, K)."""
    if len(schema.model_inputs) != 1 or len(schema.model_inputs[0].shape) != 3 or len(schema.model_inputs[0].columns) != 1:
        shapes = {spec.name: spec.shape for spec in schema.model_inputs}
        raise ValueError(
            f"grad_cam explains a model with one image input (height, width, channels) read from one column; this model's "
            f"inputs are {shapes}. Use another method (e.g. integrated_gradients) for it."
        )
    cam = model.grad_cam(config.layers[0] if config.layers else None, config.output_name, config.explain_logits)
    return {"layer": cam.layer_name, "layer_shape": list(cam.layer_shape)}


def _player_parameters(model: LoadedModel, config: RunConfig, schema: RecordSchema, layers: list) -> dict[str, Any]:
    """The model-agnostic methods' players, checked here (groups name input columns; a sliding
    window fits one image input): their count, and for the manifest up to 20 of their names."""
    from transforms.players import run_player_layout

    if config.method == "occlusion" and config.window is not None:
        images = [spec for spec in schema.model_inputs if len(spec.shape) == 3]
        if layers or len(schema.model_inputs) != 1 or not images:
            raise ValueError(f"occlusion with a sliding window (window, stride) occludes one image input (height, width, channels); this "
                             f"model's inputs are {({s.name: s.shape for s in schema.model_inputs})}. Drop --window/--stride to occlude "
                             f"each player (column, group, patch) once.")
        height, width = images[0].shape[:2]
        if config.window > min(height, width):
            raise ValueError(f"occlusion window {config.window} is larger than the image ({height} x {width}); use a window of at most "
                             f"{min(height, width)} pixels.")
        return {}
    # (positions, 1): the players of an activation depend only on its positions
    layout = run_player_layout(schema.model_inputs, {c.input: (max(1, c.positions), 1) for c in layers}, config.groups, config.patch)
    if layout.count < 2 and config.method != "occlusion":
        raise ValueError(f"{config.method} shares the output change among players; this run has {layout.count} "
                         f"({', '.join(layout.names)}). Split the input (drop --groups) or use occlusion.")
    return {"players": layout.count, "player_names": list(layout.names[:20]) + ([f"... ({layout.count} in all)"] if layout.count > 20 else [])}


def _check_class_names(config: RunConfig, num_outputs: int) -> None:
    if config.class_names and len(config.class_names) != num_outputs:
        output = f"output {config.output_name!r}" if config.output_name else "output"
        raise ValueError(f"class_names gives {len(config.class_names)} names ({', '.join(config.class_names[:5])}"
                         f"{', ...' if len(config.class_names) > 5 else ''}) but the model's {output} has {num_outputs} "
                         f"values; give one name per output value, in index order.")


def resolve_plan(config: RunConfig, default_compute_threads: int = 1) -> RunPlan:
    """Validates `config` against the real input and model; see the module docstring.
    default_compute_threads: the workers' gradient calls side by side when config.compute_threads
    is None (the launcher knows the runner, `pipeline.run`)."""
    input_files = match_files(config.input)
    input_format = detect_format(input_files, config.input_format)
    catalog = _parquet_catalog(input_files[0]) if input_format == "parquet" else _tfrecord_catalog(input_files)
    model = load_model(config.model, config.unsafe_deserialization, storage=model_storage(config.model))
    _check_output_dtype(model, config.output_name)
    if config.explain_logits is None:  # Grad-CAM explains the class score before the softmax, as published
        automatic = config.method == "grad_cam" and model.ends_in_softmax_or_sigmoid(config.output_name)
        config = dataclasses.replace(config, explain_logits=automatic)
    num_outputs = model.output_sizes[model.output_index(config.output_name)]
    _check_target(config, num_outputs)
    _check_class_names(config, num_outputs)
    layers = resolve_layers(config, model)  # splits the model (checks explain_logits there too)
    if not layers:
        model.model_functions(config.output_name, config.explain_logits)  # checks explain_logits
    schema = _record_schema(config, model, input_format, catalog, num_outputs, layers)
    layer_baseline = None
    if layers and config.method in BASELINE_METHODS:
        from attributions.layers import layer_output_for_id

        layer_baseline = parse_layer_baseline(config.setting("layer_baseline"))
        for choice in layers if layer_baseline is not None else ():
            try:
                layer_output_for_id(model._keras_model, choice.layer, layer_baseline)
            except ValueError as error:
                raise ValueError(f"layer_baseline 'id:{layer_baseline}': {error}") from None
    baseline = parse_baseline(config.setting("baseline")) if config.method in BASELINE_METHODS else None
    reference_path = baseline.path if baseline is not None and baseline.kind == "file" else config.background
    reference_format, reference_rows = None, None
    if reference_path is not None:
        (reference_path,) = match_files((reference_path,))[:1]
        reference_format = detect_format([reference_path], "auto")
        reference_rows = load_reference_rows(reference_path, reference_format, schema)  # fails here if unusable
        clusters = config.setting("background_clusters") if config.method == "kernel_shap" else None
        if clusters is not None and clusters > len(reference_rows[0]):
            raise ValueError(f"background_clusters {clusters} asks for more k-means rows than the background has ({len(reference_rows[0])} "
                             f"rows in {reference_path}); pass at most {len(reference_rows[0])}, or drop it to use every row.")
    sample_files, sample_schema = input_files, schema  # what a data baseline is the median/mean of
    if baseline is not None and baseline.kind in ("median", "mean") and baseline.path:
        sample_files = match_files((baseline.path,))
        sample_schema = dataclasses.replace(schema, input_format=detect_format(sample_files, "auto"))
    resolved = resolve_baseline(baseline, sample_schema, sample_files, config, reference_rows) if baseline is not None else None

    method_params = _method_params(config, bool(layers))
    if config.method == "grad_cam":
        method_params.update(_grad_cam_parameters(model, config, schema))
    if config.method in PLAYER_METHODS:
        method_params.update(_player_parameters(model, config, schema, layers))

    fingerprint = model.sha256  # of the bytes loaded here; workers check theirs against it
    metadata = {
        "attribution.method": config.method,
        "attribution.parameters": method_params,
        "attribution.target": config.target_spec().describe(),
        "attribution.baseline": _baseline_note(resolved),
        "attribution.model_path": config.model,
        "attribution.layers": [c.describe() for c in layers] or None,
        "attribution.model_sha256": fingerprint,
        "attribution.package_version": __version__,
        "attribution.key_column": schema.key_name,
        "attribution.class_names": list(config.class_names) or None,
    }
    settings = AttributionSettings(
        model_path=config.model,
        method=config.method,
        target=config.target_spec(),
        schema=schema,
        output_schema=output_schema(schema, config.method, {k: v for k, v in metadata.items() if v is not None},
                                    adaptive=config.method == "integrated_gradients" and config.completeness_target is not None,
                                    class_names=bool(config.class_names)),
        method_params=method_params,
        chunk_size=config.chunk_size,
        chunk_memory_mib=config.chunk_memory_mib,
        output_name=config.output_name,
        explain_logits=config.explain_logits,
        unsafe_deserialization=config.unsafe_deserialization,
        baseline=resolved.kind if resolved is not None else "zeros",
        baseline_value=baseline.value if baseline is not None else 0.0,
        baseline_values=resolved.values if resolved is not None else None,
        baseline_blur=resolved.blur if resolved is not None else None,
        reference_path=reference_path,
        reference_format=reference_format,
        summary=summary_spec(config, schema, token_feature_specs(model, schema, layers, config.vocabularies)),
        model_sha256=fingerprint,
        layers=tuple(c.layer for c in layers),
        layer_baseline_id=layer_baseline,
        compute_threads=config.compute_threads if config.compute_threads is not None else default_compute_threads,
        batch_timeout_seconds=config.batch_timeout_seconds,
        class_names=config.class_names,
        xla=config.xla,
        xla_bound=config.xla_bound(),
    )
    return RunPlan(config, input_files, input_format, settings, fingerprint, layers=layers,
                   baseline=resolved.description if resolved is not None else None,
                   baseline_warning=resolved.warning if resolved is not None else None)


def _baseline_note(resolved: Optional[ResolvedBaseline]) -> Optional[str]:
    """The output's `attribution.baseline` metadata: the setting, and for a data baseline what it
    was computed from, e.g. 'auto: median of 1,024 sampled rows (features)'."""
    if resolved is None:
        return None
    note = resolved.description["setting"]
    if resolved.blur:
        note += ": " + ", ".join(f"{kind} ({name})" for name, kind in resolved.description["per_input"].items() if kind.startswith("blur"))
    elif resolved.kind == "data":
        per_input = resolved.description["per_input"]
        parts = [f"{kind} ({name})" for name, kind in per_input.items()]
        note += f": {', '.join(parts)} of {resolved.description['sample']['rows']:,} sampled rows"
    return note
