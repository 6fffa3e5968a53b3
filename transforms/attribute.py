"""Attributing decoded batches: the worker-side engine and the Beam DoFn around it.

`AttributionEngine` (no Beam) loads the model and the reference rows once and turns a
`DecodedBatch` into an Arrow table of output rows. `AttributeBatches` is the thin Beam adapter: it
acquires one engine per worker process through `apache_beam.utils.shared.Shared` in `setup()`, so
every thread of a worker shares one model, and reports metrics (records, latency, model loads).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.shared import Shared
from apache_beam.utils.windowed_value import WindowedValue

from attributions.adaptive_ig import adaptive_integrated_gradients
from attributions.chunking import DEFAULT_CHUNK_MEMORY_MIB, automatic_chunk_size
from attributions.concurrency import run_ops_single_threaded
from attributions.expected_gradients import expected_gradients
from attributions.gradient import gradient
from attributions.gradient_x_input import gradient_x_input
from attributions.integrated_gradients import integrated_gradients
from attributions.kernel_shap import kernel_shap
from attributions.model_functions import ModelFunctions
from attributions.methods import BASELINE_METHODS, PLAYER_METHODS, SAMPLING_METHODS, XLA_METHODS
from attributions.occlusion import occlusion, sliding_occlusion
from attributions.sampled_shapley import sampled_shapley
from attributions.result import Attributions, attribution_mass
from attributions.smoothgrad import smoothgrad
from attributions.targets import TargetSpec, expand_targets, requested_targets
from attributions.xla_check import (
    RETIME_BELOW_SECONDS, XLA_DIFFERENCE_METRIC, XLA_METRICS, XlaDecision, compare_attributions, compile_failure, is_faster,
)
from audit.summary import RunSummary, SummarySpec
from audit.summary_accumulator import SummaryAccumulator
from transforms import progress
from transforms.output import attribution_table
from transforms.read import METRICS_NAMESPACE, read_all
from transforms.records import DecodedBatch, RecordSchema, decode_batch
from transforms.storage import model_storage, use_options

__all__ = ["AttributionSettings", "AttributionEngine", "AttributeBatches", "BatchTimeoutError", "load_reference_rows"]

_LOGGER = logging.getLogger(__name__)


class BatchTimeoutError(RuntimeError):
    """A batch was still being attributed after batch_timeout_seconds. Its thread cannot be
    stopped (a TensorFlow call cannot be interrupted): the process should end."""


@dataclass(frozen=True)
class AttributionSettings:
    """Everything a worker needs to attribute batches; resolved and validated on the launcher.

    method_params: the method's own settings (steps, rule, samples, seed, ...).
    baseline: 'zeros', 'constant', 'file' or 'data' (integrated gradients); reference_path: the baseline
    file, or the background rows of expected gradients; reference_format: that file's format.
    """

    model_path: str
    method: str
    target: TargetSpec
    schema: RecordSchema
    output_schema: pa.Schema
    method_params: dict = field(default_factory=dict)
    chunk_size: Optional[int] = None  # None: sized per model from chunk_memory_mib (attributions.chunking)
    chunk_memory_mib: int = DEFAULT_CHUNK_MEMORY_MIB
    output_name: Optional[str] = None
    explain_logits: bool = False
    unsafe_deserialization: bool = False
    baseline: str = "zeros"
    baseline_value: float = 0.0
    # baseline 'data': one flat tuple of values per model input (pipeline.baselines).
    baseline_values: Optional[tuple] = None
    # Per model input, the σ (pixels) of its blur baseline (each row blurred: attributions.blur),
    # or None where the baseline above applies; None: no blur baseline.
    baseline_blur: Optional[tuple] = None
    reference_path: Optional[str] = None
    reference_format: Optional[str] = None
    summary: Optional[SummarySpec] = None  # None: no dataset summaries
    # The launcher's fingerprint of the model: a worker refuses a model whose bytes differ.
    model_sha256: Optional[str] = None
    # Attribute at these layers' outputs (attributions.layers): the lower part of the model runs
    # once per batch, the method on the upper part; () attributes at the model inputs.
    layers: tuple[str, ...] = ()
    # Integrated gradients at layers: None, a zero activation; N, the layer's output for id N.
    layer_baseline_id: Optional[int] = None
    # Gradient calls run side by side per worker process, each op single-threaded
    # (attributions.concurrency); 1: one call at a time on TensorFlow's own thread pools.
    compute_threads: int = 1
    # Beam's filesystem options for workers Beam gives none (transforms.storage.use_options);
    # not in repr: they may hold keys, and the shared-model tag is built from the repr.
    filesystem_options: dict = field(default_factory=dict, repr=False, compare=False)
    # A batch still attributing after this many seconds fails its bundle (BatchTimeoutError).
    batch_timeout_seconds: Optional[float] = None
    # Names of the output's classes by index: the rows' target_name column (transforms.output).
    class_names: tuple[str, ...] = ()
    # XLA for the gradient calls (attributions.xla_check): 'auto' keeps it when it compiles, agrees
    # with TensorFlow's kernels on the first batch within xla_bound and is faster; 'on'; 'off'.
    xla: str = "auto"
    xla_bound: float = 0.05


def load_reference_rows(path: str, input_format: str, schema: RecordSchema) -> tuple:
    """All rows of a baseline/background file as model inputs, one (R, *shape) array per input.

    Raises ValueError when a row is invalid or the file is empty: references must be clean.
    """
    reference_schema = RecordSchema(input_format=input_format, model_inputs=schema.model_inputs)
    parts = []
    for raw in read_all(path, reference_schema):
        decoded, dead = decode_batch(raw, reference_schema)
        if dead:
            raise ValueError(f"reference file {path!r}: record {dead[0].key} is invalid: {dead[0].error}.")
        parts.append(decoded.inputs)
    if not parts:
        raise ValueError(f"reference file {path!r} holds no records; it needs at least one row.")
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(len(schema.model_inputs)))


def example_seeds(keys: pa.Array) -> np.ndarray:
    """uint64 per key (blake2b of its text): sampling depends on the record, not its position."""
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8).digest(), "little") for k in keys.to_pylist()],
        dtype=np.uint64,
    )


class AttributionEngine:
    """A loaded model with its compiled functions and references, attributing whole batches."""

    def __init__(self, settings: AttributionSettings, batches_at_once: int = 1):
        """batches_at_once: batches the caller attributes at the same time (their gradient calls
        share the compute threads)."""
        from attributions.loading import load_model

        self.settings = settings
        threads = settings.compute_threads
        if threads > 1:
            run_ops_single_threaded()  # before the model's first op, where this process allows it
        model = load_model(settings.model_path, settings.unsafe_deserialization, settings.model_sha256, model_storage(settings.model_path))
        self._model = model  # keeps the model (and its variables) alive
        # Each batch is split into enough calls for its share of the threads, not for all of them:
        # bigger calls cost less per row (measured on the bench's 64-256-256-10 MLP, 2 threads:
        # 310k rows/s in calls of 2,048 rows, 339k in calls of 4,096).
        calls_per_batch = max(1, -(-threads // max(1, batches_at_once)))

        def functions(xla: bool):
            if settings.layers:
                split, fns = model.layer_functions(settings.layers, settings.output_name, settings.explain_logits, threads, xla)
            else:
                split, fns = None, model.model_functions(settings.output_name, settings.explain_logits, threads, xla)
            return split, dataclasses.replace(fns, calls_per_batch=calls_per_batch)

        # XLA (attributions.xla_check): 'on' compiles it now; 'auto' keeps a compiled candidate
        # that the first batch checks against the kernels (_with_xla_settled).
        self.xla_decision, wants_xla = _xla_setting(settings)
        self.split, self.fns = functions(settings.xla == "on" and wants_xla)
        self._xla_candidate = functions(True)[1] if settings.xla == "auto" and wants_xla else None
        self._xla_lock = threading.Lock()
        self._xla_reported = False
        # Rows per gradient call: the explicit setting, else what the memory budget allows for
        # this model (measured on its traced gradient function, once per worker), the budget
        # shared by the calls that run at once.
        self.chunk_size = settings.chunk_size or automatic_chunk_size(self.fns, max(1, settings.chunk_memory_mib // threads))
        self._references = None
        self._input_references = None  # as the model inputs take them (before the lower part)
        self._background_mean = None
        if settings.reference_path is not None:
            self._input_references = load_reference_rows(settings.reference_path, settings.reference_format, settings.schema)
            self._references = self._method_inputs(self._input_references)
        self._layer_baselines = self._activation_baselines() if self.split is not None else ()
        self._token_lookups = {}  # source column -> attributions.layers.TokenLookup, for tokens_<column>
        if self.split is not None:
            from attributions.layers import token_lookup

            for spec in settings.schema.model_inputs:
                if spec.tokens:
                    layer = self.split.layer_names[self.split.replaced_inputs.index(spec.name)]
                    self._token_lookups[spec.columns[0].name] = token_lookup(model._keras_model, layer)
        self._background_weights = None
        if settings.method == "kernel_shap" and settings.method_params.get("background_clusters"):
            from attributions.kernel_shap import background_summary

            self._references, self._background_weights = background_summary(
                self._references, settings.method_params["background_clusters"], settings.method_params["seed"])
        if settings.method in ("expected_gradients", "kernel_shap"):
            outputs = self.fns.predict(self._references, self.chunk_size)  # (R, C)
            self._background_mean = np.average(outputs, axis=0, weights=self._background_weights)  # (C,)
        self.players = self._player_layout() if settings.method in PLAYER_METHODS else None
        self._grad_cam = None
        if settings.method == "grad_cam":
            self._grad_cam = model.grad_cam(settings.method_params["layer"], settings.output_name, settings.explain_logits)

    def _with_xla_settled(self, run: Callable[[ModelFunctions], Attributions]) -> Attributions:
        """run(fns): the method on this engine's functions. Under xla 'auto' the first call runs it
        on both TensorFlow's kernels and the XLA candidate, keeps XLA for this engine when the two
        agree and XLA was faster (attributions.xla_check), and returns the chosen result; later
        calls run once."""
        if self._xla_candidate is None:
            return run(self.fns)
        with self._xla_lock:  # batches in flight wait for the first one's choice
            if self._xla_candidate is None:
                return run(self.fns)
            kernels, kernel_seconds = _timed_run(run, self.fns)
            try:
                compiled, xla_seconds = _timed_run(run, self._xla_candidate)
                decision = compare_attributions(kernels.attributions, compiled.attributions, self.settings.xla_bound)
                if decision.used:
                    if kernel_seconds + xla_seconds < RETIME_BELOW_SECONDS:  # warm passes: compile time must not decide
                        kernel_seconds, xla_seconds = _warm_seconds(run, self.fns, self._xla_candidate)
                    decision = (decision.timed(kernel_seconds, xla_seconds) if is_faster(xla_seconds, kernel_seconds)
                                else decision.slower(kernel_seconds, xla_seconds))
            except Exception as error:  # pylint: disable=broad-except  # XLA refuses graphs in many ways; all mean: kernels
                compiled, decision = None, compile_failure(error)
            if decision.used:
                self.fns = self._xla_candidate
            self._xla_candidate = None
            self.xla_decision = decision
            return compiled if decision.used else kernels

    def take_xla_decision(self) -> Optional[XlaDecision]:
        """The XLA decision once it is made, returned to one caller only (it is counted once per
        engine in the run's metrics); None before it is made or after it was taken."""
        with self._xla_lock:
            if self._xla_reported or self._xla_candidate is not None or self.xla_decision is None:
                return None
            self._xla_reported = True
            return self.xla_decision

    def _player_layout(self):
        """The players of the method's inputs (transforms.players): at layers, one per position of
        each activation, then the kept inputs' own."""
        from transforms.players import run_player_layout

        p, split = self.settings.method_params, self.split
        shapes = {} if split is None else dict(zip(split.replaced_inputs, self.fns.input_shapes[:len(split.layer_names)]))
        return run_player_layout(self.settings.schema.model_inputs, shapes, p.get("groups"), p.get("patch"),
                                 None if split is None else split.kept_inputs)

    def _baselines(self, method_inputs: tuple, settings: Optional[AttributionSettings] = None) -> tuple:
        """One (*shape) (or (1, *shape)) array per input of the method (the model inputs, or the
        layer activations followed by the kept inputs), broadcast over a batch; a blurred input's
        is (R, *shape), each row's own blurred copy. settings: whose baseline (default the run's;
        the quality audit asks for others)."""
        settings = settings or self.settings
        shapes = [spec.shape for spec in settings.schema.model_inputs]
        if settings.baseline == "file":
            rows = tuple(r[:1] for r in self._input_references)
        elif settings.baseline == "data":
            rows = tuple(np.asarray(v, np.float32).reshape(shape) for v, shape in zip(settings.baseline_values, shapes))
        else:
            value = settings.baseline_value if settings.baseline == "constant" else 0.0
            rows = tuple(np.full(shape, value, dtype=np.float32) for shape in shapes)
        if settings.baseline_blur:
            rows = self._blurred(rows, method_inputs, settings.baseline_blur)
        if self.split is None:
            return rows
        by_name = dict(zip(self._model.input_names, rows))
        return self._layer_baselines + tuple(by_name[n] for n in self.split.kept_inputs)

    def _blurred(self, rows: tuple, method_inputs: tuple, sigmas: tuple) -> tuple:
        """`rows` (per model input) with each blurred input's replaced by its rows blurred."""
        from attributions.blur import gaussian_blur

        names = self._model.input_names
        if self.split is None:
            values = dict(zip(names, method_inputs))
        else:
            values = dict(zip(self.split.kept_inputs, method_inputs[len(self.split.layer_names):]))
        return tuple(gaussian_blur(values[name], sigma) if sigma is not None and name in values else row
                     for name, row, sigma in zip(names, rows, sigmas))

    def _activation_baselines(self) -> tuple:
        """(1, *activation_shape) per layer: zeros, or the layer's output for id N at every position."""
        from attributions.layers import layer_output_for_id

        split, n = self.split, self.settings.layer_baseline_id
        if n is None:
            return tuple(np.zeros((1, *shape), dtype=np.float32) for shape in split.activation_shapes)
        return tuple(layer_output_for_id(self._model._keras_model, name, n) for name in split.layer_names)

    def _method_inputs(self, inputs: tuple) -> tuple:
        """The model inputs (B, *shape_i) of a batch -> what the method attributes: themselves, or
        with layers, the layers' activations (B, *activation_shape) (the lower part run once, in
        chunks of chunk_size rows) followed by the inputs the upper part still reads."""
        if self.split is None:
            return inputs
        model, split = self._model, self.split
        by_name = dict(zip(model.input_names, inputs))
        lower_inputs = tuple(_as_model_dtype(by_name[n], model.input_dtypes[model.input_names.index(n)]) for n in split.lower_inputs)
        rows, step = len(lower_inputs[0]), max(1, self.chunk_size)
        parts = [split.lower(tuple(x[i : i + step] for x in lower_inputs)) for i in range(0, rows, step)]
        activations = tuple(
            np.concatenate([np.asarray(p[k], dtype=np.float32) for p in parts]) for k in range(len(split.layer_names))
        )  # each (B, *activation_shape)
        return activations + tuple(np.asarray(by_name[n], dtype=np.float32) for n in split.kept_inputs)

    def _written_mass(self, attributions: tuple) -> np.ndarray:
        """(B,) float64 Σ|attr| over the values the output holds: at a layer, its per-position sums
        (reduce_to_positions), not the (positions x width) values they sum; so completeness_error
        and completeness_met can be recomputed from the written columns (docs/completeness.md)."""
        if self.split is None:
            return attribution_mass(attributions)
        from attributions.layers import reduce_to_positions

        count = len(self.split.layer_names)
        return attribution_mass(tuple(reduce_to_positions(a) for a in attributions[:count]) + tuple(attributions[count:]))

    def _input_attributions(self, result: Attributions, rows: int) -> Attributions:
        """Attributions of the method's inputs -> one array per model input: an activation's
        (R, *positions, D) summed over D (attributions.layers.reduce_to_positions), a kept input's
        as it is, zeros for an input that does not reach the output."""
        if self.split is None:
            return result
        from attributions.layers import reduce_to_positions

        split, model = self.split, self._model
        count = len(split.layer_names)
        by_name = {n: reduce_to_positions(a) for n, a in zip(split.replaced_inputs, result.attributions[:count])}
        by_name.update(zip(split.kept_inputs, result.attributions[count:]))
        attributions = tuple(
            by_name[n] if n in by_name else np.zeros((rows, *shape), dtype=np.float32)
            for n, shape in zip(model.input_names, model.input_shapes)
        )
        return dataclasses.replace(result, attributions=attributions)

    def attribute(self, batch: DecodedBatch) -> pa.Table:
        """Output rows (see transforms.output) for one batch of valid records."""
        return self.attribute_rows(batch)[0]

    def attribute_rows(self, batch: DecodedBatch) -> tuple[pa.Table, np.ndarray]:
        """Output rows and example_index (R,): the record of each row (top_k gives k rows each)."""
        s = self.settings
        method_inputs = self._method_inputs(batch.inputs)
        if s.method in _GRADIENT_METHODS and s.target.mode != "top_k":
            # One fused call per chunk: the gradient function resolves 'predicted' itself.
            targets = requested_targets(s.target, batch.num_records, batch.labels)
            result = self._with_xla_settled(lambda fns: _GRADIENT_METHODS[s.method](fns, method_inputs, targets, self.chunk_size))
            example_index, targets, scores = np.arange(batch.num_records), result.targets, result.target_scores
        else:
            outputs = self.fns.predict(method_inputs, self.chunk_size)  # (B, C)
            example_index, targets = expand_targets(s.target, outputs, batch.labels)  # (R,), (R,)
            scores = outputs[example_index, targets]  # (R,)
            inputs = method_inputs
            if len(example_index) != batch.num_records:  # top_k: one row per (record, class)
                inputs = tuple(x[example_index] for x in inputs)  # (R, *shape)
            sampling = s.method in SAMPLING_METHODS
            key_seeds = example_seeds(batch.keys)[example_index] if sampling else None
            result = self._with_xla_settled(lambda fns: self._run_method(inputs, targets, key_seeds, outputs[example_index], fns=fns))
        result = self._input_attributions(result, len(example_index))
        tokens = {column: self._tokens(lookup, batch.inputs)[example_index] for column, lookup in self._token_lookups.items()}
        table = attribution_table(batch, s.schema, s.output_schema, example_index, targets, scores, result, tokens, s.class_names)
        return table, example_index

    def _tokens(self, lookup, inputs: tuple) -> np.ndarray:
        """object (B, positions) str: the vocabulary token at each position of each record."""
        model = self._model
        by_name = dict(zip(model.input_names, inputs))
        return lookup.tokens(tuple(_as_model_dtype(by_name[n], model.input_dtypes[model.input_names.index(n)]) for n in lookup.inputs))

    def summary_inputs(self, inputs: tuple) -> tuple:
        """The batch's inputs as the summaries take them (float rows): an input whose tokens come
        from the model's vocabulary becomes its vocabulary ids, (B, positions) (the token view
        totals them; exemplars show them); text without a vocabulary becomes NaN."""
        specs = self.settings.schema.model_inputs
        if not self._token_lookups and not any(c.dtype == "string" for spec in specs for c in spec.columns):
            return inputs
        model = self._model
        by_name = dict(zip(model.input_names, inputs))
        converted = []
        for spec, x in zip(specs, inputs):
            lookup = self._token_lookups.get(spec.columns[0].name)
            if lookup is not None:
                values = tuple(_as_model_dtype(by_name[n], model.input_dtypes[model.input_names.index(n)]) for n in lookup.inputs)
                converted.append(lookup.token_ids(values).astype(np.float32))  # (B, positions)
            elif spec.columns[0].dtype == "string":
                converted.append(np.full((len(x), spec.columns[0].attr_length or int(np.prod(spec.shape))), np.nan, np.float32))
            else:
                converted.append(x)
        return tuple(converted)

    def explain(self, method_inputs: tuple, targets: np.ndarray, key_seeds: Optional[np.ndarray] = None,
                baselines: Optional[tuple] = None) -> Attributions:
        """The method's attributions of what it attributes (`method_inputs`: the model inputs, or
        at layers their activations and the kept inputs), for fixed targets (R,) >= 0; key_seeds
        uint64 (R,) for the sampling methods; baselines: integrated gradients' (default the run's).
        What the quality audit (pipeline.quality) measures, before any per-position sum."""
        outputs = self.fns.predict(method_inputs, self.chunk_size)
        targets = np.asarray(targets, np.int32)
        return self._with_xla_settled(lambda fns: self._run_method(method_inputs, targets, key_seeds, outputs, baselines, fns))

    def scores(self, method_inputs: tuple, targets: np.ndarray) -> np.ndarray:
        """float64 (R,): the explained output at each row's target."""
        outputs = self.fns.predict(method_inputs, self.chunk_size)
        return np.asarray(outputs, np.float64)[np.arange(len(targets)), targets]

    def method_inputs(self, inputs: tuple) -> tuple:
        """What the method attributes for these model inputs (see _method_inputs)."""
        return self._method_inputs(inputs)

    def baselines(self, method_inputs: tuple, settings: Optional[AttributionSettings] = None) -> tuple:
        """Integrated gradients' baselines of these rows under `settings` (default the run's)."""
        return self._baselines(method_inputs, settings)

    def weights(self) -> list:
        """The model's trainable variables (assignable): what the randomisation test shuffles."""
        return self._model.weights()

    def _run_method(
        self, inputs: tuple, targets: np.ndarray, key_seeds: Optional[np.ndarray], outputs: np.ndarray,
        baselines: Optional[tuple] = None, fns: Optional[ModelFunctions] = None,
    ) -> Attributions:
        """inputs (R, *shape) per model input, targets (R,) >= 0, key_seeds uint64 (R,) for the
        sampling methods (a hash of each row's record key), outputs (R, C): the model's at inputs;
        baselines: integrated gradients' (default the run's); fns: the functions (default the engine's)."""
        s, p = self.settings, self.settings.method_params
        fns = fns or self.fns
        if baselines is None and s.method in BASELINE_METHODS:
            baselines = self._baselines(inputs)
        if s.method in _GRADIENT_METHODS:
            return _GRADIENT_METHODS[s.method](fns, inputs, targets, self.chunk_size)
        if s.method == "grad_cam":
            maps, upsampled, _ = self._grad_cam(inputs[0], targets, self.chunk_size)  # (R, h, w), (R, H, W)
            channels = inputs[0].shape[-1]
            # attr_<column> keeps the column's (H, W, C) layout: the upsampled map in every channel.
            attribution = np.repeat(upsampled[..., np.newaxis], channels, axis=-1)  # (R, H, W, C)
            return Attributions((attribution,), layer_maps=maps)
        if s.method == "integrated_gradients" and p.get("completeness_target") is not None:
            return adaptive_integrated_gradients(
                fns, inputs, baselines, targets, p["completeness_target"], p["steps"], p["max_steps"], p["rule"],
                self.chunk_size, outputs, mass=self._written_mass,
            )
        if s.method == "integrated_gradients":
            return integrated_gradients(
                fns, inputs, baselines, targets, p["steps"], p["rule"], self.chunk_size, outputs, self._written_mass
            )
        if s.method == "occlusion":
            if p.get("window") is not None:
                return sliding_occlusion(fns, inputs, baselines, targets, p["window"], p["stride"], self.chunk_size)
            return occlusion(fns, inputs, baselines, targets, self.players.players, self.chunk_size)
        seeds = key_seeds + targets.astype(np.uint64)  # top_k rows of one record draw differently
        if s.method == "kernel_shap":
            return kernel_shap(fns, inputs, self._references, targets, self.players.players, seeds, p["samples"], p["seed"],
                               self.chunk_size, self._background_mean, self._background_weights, self._written_mass)
        if s.method == "sampled_shapley":
            return sampled_shapley(fns, inputs, baselines, targets, self.players.players, seeds, p["samples"], p["seed"],
                                   self.chunk_size)
        if s.method == "smoothgrad":
            return smoothgrad(
                fns, inputs, targets, seeds, p["smoothgrad_variant"], p["samples"], p["noise_fraction"], p["seed"], self.chunk_size
            )
        return expected_gradients(
            fns, inputs, self._references, targets, seeds, p["samples"], p["seed"], self.chunk_size, self._background_mean,
            self._written_mass,
        )


_GRADIENT_METHODS = {"gradient": gradient, "gradient_x_input": gradient_x_input}


def _timed_run(run: Callable[[ModelFunctions], Attributions], fns: ModelFunctions) -> tuple[Attributions, float]:
    """run(fns) and the seconds it took."""
    started = time.perf_counter()
    result = run(fns)
    return result, time.perf_counter() - started


def _warm_seconds(run: Callable[[ModelFunctions], Attributions], kernels: ModelFunctions, xla: ModelFunctions) -> tuple[float, float]:
    """The better of two warm passes each, interleaved (a shared machine's noise hits both alike)."""
    times = [(_timed_run(run, kernels)[1], _timed_run(run, xla)[1]) for _ in range(2)]
    return min(t[0] for t in times), min(t[1] for t in times)


def _xla_setting(settings: AttributionSettings) -> tuple[Optional[XlaDecision], bool]:
    """(the decision already made, or None while 'auto' waits for the first batch; whether the
    method's gradient calls may use XLA at all)."""
    if settings.method not in XLA_METHODS:
        return XlaDecision(False, f"{settings.method} does not run the gradient calls XLA compiles"), False
    if settings.xla == "off":
        return XlaDecision(False, "xla is 'off'"), False
    if settings.xla == "on":
        return XlaDecision(True, "xla is 'on': compiled without a check"), True
    return None, True



def _as_model_dtype(values: np.ndarray, dtype: str) -> np.ndarray:
    """A decoded input in the model input's dtype (strings stay an object array of str/bytes)."""
    return values if dtype == "string" else np.asarray(values, dtype=dtype)


# Engines loaded in this process that no bundle has counted yet (metrics updated in setup() are
# dropped by some runners, so loads are reported from start_bundle).
_unreported_loads = 0
_unreported_loads_lock = threading.Lock()


# Batches attributed at once per DoFn instance while its thread decodes the next. With one, the
# compute threads idled while a batch's rows were assembled and the next batch's blocks were not yet
# submitted; two let one batch's gradient calls run while the other's are prepared and finished.
# Measured as bench/default_job.py does at 2M rows on 2 idle cores, 2 rounds each, against the
# script in the same round: script wall / pipeline wall 0.88 and 0.89 with one, 1.10 and 1.11 with two.
BATCHES_IN_FLIGHT = 2


class AttributeBatches(beam.DoFn):
    """DecodedBatch -> pyarrow.Table of output rows, with one engine per worker process.

    With settings.summary set, each bundle's `RunSummary` also goes to the SUMMARY_TAG output
    (summarized here, where the inputs are at hand for the exemplars; merged by a combiner). The
    batches are summarized in a background thread while the model works on the next batch, and
    merged there: one summary per bundle, emitted in finish_bundle.

    Each batch is attributed on an engine thread (BATCHES_IN_FLIGHT at once) while the bundle's
    thread reads and decodes the next: a batch's rows are emitted once later batches have been
    handed over, the last ones in finish_bundle, in the order the batches came.
    """

    SUMMARY_TAG = "summaries"

    def __init__(self, settings: AttributionSettings):
        self._settings = settings
        self._shared = Shared()
        self._engine = None
        self._records = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_attributed")
        self._rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_attributed")
        self._not_finite = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "rows_not_finite")
        self._loads = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "model_loads")
        self._latency = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "attribution_batch_latency_micro_secs")
        self._load_latency = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "model_load_latency_milli_secs")
        self._chunk_rows = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, "gradient_chunk_rows")
        self._summary_cpu = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "summaries_cpu_micro_secs")
        # Per engine (worker process), once its XLA decision is made (attributions.xla_check); the
        # manifest's xla line is made from them (XLA_METRICS).
        self._xla_metrics = {name: beam.metrics.Metrics.counter(METRICS_NAMESPACE, name) for name in XLA_METRICS.values()}
        self._xla_difference = beam.metrics.Metrics.distribution(METRICS_NAMESPACE, XLA_DIFFERENCE_METRIC)
        self._load_millis = None
        self._summaries: Optional[_BundleSummary] = None
        self._timed_out = False

    def _load(self):
        global _unreported_loads
        start = time.perf_counter()
        engine = _EngineHolder(AttributionEngine(self._settings, BATCHES_IN_FLIGHT))
        self._load_millis = int((time.perf_counter() - start) * 1000)
        with _unreported_loads_lock:
            _unreported_loads += 1
        return engine

    def setup(self):
        use_options(self._settings.filesystem_options)
        # The tag ties the shared copy to these settings: two steps with different models in
        # one process get one engine each.
        self._engine = self._shared.acquire(self._load, tag=_settings_tag(self._settings)).engine
        self._attributing = ThreadPoolExecutor(max_workers=BATCHES_IN_FLIGHT, thread_name_prefix="attribute")
        self._in_flight = collections.deque()  # (batch, Future of its attribution), oldest first
        if self._settings.summary is not None:
            self._summaries = _BundleSummary(self._settings.summary)

    def start_bundle(self):
        global _unreported_loads
        for _, attributed in self._in_flight:  # a failed bundle's batches must not reach the next one
            attributed.cancel()
        self._in_flight.clear()
        if self._summaries is not None:
            self._summaries.reset()  # a failed bundle's partial summary must not reach the next one
        with _unreported_loads_lock:
            loads, _unreported_loads = _unreported_loads, 0
        if loads:
            self._loads.inc(loads)
        if self._load_millis is not None:
            self._load_latency.update(self._load_millis)
            self._load_millis = None

    def process(self, batch: DecodedBatch):
        # The batch is attributed on the engine thread while this thread returns to read and
        # decode the next one; its rows are emitted once the next batch has been handed over.
        self._in_flight.append((batch, self._attributing.submit(self._attribute, batch)))
        while len(self._in_flight) > BATCHES_IN_FLIGHT:
            yield from self._emit(*self._in_flight.popleft())

    def _attribute(self, batch: DecodedBatch) -> tuple[pa.Table, np.ndarray, int]:
        start = time.perf_counter()
        table, example_index = self._engine.attribute_rows(batch)
        return table, example_index, int((time.perf_counter() - start) * 1e6)

    def _emit(self, batch: DecodedBatch, attributed: Future):
        try:
            table, example_index, micros = attributed.result(self._settings.batch_timeout_seconds)  # re-raises its failure
        except FutureTimeout:
            self._timed_out = True
            raise BatchTimeoutError(
                f"a batch of {batch.num_records} records (first key {batch.keys[0].as_py() if len(batch.keys) else '?'}) was still being "
                f"attributed after {self._settings.batch_timeout_seconds:g} s (batch_timeout_seconds): the model may never "
                f"finish on it (a loop that does not end). Check the model, or raise --batch-timeout-seconds for a slow one."
            ) from None
        self._latency.update(micros)
        self._chunk_rows.update(self._engine.chunk_size)
        xla = self._engine.take_xla_decision()
        if xla is not None:
            self._xla_metrics[XLA_METRICS["xla" if xla.used else "kernels"]].inc()
            if xla.outcome in XLA_METRICS:
                self._xla_metrics[XLA_METRICS[xla.outcome]].inc()
            if xla.largest_difference is not None:
                self._xla_difference.update(int(min(xla.largest_difference, 1e9) * 1e9))  # parts per billion
            if xla.outcome in ("failed", "disagreed", "slower"):
                _LOGGER.warning("xla: %s", xla.reason)
        self._records.inc(batch.num_records)
        progress.add_done(batch.num_records)
        self._rows.inc(table.num_rows)
        not_finite = table.num_rows - pa.compute.sum(table.column("attributions_finite")).as_py()
        if not_finite:
            self._not_finite.inc(not_finite)
        yield table
        if self._summaries is not None:
            self._summaries.add(table, self._engine.summary_inputs(batch.inputs), example_index)

    def finish_bundle(self):
        while self._in_flight:
            for table in self._emit(*self._in_flight.popleft()):
                yield WindowedValue(table, GlobalWindow().max_timestamp(), [GlobalWindow()])
        summary = self._summaries.result() if self._summaries is not None else None
        if summary is not None:
            self._summary_cpu.inc(self._summaries.cpu_micros)  # counted here: metrics are per bundle thread
            yield beam.pvalue.TaggedOutput(
                self.SUMMARY_TAG, WindowedValue(summary, GlobalWindow().max_timestamp(), [GlobalWindow()])
            )

    def teardown(self):
        # After a batch timed out its thread is still inside TensorFlow: waiting would never end.
        self._attributing.shutdown(wait=not self._timed_out, cancel_futures=self._timed_out)
        if self._summaries is not None:
            self._summaries.close()


class _BundleSummary:
    """The summary of a bundle's batches, computed off the model's path: each batch is added to a
    `SummaryAccumulator` in one background thread (numpy and TensorFlow release the GIL in their
    heavy steps, so it overlaps the next batch's gradients). One batch in flight at a time, so at
    most one batch's table waits here; a failure re-raises in the bundle that added the batch.
    cpu_micros: the CPU time the thread spent on the bundle's batches (what summaries cost)."""

    def __init__(self, spec: SummarySpec):
        self._spec = spec
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="summaries")
        self._in_flight = None
        self._accumulator = SummaryAccumulator(spec)
        self.cpu_micros = 0

    def add(self, table: pa.Table, inputs: tuple, example_index: np.ndarray) -> None:
        self._wait()
        self._in_flight = self._executor.submit(self._add, self._accumulator, table, inputs, example_index)

    def _add(self, accumulator: SummaryAccumulator, table: pa.Table, inputs: tuple, example_index: np.ndarray) -> None:
        start = time.thread_time()
        try:
            accumulator.add(table, inputs, example_index)
        finally:
            self.cpu_micros += int((time.thread_time() - start) * 1e6)

    def _wait(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # re-raises a failed summary

    def reset(self) -> None:
        try:
            self._wait()
        except Exception:  # noqa: BLE001 - the failed bundle already reported its error
            pass
        self._accumulator, self.cpu_micros = SummaryAccumulator(self._spec), 0

    def result(self) -> Optional[RunSummary]:
        """The bundle's summary (None without batches); starts the next bundle afresh. A failed
        batch re-raises here, and the next bundle's `reset` drops what it left."""
        self._wait()
        summary, self._accumulator = self._accumulator.result(), SummaryAccumulator(self._spec)
        return summary  # cpu_micros stays until the next bundle starts (reset)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


class _EngineHolder:
    """Weak-referenceable wrapper (Shared keeps weak references to what it hands out)."""

    def __init__(self, engine: AttributionEngine):
        self.engine = engine


def _settings_tag(settings: AttributionSettings) -> str:
    return hashlib.sha256(repr(settings).encode()).hexdigest()
