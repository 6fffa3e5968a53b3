"""The run's settings: typed, validated once on the launcher, unknown keys rejected.

A `RunConfig` comes from a YAML file (`yaml.safe_load`), command-line flags (which override the
file), or code. Every setting has the same name in YAML and in code; flags use dashes
(`key_column` <-> `--key-column`). Runner settings are not here: they stay Beam `PipelineOptions`.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

import yaml

from attributions.chunking import DEFAULT_CHUNK_MEMORY_MIB
from attributions.methods import BASELINE_METHODS, METHODS, PLAYER_METHODS  # noqa: F401  (METHODS re-exported)
from attributions.integration_rules import DEFAULT_MAX_STEPS, DEFAULT_RULE, RULES, check_adaptive_settings
from attributions.targets import TargetSpec
from attributions.xla_check import XLA_MODES
from audit.bootstrap import DEFAULT_REPLICATES, MAX_REPLICATES
from audit.quality_limits import parse_quality_limits
from pipeline.paths import check_printable_path, normalized_path
from transforms.images import ImageSpec, image_spec

__all__ = [
    "RunConfig", "METHODS", "load_yaml_config", "parse_target", "parse_baseline", "parse_layer_baseline", "BaselineSpec", "fill_template",
    "fill_path_templates",
]

INPUT_FORMATS = ("auto", "tfrecord", "parquet")
SMOOTHGRAD_VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")

# Settings that only one method uses, with their defaults; giving one to another method is an error.
METHOD_SETTINGS: dict[str, dict[str, Any]] = {
    "integrated_gradients": {
        "steps": 64, "rule": DEFAULT_RULE, "baseline": "auto", "completeness_target": None, "max_steps": DEFAULT_MAX_STEPS,
        "layer_baseline": "zeros",
    },
    "smoothgrad": {"smoothgrad_variant": "smoothgrad", "noise_fraction": 0.15, "samples": 50, "seed": 0},
    "expected_gradients": {"background": None, "samples": 200, "seed": 0},
    # samples: permutations per row (Vertex AI's path_count), in antithetic pairs (an odd number
    # rounds up); patch: image players' side in pixels (None: an eighth of the smaller side).
    "sampled_shapley": {"baseline": "auto", "layer_baseline": "zeros", "samples": 24, "seed": 0, "groups": None, "patch": None},
    # samples: coalitions per row (None: 2 x players + 2,048, the shap package's 'auto');
    # background_clusters: summarize the background rows by k-means to this many weighted rows
    # (shap.kmeans; None: every row, each model evaluation costs background rows x coalitions).
    "kernel_shap": {"background": None, "samples": None, "seed": 0, "groups": None, "patch": None, "background_clusters": None},
    # window/stride: sliding-window occlusion of images (Captum's Occlusion); without them each
    # player (column, group, patch, token position) is occluded once.
    "occlusion": {"baseline": "auto", "layer_baseline": "zeros", "groups": None, "patch": None, "window": None, "stride": None},
}


# Rows the quality audit explains when quality_rows is not given (read when a config is built: the
# test suite turns the audit off this way for the tests that are not about it, tests/conftest.py).
DEFAULT_QUALITY_ROWS = 256
# XLA for the gradient calls when xla is not given (read when a config is built, like the above: the
# test suite runs on TensorFlow's kernels unless a test asks for XLA, tests/conftest.py).
DEFAULT_XLA = "auto"


@dataclass(frozen=True)
class BaselineSpec:
    """Integrated gradients' baseline: kind 'zeros', 'constant' (value), 'file' (path: the first
    record of a Parquet/TFRecord file, mapped to model inputs like the data), 'median' / 'mean'
    (per feature, of a sample of the input: attributions.data_baselines), 'blur' (each image
    input blurred: attributions.blur; other inputs as 'auto'), or 'auto' (the default: the median
    for inputs read from scalar float columns, zeros for images, lists and tensors)."""

    kind: str = "zeros"
    value: float = 0.0
    path: Optional[str] = None


@dataclass(frozen=True)
class RunConfig:
    """Every setting of an attribution run. See configs/*.yaml for commented examples."""

    model: str
    input: tuple[str, ...]
    output: str
    method: str = "integrated_gradients"
    input_format: str = "auto"
    key_column: Optional[str] = None
    passthrough_columns: tuple[str, ...] = ()
    inputs: Mapping[str, Union[str, tuple[str, ...]]] = field(default_factory=dict)
    # Image columns (encoded JPEG/PNG bytes): column -> how it is decoded, resized and scaled
    # ({size: [H, W], channels: C, preset or scale/offset}; transforms.images).
    images: Mapping[str, ImageSpec] = field(default_factory=dict)
    output_name: Optional[str] = None
    # Explain the output before its final softmax/sigmoid. None (default): yes for grad_cam when
    # the model ends in one (Grad-CAM as published explains the class score: on probabilities near
    # 1 the maps vanish), no for the other methods; the plan resolves it (pipeline.plan).
    explain_logits: Optional[bool] = None
    # Attribute at these layers' outputs instead of at the model inputs they stand for
    # (attributions.layers); empty: at the inputs, or for an integer/string input the first float
    # layer after it (its Embedding / one-hot), found from the model graph. grad_cam: at most one,
    # the convolutional layer whose activations are weighted (default: the last layer with a 4-D
    # output before the model's output).
    layers: tuple[str, ...] = ()
    target: str = "predicted"
    # Names of the model output's classes, in index order (one per output value): written beside
    # each row's target as target_name and used by summaries, compare and report. A list, a
    # comma-separated string, or a local text file with one name per line.
    class_names: tuple[str, ...] = ()
    # Names of the categories/tokens of integer id columns the model has no vocabulary for
    # (column -> names by id: a list, or a local text file with one name per line, line i = id i):
    # the token view of summaries, report and compare shows 'Biscoe' instead of 0.
    vocabularies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unsafe_deserialization: bool = False
    overwrite: bool = False
    # Object stores (s3://, gs://): the output's lock is a lease the run renews every fifth of
    # this; a lock not renewed for this long is a dead run's and the next run takes it over
    # (pipeline.lease_lock says why 300 s). Local folders use flock and ignore it.
    lock_lease_seconds: float = 300.0
    # A batch still attributing after this long fails the run (a model that loops forever would
    # otherwise hang it); generous by default: a 4,096-record batch takes seconds to minutes.
    batch_timeout_seconds: float = 3600.0
    # The run fails at the end (non-zero exit, manifest status 'failed') when more than this share
    # of the records read was dead-lettered.
    max_dead_letter_fraction: float = 0.1
    # Parquet reads: True reads each row group's columns ahead in a few coalesced requests, held
    # until the row group is done; False streams each column in 1 MiB reads. None (default):
    # True for object stores (streaming would fetch a buffer per read, docs/performance.md), False
    # for local files (less memory with large row groups, measured there too).
    parquet_pre_buffer: Optional[bool] = None
    # Integrated gradients' data baselines (median, mean, and the default 'auto'): rows of the
    # input sampled on the launcher (evenly spaced files and row groups; the same files give the
    # same sample). 1,024 rows put a median within about 0.04 standard deviations of the data's.
    baseline_sample_size: int = 1024
    # A launch warning when the baseline lies more than 3 robust standard deviations (1.4826 x
    # MAD) from the sampled data in more than this share of an input's scalar features.
    baseline_far_share: float = 0.25
    # --baseline blur: the Gaussian's standard deviation in pixels; None: a tenth of the image's
    # smaller side (attributions.blur.default_blur_sigma).
    blur_sigma: Optional[float] = None
    # The quality audit (pipeline.quality, docs/quality.md): rows of the input sampled on the
    # launcher and explained again under tests of what the attributions depend on; 0 turns it off.
    quality_rows: Optional[int] = None  # None: DEFAULT_QUALITY_ROWS
    # Seed of the audit's random draws (shuffled weights, random orders, perturbations).
    quality_seed: int = 0
    # Perturbed copies per row for infidelity and sensitivity-max (captum's default, 10).
    quality_perturbations: int = 10
    # Points of the deletion and insertion curves after the start.
    quality_steps: int = 16
    # Side in pixels of the image patches the curves delete; None: an eighth of the smaller side.
    quality_patch: Optional[int] = None
    # Infidelity's Gaussian perturbations: std as a fraction of each value's std over the sample.
    quality_noise: float = 0.1
    # Sensitivity-max's uniform perturbations: radius as a fraction of each value's std over the
    # sample (captum's default radius, 0.02, for standardised inputs).
    quality_radius: float = 0.02
    # Limits that fail the run's exit status (6) when the audit's number is past them, e.g.
    # {randomisation: "<=0.5"} (audit.quality_limits); none by default.
    quality_limits: Mapping[str, str] = field(default_factory=dict)
    # Count keys that occur more than once (a shuffle over all keys: off by default).
    check_duplicate_keys: bool = False
    # Records per pipeline element: 4,096 amortises per-element costs (Beam, summaries, Arrow) over
    # more rows (a 20-column MLP: attribution 1.1x faster and summaries 3 % instead of 7-10 % of it
    # than at 1,024); gradient memory is bounded by the chunk, not by the batch.
    batch_size: int = 4096
    # Most rows (examples x steps/samples) per gradient call; None: the most that fit
    # chunk_memory_mib for this model (measured on its gradient graph at worker start).
    chunk_size: Optional[int] = None
    # Memory budget (MiB per worker process) for the gradient calls' tensors when chunk_size is None.
    chunk_memory_mib: int = DEFAULT_CHUNK_MEMORY_MIB
    # Gradient calls run side by side in a worker process, each op on one thread
    # (attributions.concurrency). None: one per core for local runners (DirectRunner, Prism),
    # 1 (TensorFlow's own threading, one call at a time) for remote runners.
    compute_threads: Optional[int] = None
    # XLA for the gradient calls (attributions.xla_check): 'auto' (default) compiles the method's
    # gradients whole, model included, and keeps that when it compiles, its first batch agrees
    # with TensorFlow's kernels within the completeness bound (completeness_target, else
    # completeness_threshold) and it ran faster; 'on' without the check; 'off' never.
    xla: str = "auto"  # from_mapping (the CLI, YAML) fills a missing xla with DEFAULT_XLA
    # Dataset summaries written beside the rows in the same pass (summary.json, summary_*.parquet).
    summaries: bool = True
    # Columns to summarize by (e.g. country, label); they are also copied to the output rows.
    slice_columns: tuple[str, ...] = ()
    # Rows kept per group for approximate quantiles (rank error std <= 0.5/sqrt(n)).
    summary_sample_size: int = 2048
    # Poisson bootstrap replicates behind the 95 % intervals of each group's per-feature means
    # (audit.bootstrap); 0 turns them off.
    bootstrap_replicates: int = DEFAULT_REPLICATES
    # Relative completeness error counted as too large in the summaries (0.05 = 5 %).
    completeness_threshold: float = 0.05
    # Distinct values summarized per slice column; later ones are pooled as '__other__'.
    max_slice_values: int = 1000
    # Values for {name} placeholders in model/input/output/background/baseline paths:
    # `date` fills {date}; params fill the others (--param name=value).
    date: Optional[str] = None
    params: Mapping[str, str] = field(default_factory=dict)
    # Method settings (None: the method's default, see METHOD_SETTINGS).
    steps: Optional[int] = None
    rule: Optional[str] = None
    # Completeness-driven IG (attributions.adaptive_ig): rows whose completeness_error is over this
    # get more points, up to max_steps gradient evaluations each. None (default): fixed steps.
    completeness_target: Optional[float] = None
    max_steps: Optional[int] = None
    baseline: Optional[str] = None
    smoothgrad_variant: Optional[str] = None
    noise_fraction: Optional[float] = None
    samples: Optional[int] = None
    seed: Optional[int] = None
    background: Optional[str] = None
    # Integrated gradients at a layer: the baseline activation, 'zeros' or 'id:N' (the layer's
    # output for id N at every position, e.g. the padding id 0).
    layer_baseline: Optional[str] = None
    # The model-agnostic methods (PLAYER_METHODS): columns that move together as one player,
    # name -> columns (default: one player per column, per element of a list column, per image patch).
    groups: Optional[Mapping[str, tuple[str, ...]]] = None
    patch: Optional[int] = None
    background_clusters: Optional[int] = None
    window: Optional[int] = None
    stride: Optional[int] = None

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], source: str = "config") -> "RunConfig":
        """Builds and validates a config; `source` names where the values came from in errors."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{source} must be a mapping of settings; got {type(values).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        values = _resolve_aliases(values, source)
        unknown = sorted(set(values) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown setting(s) {unknown} in {source}.{hint} Known settings are {sorted(known)}."
            )
        missing = [name for name in ("model", "input", "output") if values.get(name) in (None, "", [])]
        if missing:
            raise ValueError(
                f"missing required setting(s) {missing} in {source}; give them as flags "
                f"(--model, --input, --output) or in the YAML config."
            )
        values = dict(values)
        values["input"] = _string_tuple(values["input"], "input")
        values["passthrough_columns"] = _string_tuple(values.get("passthrough_columns", ()), "passthrough_columns")
        values["inputs"] = _input_mapping(values.get("inputs") or {})
        values["images"] = _image_mapping(values.get("images") or {})
        values["slice_columns"] = _string_tuple(values.get("slice_columns", ()), "slice_columns")
        values["layers"] = _string_tuple(values.get("layers") or (), "layers")
        values["class_names"] = _class_names(values.get("class_names") or ())
        values["vocabularies"] = _vocabularies(values.get("vocabularies") or {})
        values["quality_limits"] = parse_quality_limits(values.get("quality_limits") or {})
        if values.get("groups") is not None:
            values["groups"] = _groups(values["groups"])
        if values.get("quality_rows") is None:
            values["quality_rows"] = DEFAULT_QUALITY_ROWS
        if values.get("xla") is None:
            values["xla"] = DEFAULT_XLA
        if isinstance(values.get("date"), datetime.date):  # YAML reads an unquoted 2026-11-27 as a date
            values["date"] = values["date"].isoformat()
        values["params"] = _params(values.get("params") or {}, values.get("date"))
        values.update(fill_path_templates(values, values["params"]))
        _check_paths(values)
        config = cls(**values)
        config.validate()
        return config

    def xla_bound(self) -> float:
        """How far XLA's attributions may move from the kernels' per row (attributions.xla_check):
        the completeness bound the run asked for, completeness_target, else completeness_threshold."""
        return float(self.completeness_target if self.completeness_target is not None else self.completeness_threshold)

    def validate(self) -> None:
        _check_choice("method", self.method, METHODS)
        _check_choice("input_format", self.input_format, INPUT_FORMATS)
        _check_choice("xla", self.xla, XLA_MODES)
        for name in ("batch_size", "chunk_memory_mib", "summary_sample_size", "max_slice_values", "baseline_sample_size"):
            _check_positive_int(name, getattr(self, name))
        if not isinstance(self.bootstrap_replicates, int) or isinstance(self.bootstrap_replicates, bool) or not 0 <= self.bootstrap_replicates <= MAX_REPLICATES:
            raise ValueError(f"bootstrap_replicates must be a whole number from 0 (off) to {MAX_REPLICATES}; got "
                             f"{self.bootstrap_replicates!r} (the default, {DEFAULT_REPLICATES}, is usually enough).")
        _check_number("baseline_far_share", self.baseline_far_share, "a number in [0, 1] (e.g. 0.25)", lambda v: 0 <= v <= 1)
        self._validate_quality_settings()
        if self.blur_sigma is not None:
            _check_number("blur_sigma", self.blur_sigma, "a number of pixels > 0 (e.g. 2.5)", lambda v: v > 0)
        for name in ("chunk_size", "compute_threads"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        _check_number("completeness_threshold", self.completeness_threshold, "a number > 0 (e.g. 0.05 for 5 %)",
                      lambda v: v > 0)
        if self.slice_columns and not self.summaries:
            raise ValueError("slice_columns are summary groups, but summaries is false; drop one or the other.")
        _check_number("max_dead_letter_fraction", self.max_dead_letter_fraction, "a number in [0, 1] (e.g. 0.1)",
                      lambda v: 0 <= v <= 1)
        _check_number("lock_lease_seconds", self.lock_lease_seconds, "a number of seconds from 5 to 86400 (e.g. 300)",
                      lambda v: 5 <= v <= 86400)
        _check_number("batch_timeout_seconds", self.batch_timeout_seconds, "a number of seconds from 1 to 604800 (e.g. 3600)",
                      lambda v: 1 <= v <= 604800)
        for name in ("unsafe_deserialization", "overwrite", "check_duplicate_keys", "summaries"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false; got {getattr(self, name)!r}.")
        if self.explain_logits is not None and not isinstance(self.explain_logits, bool):
            raise ValueError(f"explain_logits must be true, false or absent (automatic: true for grad_cam on a softmax/sigmoid "
                             f"output); got {self.explain_logits!r}.")
        if self.parquet_pre_buffer is not None and not isinstance(self.parquet_pre_buffer, bool):
            raise ValueError(f"parquet_pre_buffer must be true, false or absent (automatic); got {self.parquet_pre_buffer!r}.")
        for name in sorted(_ALL_METHOD_SETTINGS):
            if getattr(self, name) is not None and self.method not in _users_of(name):
                raise ValueError(
                    f"setting {name!r} applies only to method(s) {_users_of(name)}, but method is "
                    f"{self.method!r}; remove it or change the method."
                )
        if self.check_duplicate_keys and not self.key_column:
            raise ValueError(
                "check_duplicate_keys needs a key_column: synthesized '<file>:<index>' keys are unique."
            )
        if self.method == "grad_cam" and len(self.layers) > 1:
            raise ValueError(
                f"grad_cam weighs the activations of one layer; got layers {list(self.layers)}. Give one --layer "
                f"(a layer with a 4-D (batch, height, width, channels) output), or none for the last such layer."
            )
        self.target_spec()  # parses and validates the target
        self._validate_method_settings()
        self._validate_player_settings()
        for name in ("batch_size", "chunk_size", "compute_threads", "steps", "max_steps", "samples"):
            _check_limit(name, self.setting(name) if name in _ALL_METHOD_SETTINGS else getattr(self, name))

    def _validate_quality_settings(self) -> None:
        if isinstance(self.quality_rows, bool) or not isinstance(self.quality_rows, int) or self.quality_rows < 0:
            raise ValueError(f"quality_rows must be a whole number of rows >= 0 (0 turns the quality audit off); got {self.quality_rows!r}.")
        if isinstance(self.quality_seed, bool) or not isinstance(self.quality_seed, int):
            raise ValueError(f"quality_seed must be an integer; got {self.quality_seed!r}.")
        for name in ("quality_perturbations", "quality_steps"):
            _check_positive_int(name, getattr(self, name))
        for name in ("quality_rows", "quality_perturbations", "quality_steps"):
            _check_limit(name, getattr(self, name))
        if self.quality_patch is not None:
            _check_positive_int("quality_patch", self.quality_patch)
        for name in ("quality_noise", "quality_radius"):
            _check_number(name, getattr(self, name), "a fraction of each value's std > 0 (e.g. 0.1)", lambda v: v > 0)
        if self.quality_limits and not self.quality_rows:
            raise ValueError(f"quality_limits {dict(self.quality_limits)} check the quality audit, which quality_rows: 0 "
                             f"turns off; drop the limits or sample some rows (e.g. --quality-rows 256).")

    def _validate_method_settings(self) -> None:
        if self.method == "integrated_gradients":
            _check_positive_int("steps", self.setting("steps"))
            _check_choice("rule", self.setting("rule"), tuple(RULES))
            spec = parse_baseline(self.setting("baseline"))
            parse_layer_baseline(self.setting("layer_baseline"))
            if self.blur_sigma is not None and spec.kind != "blur":
                raise ValueError(f"blur_sigma sets the blur baseline's width, but the baseline is {self.setting('baseline')!r}; "
                                 f"pass --baseline blur or drop blur_sigma.")
            if self.completeness_target is not None:
                check_adaptive_settings(self.completeness_target, self.setting("steps"), self.setting("max_steps"))
            elif self.max_steps is not None:
                raise ValueError(
                    f"max_steps ({self.max_steps}) caps completeness-driven integrated gradients, which is off; "
                    f"set completeness_target too (e.g. 0.01), or drop max_steps."
                )
        if self.method in ("smoothgrad", "expected_gradients", "sampled_shapley") or (self.method == "kernel_shap" and self.samples is not None):
            _check_positive_int("samples", self.setting("samples"))
            if not isinstance(self.setting("seed"), int) or isinstance(self.setting("seed"), bool):
                raise ValueError(f"seed must be an integer; got {self.setting('seed')!r}.")
        if self.method == "smoothgrad":
            _check_choice("smoothgrad_variant", self.setting("smoothgrad_variant"), SMOOTHGRAD_VARIANTS)
            _check_number(
                "noise_fraction", self.setting("noise_fraction"),
                "a number >= 0 (noise std as a fraction of each input's value range, e.g. 0.15)", lambda v: v >= 0,
            )
        if self.method in ("expected_gradients", "kernel_shap"):
            if self.background is None:
                raise ValueError(
                    f"method {self.method!r} needs background rows: pass --background "
                    "PATH (a Parquet or TFRecord file with the same columns as the input)."
                )
            if self.method == "expected_gradients" and self.setting("samples") < 2:
                raise ValueError(f"expected_gradients needs samples >= 2; got {self.setting('samples')}.")

    def _validate_player_settings(self) -> None:
        if self.method in ("sampled_shapley", "occlusion"):
            parse_baseline(self.setting("baseline"))
            parse_layer_baseline(self.setting("layer_baseline"))
        if self.method == "sampled_shapley" and self.setting("samples") < 2:
            raise ValueError(f"sampled_shapley needs samples >= 2 permutations (its standard error needs two); got {self.setting('samples')}.")
        if self.method == "kernel_shap" and self.samples is not None and self.samples < 2:
            raise ValueError(f"kernel_shap needs samples >= 2 coalitions; got {self.samples}.")
        for name in ("patch", "window", "stride", "background_clusters"):
            if getattr(self, name) is not None:
                _check_positive_int(name, getattr(self, name))
        if (self.window is None) != (self.stride is None):
            raise ValueError(f"occlusion's sliding window needs both window and stride (pixels); got window={self.window!r}, "
                             f"stride={self.stride!r}. Give both (e.g. --window 8 --stride 4), or neither to occlude each player once.")
        if self.window is not None and (self.patch is not None or self.groups):
            raise ValueError("occlusion's sliding window (window, stride) replaces the players: drop patch and groups, or drop window/stride.")

    def setting(self, name: str) -> Any:
        """A method setting, or its default for this config's method when not given."""
        value = getattr(self, name)
        if value is None:
            return METHOD_SETTINGS.get(self.method, {}).get(name)
        return value

    def paths(self) -> list[str]:
        """Every path setting of the run: output, model, inputs, baseline/background files."""
        baseline = parse_baseline(self.baseline).path if self.baseline is not None else None
        return [self.output, self.model, *self.input, *(p for p in (self.background, baseline) if p)]

    def target_spec(self) -> TargetSpec:
        return parse_target(self.target)

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-ready settings with method defaults filled in."""
        result = {}
        for f in dataclasses.fields(self):
            value = self.setting(f.name) if f.name in _ALL_METHOD_SETTINGS else getattr(self, f.name)
            if f.name in _ALL_METHOD_SETTINGS and self.method not in _users_of(f.name):
                continue
            if f.name == "max_steps" and self.completeness_target is None:
                continue  # caps only completeness-driven runs (and is refused without a target)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = {k: list(v) if isinstance(v, tuple) else v.describe() if isinstance(v, ImageSpec) else v for k, v in value.items()}
            result[f.name] = value
        return result


_ALL_METHOD_SETTINGS = {name for settings in METHOD_SETTINGS.values() for name in settings}


def _groups(value: Any) -> dict[str, tuple[str, ...]]:
    """groups: {name: [columns]} (YAML), or 'name=colA,colB' strings (flags) -> {name: (columns)};
    a column in two groups, or a group of no column, is refused."""
    hint = "expected a mapping of group name to columns, e.g. {size: [height, width]}, or --groups size=height,width"
    items = []
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        for text in value:
            name, sep, columns = text.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"groups entry {text!r} is not NAME=COLUMN,COLUMN; {hint}.")
            items.append((name.strip(), [c.strip() for c in columns.split(",") if c.strip()]))
    else:
        raise ValueError(f"groups {value!r} is not valid; {hint}.")
    groups, seen = {}, {}
    for name, columns in items:
        columns = _string_tuple(columns, f"groups.{name}")
        if not columns:
            raise ValueError(f"group {name!r} names no column; {hint}.")
        for column in columns:
            if column in seen:
                raise ValueError(f"column {column!r} is in groups {seen[column]!r} and {name!r}; a column can be in one group only.")
            seen[column] = name
        groups[str(name)] = columns
    return groups


def _users_of(name: str) -> list[str]:
    return [m for m, s in METHOD_SETTINGS.items() if name in s]


def parse_target(value: Any) -> TargetSpec:
    """'predicted' | an integer or 'index:N' | 'label:COLUMN' | 'top_k:K' -> TargetSpec."""
    hint = "expected 'predicted', an output index like 3 or 'index:3', 'label:COLUMN' or 'top_k:K'"
    if isinstance(value, bool):
        raise ValueError(f"target {value!r} is not valid; {hint}.")
    if isinstance(value, int):
        value = f"index:{value}"
    if not isinstance(value, str):
        raise ValueError(f"target {value!r} is not valid; {hint}.")
    text = value.strip()
    if text == "predicted":
        return TargetSpec("predicted")
    if text.lstrip("-").isdigit():
        text = f"index:{text}"
    mode, _, argument = text.partition(":")
    if mode == "index" and argument.lstrip("-").isdigit():
        if int(argument) < 0:
            raise ValueError(f"target index must be >= 0; got {argument}.")
        return TargetSpec("index", index=int(argument))
    if mode == "label" and argument:
        return TargetSpec("label", column=argument)
    if mode == "top_k" and argument.isdigit() and int(argument) >= 1:
        return TargetSpec("top_k", k=int(argument))
    raise ValueError(f"target {value!r} is not valid; {hint}.")


def parse_baseline(value: Any) -> BaselineSpec:
    """'auto' | 'median' | 'mean' | 'median:PATH' | 'mean:PATH' | 'blur' | 'zeros' | 'constant:VALUE' | a
    number | 'file:PATH' -> BaselineSpec. median:PATH / mean:PATH: of a sample of a fixed reference
    file (e.g. the training data) instead of the run's own input, so runs on different data share
    one baseline (what a scheduled audit needs: a baseline that moves with each night's data
    moves every attribution with it)."""
    hint = ("expected 'auto', 'median', 'mean', 'median:PATH', 'mean:PATH', 'blur', 'zeros', 'constant:0.5' (or a number) "
            "or 'file:PATH'")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _constant_baseline(float(value), value)
    if not isinstance(value, str):
        raise ValueError(f"baseline {value!r} is not valid; {hint}.")
    if value in ("zeros", "auto", "median", "mean", "blur"):
        return BaselineSpec(value)
    kind, _, argument = value.partition(":")
    if kind == "constant":
        try:
            number = float(argument)
        except ValueError:
            number = None
        if number is not None:
            return _constant_baseline(number, value)
    if kind in ("file", "median", "mean") and argument:
        return BaselineSpec(kind, path=argument)
    raise ValueError(f"baseline {value!r} is not valid; {hint}.")


def parse_layer_baseline(value: Any) -> Optional[int]:
    """'zeros' -> None (a zero activation); 'id:N' -> N (the layer's output for id N everywhere)."""
    if value == "zeros":
        return None
    if isinstance(value, str) and value.startswith("id:") and value[3:].isdigit():
        return int(value[3:])
    raise ValueError(
        f"layer_baseline {value!r} is not valid; expected 'zeros' (a zero activation at the layer) or 'id:N' "
        f"(the layer's output for id N at every position, e.g. 'id:0' for a padding id)."
    )


def _constant_baseline(number: float, given: Any) -> BaselineSpec:
    if not math.isfinite(number):
        raise ValueError(
            f"baseline {given!r} is not a finite number: every point of the path from it would be "
            f"NaN/inf and so would every attribution; use a finite constant such as 'constant:0.5'."
        )
    return BaselineSpec("constant", value=number)


# A config is a small mapping of settings; a document that expands to more values is an alias
# bomb ("billion laughs": 459 bytes ran out of memory after 32 s), refused before it is built.
MAX_CONFIG_VALUES = 100_000


class _BoundedSafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader (no arbitrary objects) that refuses a document expanding to more than
    MAX_CONFIG_VALUES values once its aliases are followed, before any value is constructed."""

    def compose_document(self):
        node = super().compose_document()
        if _expanded_size(node, {}) > MAX_CONFIG_VALUES:
            raise _TooLarge()
        return node


class _TooLarge(Exception):
    pass


def _expanded_size(node: yaml.Node, sizes: dict) -> int:
    """Values in `node` with every alias expanded (memoised per node: linear in the document)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a node reached again while counting (a recursive alias) counts once
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value)
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_CONFIG_VALUES + 1)
    return sizes[id(node)]


def load_yaml_config(path: str) -> dict[str, Any]:
    """Reads a YAML config with yaml's SafeLoader (no arbitrary objects), at most
    MAX_CONFIG_VALUES values once aliases are expanded; local or any Beam filesystem path
    (gs://, s3://, ...)."""
    try:
        if "://" in path:
            from apache_beam.io.filesystems import FileSystems

            if not FileSystems.exists(path):
                raise FileNotFoundError(path)
            with FileSystems.open(path, compression_type="uncompressed") as handle:
                values = yaml.load(handle.read().decode("utf-8"), Loader=_BoundedSafeLoader)  # noqa: S506 (a SafeLoader)
        else:
            with open(path, encoding="utf-8") as handle:
                values = yaml.load(handle, Loader=_BoundedSafeLoader)  # noqa: S506 (a SafeLoader)
    except _TooLarge:
        raise ValueError(
            f"config file {path!r} expands to more than {MAX_CONFIG_VALUES:,} values once its aliases (*name) are "
            f"followed; a config is a small mapping of settings. Write the values out instead of nesting aliases."
        ) from None
    except FileNotFoundError:
        raise ValueError(f"config file {path!r} does not exist.") from None
    except IsADirectoryError:
        raise ValueError(f"config file {path!r} is a folder; pass the YAML file itself (e.g. configs/example.yaml).") from None
    except UnicodeDecodeError as error:
        raise ValueError(
            f"config file {path!r} is not UTF-8 text (byte {error.object[error.start:error.start + 1]!r} at "
            f"offset {error.start}); save it as UTF-8."
        ) from None
    except yaml.YAMLError as error:
        raise ValueError(f"config file {path!r} is not valid YAML: {error}") from None
    except ValueError as error:  # raised while building a value: Python's limit on integer digits
        raise ValueError(f"config file {path!r} holds a value that cannot be read ({str(error).split(';')[0]}); no "
                         f"setting takes a number that long.") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of settings; got {type(values).__name__}.")
    return values


def _vocabularies(value: Any) -> dict[str, tuple[str, ...]]:
    """vocabularies: {column: names by id}, each a list or a local file of one name per line."""
    if not isinstance(value, Mapping):
        raise ValueError(f"vocabularies must map an id column to its names (a list or a file); got {value!r}.")
    result = {}
    for column, names in value.items():
        if isinstance(names, str):
            if not os.path.isfile(names):
                raise ValueError(f"vocabulary file {names!r} for column {column!r} does not exist; give a local text file "
                                 f"with one name per line (line 1 = id 0), e.g. --vocabulary {column}=names.txt.")
            with open(names, encoding="utf-8") as handle:
                names = [line.rstrip("\r\n") for line in handle]
            while names and not names[-1]:
                names.pop()
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, (str, int)) for n in names):
            raise ValueError(f"vocabulary of column {column!r} must be a non-empty list of names or a file; got {names!r}.")
        result[str(column)] = tuple(str(n) for n in names)
    return result


def _class_names(value: Any) -> tuple[str, ...]:
    """class_names from a list, 'a,b,c', or a local file of one name per line (blank lines skipped)."""
    if isinstance(value, str):
        if "," in value:
            names = [n.strip() for n in value.split(",")]
        elif os.path.isfile(value):
            with open(value, encoding="utf-8") as handle:
                names = [line.strip() for line in handle if line.strip()]
        else:
            raise ValueError(f"class_names {value!r} is neither a comma-separated list of names nor a local file; give "
                             f"'--class-names setosa,versicolor,virginica' or a text file with one name per line.")
    elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int)) for v in value):
        names = [str(v) for v in value]
    else:
        raise ValueError(f"class_names must be a list of names, a comma-separated string or a file; got {value!r}.")
    if any(not n for n in names):
        raise ValueError(f"class_names has an empty name ({value!r}); give one non-empty name per class, in index order.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"class_names repeats {repeated}; each class needs its own name.")
    return tuple(names)


def _string_tuple(value: Any, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"{name} must be a string or a list of strings; got {value!r}.")


def _input_mapping(value: Any) -> dict[str, Union[str, tuple[str, ...]]]:
    if not isinstance(value, Mapping):
        raise ValueError(
            f"inputs must map model input names to a column or a list of columns; got {value!r}."
        )
    mapping: dict[str, Union[str, tuple[str, ...]]] = {}
    for name, columns in value.items():
        if isinstance(columns, str):
            mapping[str(name)] = columns
        elif isinstance(columns, (list, tuple)) and columns and all(isinstance(c, str) for c in columns):
            mapping[str(name)] = tuple(columns)
        else:
            raise ValueError(
                f"inputs[{name!r}] must be a column name or a non-empty list of column names; got {columns!r}."
            )
    return mapping


def _image_mapping(value: Any) -> dict[str, ImageSpec]:
    if not isinstance(value, Mapping):
        raise ValueError(
            f"images must map image columns to their decoding, e.g. images: {{image/encoded: {{size: [28, 28], channels: 1}}}} "
            f"(or --image image/encoded:28x28x1); got {value!r}."
        )
    return {str(column): image_spec(str(column), entry) for column, entry in value.items()}


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
# \Z, not $: "$" also matches before a trailing newline ('ab\n' made a folder named so).
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PARAM_VALUE = re.compile(r"[A-Za-z0-9_.=+,@-]+\Z")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
TEMPLATED_SETTINGS = ("model", "input", "output", "background", "baseline")


def _params(value: Any, date: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"params must map names to values (--param name=value); got {value!r}.")
    params = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _PARAM_NAME.match(name):
            raise ValueError(f"param name {name!r} is not valid; use letters, digits and _ (e.g. --param region=eu).")
        if isinstance(item, datetime.date):
            item = item.isoformat()
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise ValueError(f"param {name!r} must be a string or number; got {item!r}.")
        params[name] = _path_safe(name, str(item))
    if date is None:
        date = params.get("date")  # --param date=... is a date too
    if date is not None:
        if not isinstance(date, str) or not _DATE.match(date):
            raise ValueError(f"date must be a date written YYYY-MM-DD, such as 2026-11-28; got {date!r}.")
        try:
            datetime.date.fromisoformat(date)
        except ValueError:
            raise ValueError(f"date {date!r} is not a calendar date; write it YYYY-MM-DD, such as 2026-11-28.") from None
        if params.get("date", date) != date:
            raise ValueError(f"date is given twice with different values: --date {date!r} and --param date={params['date']!r}.")
        params["date"] = date
    return params


def _path_safe(name: str, value: str) -> str:
    """A template value goes into file paths: it may not climb out of them or glob."""
    if not _PARAM_VALUE.match(value) or value in (".", "..") or ".." in value:
        raise ValueError(
            f"param {name!r} value {value!r} cannot go into a path: use letters, digits and - _ . = + , @ only "
            f"(no / or \\, no '..', no glob characters), e.g. --param {name}=eu-west."
        )
    return value


def fill_template(text: str, params: Mapping[str, str], setting: str) -> str:
    """Replaces every {name} in `text` with params[name]; a name without a value is an error."""

    def value(match: re.Match) -> str:
        name = match.group(1)
        if not _PARAM_NAME.match(name):
            raise ValueError(f"{setting} {text!r} has a placeholder {{{name}}} that is not a plain name; use {{date}} or {{name}}.")
        if name not in params:
            flag = "--date YYYY-MM-DD" if name == "date" else f"--param {name}=VALUE"
            raise ValueError(f"{setting} {text!r} needs a value for {{{name}}}: pass {flag} (or set it under params in the config).")
        return params[name]

    return _PLACEHOLDER.sub(value, text)


def fill_path_templates(values: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    """The templated settings of `values` with their {name} placeholders filled."""
    filled: dict[str, Any] = {}
    for setting in TEMPLATED_SETTINGS:
        value = values.get(setting)
        if isinstance(value, str):
            filled[setting] = fill_template(value, params, setting)
        elif isinstance(value, tuple):
            filled[setting] = tuple(fill_template(v, params, setting) for v in value)
    return filled


def _check_paths(values: dict) -> None:
    """Refuses control characters in every path setting; writes the output folder one way
    (pipeline.paths). Input globs and the model path are used as given."""
    for setting in TEMPLATED_SETTINGS:
        value = values.get(setting)
        for text in (value,) if isinstance(value, str) else value if isinstance(value, tuple) else ():
            if isinstance(text, str):
                check_printable_path(text, setting)
    if isinstance(values.get("output"), str):
        values["output"] = normalized_path(values["output"], "output")


# Older spellings of settings (the command line's former flag names), accepted in YAML too.
SETTING_ALIASES = {"input_map": "inputs", "passthrough": "passthrough_columns", "slice_column": "slice_columns"}


def _resolve_aliases(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    resolved = dict(values)
    for alias, name in SETTING_ALIASES.items():
        if alias in resolved:
            if name in resolved:
                raise ValueError(f"{source} gives both {alias!r} and {name!r}, two names of one setting; keep {name!r}.")
            resolved[name] = resolved.pop(alias)
    return resolved


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6) if isinstance(value, str) else []
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{name} {value!r} is not valid; expected one of {list(choices)}.{hint}")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")


def _check_number(name: str, value: Any, expected: str, in_range) -> None:
    """A real, finite number within `in_range` (NaN compares false to everything, so it would slip
    through a plain range check and poison every result computed from it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be {expected}; got {value!r}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number ({expected}); got {value!r}.")
    if not in_range(value):
        raise ValueError(f"{name} must be {expected}; got {value!r}.")


# Upper bounds of the sizes, each far above any useful value and below what breaks a worker:
# - steps: Gauss-Legendre solves a steps x steps eigenproblem (4096: 128 MiB, seconds, once per
#   worker; 100,000 would need 74.5 GiB) and completeness errors stop improving long before.
# - samples: SmoothGrad/expected-gradients noise falls as 1/sqrt(samples); past 10,000 a run costs
#   10,000 gradient evaluations per record for under 1 % less noise.
# - batch_size, chunk_size: records per element and rows per gradient call are held in memory
#   (a chunk of 1,000,000 rows of a 28x28 image is 3 GiB of float32 before gradients).
LIMITS: dict[str, tuple[int, str]] = {
    "steps": (4096, "the Gauss-Legendre rule costs steps^3 time and steps^2 memory, and completeness stops improving long before"),
    "max_steps": (65_536, "each row may cost that many gradient evaluations, and completeness stops improving long before"),
    "samples": (10_000, "the sampling noise falls only as 1/sqrt(samples), and each sample is one gradient per record"),
    "batch_size": (1_000_000, "a batch is held in a worker's memory at once"),
    "chunk_size": (1_000_000, "a chunk's rows and their gradients are held in memory at once"),
    "compute_threads": (1024, "each thread holds a chunk's tensors, and more threads than cores only wait"),
    "quality_rows": (65_536, "the audit runs on the launcher, and its medians settle long before"),
    "quality_perturbations": (1000, "each perturbation explains every audited row again"),
    "quality_steps": (1024, "each point of the curves is one forward pass over the audited rows, four times"),
}


def _check_limit(name: str, value: Any) -> None:
    if value is None:
        return
    limit, reason = LIMITS[name]
    if value > limit:
        raise ValueError(f"{name} {value:,} is too large: at most {limit:,} ({reason}); use a smaller {name}.")
