"""The output contract: the Arrow schema of attribution rows and how a batch becomes a table.

One row per record (per record x class for target mode top_k):
  <key column>             the record's key (its own type; string "<file>:<index>" when synthesized)
  <pass-through columns>   copied as they are
  target                   int32, the output index explained
  target_name              string, the name of that class (only with --class-names)
  target_score             float32, the model output explained, F(x)[target]
  attr_<column>            float32 for a scalar source column; list<float32> (row-major) for a
                           tensor column. An image column (transforms.images) is a tensor column of
                           its decoded pixels, H x W x C. An input attributed at a layer
                           (token/category ids, strings: attributions.layers) gets one value per position of the
                           layer's output, summed over its last axis (embedding/one-hot dimension),
                           aligned with the input's positions (a string through a TextVectorization:
                           its T token positions); padding positions are kept, not dropped.
                           grad_cam: the Grad-CAM map upsampled (bilinear) to the input's H x W,
                           the same value in each of the C channels (so it keeps the column's
                           H x W x C layout and overlays the image)
  gradcam_<column>         list<float32>, grad_cam only: the map at the layer's resolution, h x w
                           row-major (h, w in the metadata: attribution.parameters.layer_shape)
  tokens_<column>          list<string>, only when the model holds the vocabulary (StringLookup,
                           IntegerLookup, TextVectorization before the layer): the token at each
                           position, aligned with attr_<column>; padding positions read '' (the
                           padding token), out-of-vocabulary ones the layer's OOV token ('[UNK]', '-1' for IntegerLookup)
  convergence_delta        float32, sum(attr) - (F(x) - F(baseline))      (path methods)
  convergence_delta_rel    float32, |delta| / max(|F(x) - F(baseline)|, 1e-6)   (path methods)
  completeness_error       float32, |delta| / max(|F(x) - F(baseline)|, sum|attr|, 1e-6) (path methods;
                           expected gradients: only |delta| beyond 3 Monte-Carlo standard errors):
                           the measure summaries, report and compare use (attributions.result)
  attribution_stderr       float32, largest per-feature Monte-Carlo standard error (expected gradients)
  convergence_delta_stderr float32, Monte-Carlo standard error of sum(attr) (expected gradients)
  steps_used               int32, gradient evaluations spent on the row (IG with a completeness target)
  completeness_met         bool, completeness_error <= the target (IG with a completeness target)
  attributions_finite      bool, false when the target score, an attribution or the delta is NaN or
                           infinite (e.g. an overflowing model): such a row must not be read as valid
"""

from __future__ import annotations

import json
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa

from attributions.methods import COMPLETENESS_METHODS, STDERR_METHODS
from attributions.result import Attributions, relative_delta
from transforms.records import DecodedBatch, RecordSchema

__all__ = ["output_schema", "attribution_table", "attribution_column_name", "grad_cam_column_name", "tokens_column_name"]

RESERVED_COLUMNS = (
    "target", "target_name", "target_score", "convergence_delta", "convergence_delta_rel", "completeness_error", "attribution_stderr",
    "convergence_delta_stderr", "steps_used", "completeness_met", "attributions_finite",
)


def attribution_column_name(source_column: str) -> str:
    return f"attr_{source_column}"


def grad_cam_column_name(source_column: str) -> str:
    return f"gradcam_{source_column}"


def tokens_column_name(source_column: str) -> str:
    return f"tokens_{source_column}"


def _string_list(values: np.ndarray) -> pa.Array:
    """(R, L) object array of str -> list<string> with R rows."""
    rows, length = values.shape
    offsets = pa.array(np.arange(0, rows * length + 1, length, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1).tolist(), type=pa.string()))


def output_schema(schema: RecordSchema, method: str, metadata: Optional[dict] = None, adaptive: bool = False,
                  class_names: bool = False) -> pa.Schema:
    """The attribution rows' Arrow schema; `metadata` values are stored as JSON strings.
    adaptive: integrated gradients with a completeness target (steps_used, completeness_met);
    class_names: the run names its classes (target_name)."""
    key_type = schema.key.arrow_type if schema.key is not None else pa.string()
    fields = [pa.field(schema.key_name, key_type)]
    fields += [pa.field(f.name, f.arrow_type) for f in schema.passthrough]
    fields.append(pa.field("target", pa.int32()))
    if class_names:
        fields.append(pa.field("target_name", pa.string()))
    fields.append(pa.field("target_score", pa.float32()))
    for spec in schema.model_inputs:
        for column in spec.columns:
            arrow_type = pa.list_(pa.float32()) if column.is_list or column.attr_length is not None else pa.float32()
            fields.append(pa.field(attribution_column_name(column.name), arrow_type))
        if spec.tokens:
            fields.append(pa.field(tokens_column_name(spec.columns[0].name), pa.list_(pa.string())))
    if method == "grad_cam":
        fields += [pa.field(grad_cam_column_name(c.name), pa.list_(pa.float32())) for c in schema.source_columns]
    if method in COMPLETENESS_METHODS:
        fields += [pa.field("convergence_delta", pa.float32()), pa.field("convergence_delta_rel", pa.float32()),
                   pa.field("completeness_error", pa.float32())]
    if method in STDERR_METHODS:
        fields.append(pa.field("attribution_stderr", pa.float32()))
    if method == "expected_gradients":
        fields.append(pa.field("convergence_delta_stderr", pa.float32()))
    if adaptive:
        fields += [pa.field("steps_used", pa.int32()), pa.field("completeness_met", pa.bool_())]
    fields.append(pa.field("attributions_finite", pa.bool_()))
    encoded = {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in (metadata or {}).items()}
    return pa.schema(fields, metadata=encoded or None)


def _float_list(values: np.ndarray) -> pa.Array:
    """(R, L) float32 -> list<float32> with R rows, without per-row Python."""
    rows, length = values.shape
    offsets = pa.array(np.arange(0, rows * length + 1, length, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(-1), type=pa.float32()))


def attribution_table(
    batch: DecodedBatch,
    schema: RecordSchema,
    out_schema: pa.Schema,
    example_index: np.ndarray,
    targets: np.ndarray,
    target_scores: np.ndarray,
    result: Attributions,
    tokens: Optional[dict] = None,
    class_names: Sequence[str] = (),
) -> pa.Table:
    """Builds the output rows of one batch.

    example_index: (R,) the record of each output row; targets, target_scores: (R,);
    result: attributions one (R, *shape) array per model input (an input attributed at a layer:
    (R, positions)); tokens: {source column: object (R, positions) str} for tokens_<column>;
    class_names: names by class index, for target_name (when the schema has it).
    """
    rows = len(example_index)
    identity = None if rows == batch.num_records and np.array_equal(example_index, np.arange(rows)) else pa.array(example_index)
    columns = {schema.key_name: batch.keys if identity is None else batch.keys.take(identity)}
    for name, array in batch.passthrough.items():
        columns[name] = array if identity is None else array.take(identity)
    columns["target"] = pa.array(np.asarray(targets, dtype=np.int32))
    if "target_name" in out_schema.names:
        columns["target_name"] = pa.array(list(class_names), pa.string()).take(columns["target"])
    columns["target_score"] = pa.array(np.asarray(target_scores, dtype=np.float32))
    finite = np.isfinite(np.asarray(target_scores, dtype=np.float32))  # (R,)
    for spec, attribution in zip(schema.model_inputs, result.attributions):
        flat = np.asarray(attribution, dtype=np.float32).reshape(rows, -1)  # (R, prod(shape))
        finite &= np.isfinite(flat).all(axis=1)
        offset = 0
        for column in spec.columns:
            width = column.attr_length or column.length
            block = flat[:, offset : offset + width]
            offset += width
            as_list = column.is_list or column.attr_length is not None
            columns[attribution_column_name(column.name)] = _float_list(block) if as_list else pa.array(block[:, 0])
        if spec.tokens:
            columns[tokens_column_name(spec.columns[0].name)] = _string_list(tokens[spec.columns[0].name])
    if result.layer_maps is not None:  # grad_cam: one model input, read from one column
        maps = np.asarray(result.layer_maps, dtype=np.float32).reshape(rows, -1)  # (R, h*w)
        finite &= np.isfinite(maps).all(axis=1)
        columns[grad_cam_column_name(schema.source_columns[0].name)] = _float_list(maps)
    if result.convergence_delta is not None:
        finite &= np.isfinite(result.convergence_delta)
        columns["convergence_delta"] = pa.array(result.convergence_delta.astype(np.float32))
        columns["convergence_delta_rel"] = pa.array(relative_delta(result.convergence_delta, result.output_change))
        columns["completeness_error"] = pa.array(np.asarray(result.completeness_error, dtype=np.float32))
    if result.stderr is not None:
        columns["attribution_stderr"] = pa.array(result.stderr.astype(np.float32))
    if result.delta_stderr is not None:
        columns["convergence_delta_stderr"] = pa.array(result.delta_stderr.astype(np.float32))
    if result.steps_used is not None:
        columns["steps_used"] = pa.array(result.steps_used.astype(np.int32))
        columns["completeness_met"] = pa.array(np.asarray(result.completeness_met, dtype=bool))
    columns["attributions_finite"] = pa.array(finite)
    return pa.Table.from_arrays([columns[name].cast(out_schema.field(name).type) for name in out_schema.names], schema=out_schema)
