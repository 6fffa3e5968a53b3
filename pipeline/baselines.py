"""Integrated gradients' baseline, resolved on the launcher: data baselines computed from a sample
of the input (pipeline.baseline_sample, attributions.data_baselines), what the manifest says about
it, and the one-line warning when it lies far from the data.

'auto' (the default) is the sample's median for every model input read from scalar float columns
(tabular features) and zeros for the others (images, lists, tensors: a per-pixel median of photos
is a blurred average photo, not "no signal"); 'median' / 'mean' apply to every input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from attributions.data_baselines import far_from_data, statistic_baseline
from pipeline.baseline_sample import InputSample, sample_input_rows
from pipeline.config import BaselineSpec, RunConfig
from pipeline.terminal import printable
from transforms.records import ModelInputSpec, RecordSchema

__all__ = ["ResolvedBaseline", "resolve_baseline", "is_tabular"]

_LOGGER = logging.getLogger(__name__)
# The manifest lists a data baseline's values for inputs of at most this many values.
_MOST_VALUES_LISTED = 4096


@dataclass(frozen=True)
class ResolvedBaseline:
    """kind: what the workers use ('zeros', 'constant', 'file' or 'data'); values ('data'): one
    flat tuple of float32 values per model input (tuples: the settings' repr names them all);
    blur: per model input, the σ (pixels) of its blur baseline, or None (the kind applies);
    description: the manifest's `baseline` entry; warning: the launch warning, or None."""

    kind: str
    values: Optional[tuple[tuple[float, ...], ...]]
    description: dict
    warning: Optional[str]
    blur: Optional[tuple[Optional[float], ...]] = None


def is_image(spec: ModelInputSpec) -> bool:
    """A float input of shape (height, width, channels)."""
    return len(spec.shape) == 3 and all(c.dtype == "float32" for c in spec.columns)


def is_tabular(spec: ModelInputSpec) -> bool:
    """An input read from scalar float columns, one feature each."""
    return all(c.length == 1 and not c.is_list and c.image is None and c.dtype == "float32" for c in spec.columns)


def resolve_baseline(spec: BaselineSpec, schema: RecordSchema, input_files: Sequence[str], config: RunConfig,
                     reference_rows: Optional[tuple] = None) -> ResolvedBaseline:
    """The baseline of an integrated-gradients run (see the module). reference_rows: the rows of
    a 'file' baseline (one array per model input; its first row is the baseline)."""
    inputs = schema.model_inputs
    tabular = [is_tabular(s) for s in inputs]
    blur = _blur_sigmas(inputs, config) if spec.kind == "blur" else None
    rule = "auto" if spec.kind == "blur" else spec.kind  # blur: the inputs it does not blur as 'auto'
    statistic = _statistics(rule, inputs)
    needs_sample = statistic is not None and any(s != "zeros" for s in statistic)
    sample = sample_input_rows(input_files, schema, config.baseline_sample_size) if needs_sample or any(tabular) else None
    empty = None
    if needs_sample and sample.size == 0:
        if rule != "auto":
            raise ValueError(f"baseline {spec.kind!r} is computed from the input's rows, but no valid row was found in "
                             f"{list(sample.files)}; pass --baseline zeros (or constant:VALUE / file:PATH).")
        # 'auto' on an input without valid rows (an empty day): nothing to attribute, zeros stand in.
        empty = f"no valid row among the sampled files {list(sample.files)}: zeros stand in for the median"
        statistic, needs_sample = ["zeros"] * len(inputs), False
    if needs_sample:
        arrays = tuple(statistic_baseline(rows, kind) if kind != "zeros" else np.zeros(s.shape, np.float32)
                       for rows, kind, s in zip(sample.rows, statistic, inputs))
        kind = "data"
    else:
        arrays = _fixed_baselines(spec, inputs, reference_rows)
        kind = "zeros" if spec.kind in ("auto", "blur") else spec.kind
    warning = _far_warning(arrays, inputs, tabular, sample, spec, config) if sample is not None and sample.size else None
    description = _describe(spec, inputs, statistic, blur, sample, arrays if kind == "data" else None)
    description.update({k: v for k, v in (("note", empty), ("warning", warning)) if v})
    values = tuple(tuple(float(v) for v in a.reshape(-1)) for a in arrays) if kind == "data" else None
    return ResolvedBaseline(kind, values, description, warning, blur)


def _statistics(rule: str, inputs: Sequence[ModelInputSpec]) -> Optional[list[str]]:
    """'median' / 'mean' / 'zeros' per model input for a data rule, None for a fixed baseline."""
    if rule == "auto":
        return ["median" if is_tabular(s) else "zeros" for s in inputs]
    if rule in ("median", "mean"):  # ids and text: their layer baseline applies
        return [rule if all(c.dtype == "float32" for c in s.columns) else "zeros" for s in inputs]
    return None


def _describe(spec: BaselineSpec, inputs: Sequence[ModelInputSpec], statistic: Optional[list[str]],
              blur: Optional[tuple], sample: Optional[InputSample], arrays: Optional[tuple]) -> dict[str, Any]:
    """The manifest's `baseline` entry (arrays: the data baseline's, listed when small enough)."""
    setting = f"constant:{spec.value:g}" if spec.kind == "constant" else f"{spec.kind}:{spec.path}" if spec.path and spec.kind != "file" else spec.kind
    description: dict[str, Any] = {"setting": setting}
    if statistic is not None:
        per_input = [f"blur (sigma {sigma:g} px)" if sigma is not None else kind for kind, sigma in zip(statistic, blur or [None] * len(inputs))]
        description["per_input"] = dict(zip((s.name for s in inputs), per_input))
    if sample is not None:
        description["sample"] = {"rows": sample.size, "files": list(sample.files)}
    if arrays is not None:
        description["values"] = {s.name: a.reshape(-1).tolist() if a.size <= _MOST_VALUES_LISTED else f"{a.size:,} values, not listed"
                                 for s, a, kind in zip(inputs, arrays, statistic) if kind != "zeros"}
    return description


def _blur_sigmas(inputs: Sequence[ModelInputSpec], config: RunConfig) -> tuple[Optional[float], ...]:
    """σ per model input for --baseline blur: images get config.blur_sigma (default a tenth of the
    smaller side), the others None. Raises ValueError when no input is an image."""
    from attributions.blur import default_blur_sigma

    if not any(is_image(s) for s in inputs):
        shapes = {s.name: s.shape for s in inputs}
        raise ValueError(f"baseline 'blur' blurs image inputs (height, width, channels); this model's inputs are {shapes}. "
                         f"Use --baseline median (or auto) for them.")
    return tuple((config.blur_sigma or default_blur_sigma(*s.shape[:2])) if is_image(s) else None for s in inputs)


def _fixed_baselines(spec: BaselineSpec, inputs: Sequence[ModelInputSpec], reference_rows: Optional[tuple]) -> tuple:
    if spec.kind == "file":
        return tuple(np.asarray(r[0], np.float32) for r in reference_rows)
    value = spec.value if spec.kind == "constant" else 0.0
    return tuple(np.full(s.shape, value, np.float32) for s in inputs)


def _far_warning(arrays: tuple, inputs: Sequence[ModelInputSpec], tabular: Sequence[bool], sample: InputSample,
                 spec: BaselineSpec, config: RunConfig) -> Optional[str]:
    """One line when, in a tabular input, more than baseline_far_share of the features lie more
    than 3 robust standard deviations from the sampled data."""
    for array, spec_i, is_tab, rows in zip(arrays, inputs, tabular, sample.rows):
        if not is_tab:
            continue
        far = far_from_data(array, rows)
        if far.far and far.share > config.baseline_far_share:
            index, distance = far.farthest
            name = spec_i.columns[index].name if index < len(spec_i.columns) else str(index)
            shown = "constant in the sample at another value" if distance == float("inf") else f"{distance:.1f} robust standard deviations away"
            return printable(
                f"the {spec.kind} baseline of input {spec_i.name!r} lies more than 3 robust standard deviations from the "
                f"{sample.size:,} sampled rows in {far.far} of {far.total} features (farthest: {name!r}, {shown}), so "
                f"attributions there measure the distance from the baseline more than the model; consider --baseline median."
            )
    return None
