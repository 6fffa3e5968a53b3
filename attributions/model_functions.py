"""The one model contract every attribution method uses.

`build_model_functions` turns "a callable from model inputs to one output tensor" into two compiled
`tf.function`s with fixed input signatures, so each traces once per input shape, not once per batch:

* ``predict(inputs) -> outputs``
    inputs:  tuple of float32 arrays, one per model input, each (B, *input_shape)
    outputs: float32 (B, C); C is the size of the explained output (1 for a scalar output)
* ``gradients(inputs, targets) -> (target_scores, input_gradients, used_targets)``
    targets:         int32 (B,); an entry < 0 means "the argmax of the outputs at these inputs"
    target_scores:   float32 (B,), outputs[b, used_targets[b]]
    input_gradients: tuple of float32 arrays, each (B, *input_shape): d target_score / d input
    used_targets:    int32 (B,)
* ``path_gradients(baselines, diffs, alphas, weights, targets) -> weighted_sums``
    baselines, diffs: tuple of float32 arrays, one per model input, each (E, *input_shape)
    alphas, weights:  float64 (S,), points on the path and their quadrature weights
    targets:          int32 (E,), >= 0
    weighted_sums:    tuple of float64 arrays, each (E, *input_shape):
                      sum_s weights[s] * d score / d input at float32(baselines + alphas[s] * diffs)
  The E x S points are built, differentiated and weighted inside one compiled call (path
  methods: integrated gradients), so only E rows cross between numpy and TensorFlow, not E x S.
  The path arithmetic is compiled with XLA; the model runs on TensorFlow's own kernels unless
  ``xla`` (below).

XLA (``build_model_functions(..., xla=True)``): `gradients` and `path_gradients` are compiled
whole, model included, into one XLA program per call shape (fused elementwise work, no per-op
dispatch). XLA's dots round differently in the last bits, which can flip a ReLU at a kink, so the
results are close to, not equal to, the TensorFlow-kernel functions': `transforms.attribute`
compares the two on a run's first rows and keeps XLA only where they agree
(`attributions.xla_check`). XLA compiles once per shape, so calls are padded with zero rows to a
power of two of the caller's block (`pad_to`, `padded_rows`): a run compiles a few programs. `predict`
always runs on TensorFlow's kernels, so each row's completeness error compares the XLA
gradients with the kernels' outputs.

Concurrency (`attributions.concurrency`): with ``concurrent_calls`` N > 1 the chunked helpers
(`predict`, `map`, and the methods through them) run up to N calls at once on the functions' own
thread pool, each on its own rows; results are the same as one call at a time.

The model is always called with ``training=False`` (dropout and batch norm in inference mode).
The functions are traced without AutoGraph: nothing here branches on tensor values, Keras 3 layers
use explicit control-flow ops (they must run on JAX too), and converting the Keras call graph took
about 0.3 s of every run's first batch.
"""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from attributions.concurrency import ordered_map, split_rows

__all__ = ["ModelFunctions", "build_model_functions"]

# Maps a tuple of (B, *input_shape) tensors to the explained output, (B, C).
OutputFn = Callable[[tuple], tf.Tensor]


@dataclass(frozen=True)
class ModelFunctions:
    """Compiled predict/gradient functions over one model output (see module docstring)."""

    predict_fn: Callable
    gradients_fn: Callable
    path_gradients_fn: Callable
    input_shapes: tuple[tuple[int, ...], ...]
    num_outputs: int
    concurrent_calls: int = 1  # calls run at once by `map` (attributions.concurrency)
    executor: Optional[Executor] = None  # their threads; None when concurrent_calls is 1
    xla: bool = False  # gradients and path_gradients compiled whole with XLA (module docstring)
    # Calls a batch is split into at least (`rows_per_call`); None: concurrent_calls. A caller
    # that attributes several batches at once needs fewer: their calls fill the threads together.
    calls_per_batch: Optional[int] = None

    def map(self, function: Callable, items: Iterable) -> Iterator:
        """function(item) per item in order, up to `concurrent_calls` at once (`ordered_map`)."""
        return ordered_map(function, items, self.executor, self.concurrent_calls)

    def rows_per_call(self, rows: int, chunk_size: int) -> int:
        """Rows per call for `rows` rows in chunks of at most `chunk_size`: enough calls for
        `calls_per_batch` (default `concurrent_calls`) threads (`split_rows`)."""
        return split_rows(rows, chunk_size, self.calls_per_batch or self.concurrent_calls)

    def predict(self, inputs: Sequence[np.ndarray], chunk_size: int | None = None) -> np.ndarray:
        """(B, *shape_i) per input -> float32 (B, C), at most `chunk_size` rows per call."""
        num_examples = len(inputs[0])
        step = num_examples if chunk_size is None else self.rows_per_call(num_examples, chunk_size)
        if num_examples <= step:
            return self.predict_fn(_as_tensors(inputs)).numpy()
        starts = range(0, num_examples, step)
        return np.concatenate(list(self.map(
            lambda i: self.predict_fn(_as_tensors([x[i : i + step] for x in inputs])).numpy(), starts
        )))

    def gradients(
        self, inputs: Sequence[np.ndarray], targets: np.ndarray, pad_to: Optional[int] = None
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
        """(B, *shape_i) per input, int32 (B,) -> scores (B,), grads (B, *shape_i) each, targets (B,).

        pad_to: the caller's full call size; with XLA a smaller call is padded (`padded_rows`)."""
        num = len(targets)
        targets = np.asarray(targets, dtype=np.int32)
        padded = padded_rows(num, pad_to) if self.xla else num
        if padded > num:
            inputs = tuple(_pad_rows(x, padded) for x in inputs)
            targets = _pad_rows(targets, padded)
        scores, grads, used = self.gradients_fn(_as_tensors(inputs), tf.convert_to_tensor(targets))
        return scores.numpy()[:num], tuple(g.numpy()[:num] for g in grads), used.numpy()[:num]

    def path_gradients(
        self,
        baselines: Sequence[np.ndarray],
        diffs: Sequence[np.ndarray],
        alphas: np.ndarray,
        weights: np.ndarray,
        targets: np.ndarray,
        pad_to: Optional[int] = None,
    ) -> tuple[np.ndarray, ...]:
        """(E, *shape_i) baselines and diffs per input, float64 (S,) alphas and weights, int32 (E,)
        targets -> float64 (E, *shape_i) weighted gradient sums per input (module docstring). A
        baseline may be one row, (1, *shape_i): the same for every example, broadcast in the call.

        pad_to: the caller's full block of examples. XLA compiles once per shape, so a smaller
        block is padded with zero rows (`padded_rows`): a run compiles a handful of shapes, not
        one per batch remainder.
        """
        num = len(targets)
        padded = padded_rows(num, pad_to)
        if padded > num:
            baselines = tuple(b if len(b) == 1 else _pad_rows(b, padded) for b in baselines)
            diffs = tuple(_pad_rows(d, padded) for d in diffs)
            targets = _pad_rows(np.asarray(targets, dtype=np.int32), padded)
        sums = self.path_gradients_fn(
            _as_tensors(baselines),
            _as_tensors(diffs),
            tf.convert_to_tensor(np.asarray(alphas, dtype=np.float64)),
            tf.convert_to_tensor(np.asarray(weights, dtype=np.float64)),
            tf.convert_to_tensor(np.asarray(targets, dtype=np.int32)),
        )
        return tuple(t.numpy()[:num] for t in sums)


def padded_rows(rows: int, pad_to: Optional[int]) -> int:
    """Rows a call of `rows` rows is padded to: the next power of two, at most `pad_to` (None or
    rows >= pad_to: not padded). XLA compiles one program per shape (the path arithmetic's small
    programs ~0.06 s each on the bench's MLP, the whole model's ~0.2-0.3 s): a run compiles a few
    powers of two, and a call never computes more than twice its rows (padding a 4,096-row batch
    to a 65,536-row chunk made the plain gradient 2.7x slower per record, measured)."""
    if pad_to is None or rows >= pad_to:
        return rows
    return min(int(pad_to), 1 << (rows - 1).bit_length())


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
    """x (n, ...) followed by zero rows up to (rows, ...)."""
    x = np.asarray(x)
    return np.concatenate([x, np.zeros((rows - len(x), *x.shape[1:]), dtype=x.dtype)])


def _as_tensors(inputs: Sequence[np.ndarray]) -> tuple:
    return tuple(tf.convert_to_tensor(np.asarray(x, dtype=np.float32)) for x in inputs)


def _as_matrix(outputs: tf.Tensor) -> tf.Tensor:
    """Any output (B,), (B, C) or (B, d1, d2...) -> (B, C) with C = prod of the trailing dims."""
    outputs = tf.cast(outputs, tf.float32)
    if outputs.shape.rank == 1:
        return outputs[:, tf.newaxis]  # (B, 1)
    return tf.reshape(outputs, [tf.shape(outputs)[0], -1])  # (B, C)


def build_model_functions(
    output_fn: OutputFn, input_shapes: Sequence[Sequence[int]], num_outputs: int, concurrent_calls: int = 1,
    xla: bool = False,
) -> ModelFunctions:
    """Compiles `output_fn` into the predict and gradient functions described in the module docstring.

    Args:
      output_fn: tuple of (B, *input_shape) float32 tensors -> explained output tensor, (B, ...).
        It must call the model with ``training=False``.
      input_shapes: per-example shape of each model input, without the batch dimension.
      num_outputs: C, the flattened size of the explained output per example.
      concurrent_calls: most calls the chunked helpers run at once (module docstring).
      xla: compile `gradients` and `path_gradients` whole, model included, with XLA (module
        docstring); False: the model runs on TensorFlow's kernels.
    """
    input_shapes = tuple(tuple(int(d) for d in shape) for shape in input_shapes)
    signature = tuple(tf.TensorSpec((None, *shape), tf.float32) for shape in input_shapes)
    jit = True if xla else None  # None: TensorFlow's default (no XLA), as False would force it off

    @tf.function(input_signature=[signature], autograph=False)
    def predict_fn(inputs):
        return _as_matrix(output_fn(tuple(inputs)))  # (B, C)

    def scores_and_gradients(inputs: tuple, targets: tf.Tensor) -> tuple:
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = _as_matrix(output_fn(inputs))  # (B, C)
            argmax = tf.argmax(outputs, axis=1, output_type=tf.int32)  # (B,)
            used_targets = tf.where(targets < 0, argmax, targets)  # (B,)
            scores = tf.gather(outputs, used_targets, axis=1, batch_dims=1)  # (B,)
        # Each example's score depends only on its own inputs, so the gradient of the sum is the
        # per-example gradient.
        grads = tape.gradient(scores, inputs, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return scores, tuple(grads), used_targets

    @tf.function(input_signature=[signature, tf.TensorSpec((None,), tf.int32)], autograph=False, jit_compile=jit)
    def gradients_fn(inputs, targets):
        return scores_and_gradients(tuple(inputs), targets)

    path = tf.TensorSpec((None,), tf.float64)

    # The path's own arithmetic (points, weighting) is compiled with XLA, which fuses its float64
    # casts and products into one pass each; the model itself keeps TensorFlow's kernels, so the
    # gradients are bit-identical to the plain graph's (XLA's dots differ in the last bits, which
    # flips a ReLU at a kink: 7e-4 relative on one row in 200k against the same model unfused).
    @tf.function(jit_compile=True, autograph=False)
    def build_points(baselines, diffs, alphas):
        e, s = tf.shape(diffs[0])[0], tf.shape(alphas)[0]  # a baseline may be one row, broadcast
        points = []
        for b, d, shape in zip(baselines, diffs, input_shapes):
            a = tf.reshape(alphas, [1, -1] + [1] * len(shape))  # (1, S, 1...)
            # Interpolated in float64, rounded once to float32: points do not drift with rounding.
            p = tf.cast(tf.cast(b, tf.float64)[:, None] + a * tf.cast(d, tf.float64)[:, None], tf.float32)  # (E, S, *shape)
            points.append(tf.reshape(p, [e * s, *shape]))  # (E*S, *shape)
        return tuple(points)

    @tf.function(jit_compile=True, autograph=False)
    def weigh(grads, weights, e):
        # (E, S, K) x (S,) -> (E, K), K = prod(shape): a plain batched matrix-vector product.
        s = tf.shape(weights)[0]
        return tuple(
            tf.reshape(tf.linalg.matvec(tf.cast(tf.reshape(g, [e, s, -1]), tf.float64), weights, transpose_a=True), [e, *shape])
            for g, shape in zip(grads, input_shapes)
        )

    def path_gradients_body(baselines, diffs, alphas, weights, targets):
        e, s = tf.shape(targets)[0], tf.shape(alphas)[0]
        points = build_points(tuple(baselines), tuple(diffs), alphas)  # each (E*S, *shape)
        _, grads, _ = scores_and_gradients(tuple(points), tf.repeat(targets, s))  # each (E*S, *shape)
        return weigh(tuple(grads), weights, e)  # each (E, *shape)

    path_gradients_fn = tf.function(
        path_gradients_body, input_signature=[signature, signature, path, path, tf.TensorSpec((None,), tf.int32)],
        autograph=False, jit_compile=jit,
    )
    concurrent_calls = max(1, int(concurrent_calls))
    executor = ThreadPoolExecutor(concurrent_calls, thread_name_prefix="gradients") if concurrent_calls > 1 else None
    return ModelFunctions(
        predict_fn, gradients_fn, path_gradients_fn, input_shapes, int(num_outputs), concurrent_calls, executor,
        bool(xla),
    )
