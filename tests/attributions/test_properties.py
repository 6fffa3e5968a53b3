"""Property-based checks of the method code (hypothesis): what must hold for any input."""

import numpy as np
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attributions import build_model_functions
from attributions.expected_gradients import expected_gradients
from attributions.integrated_gradients import integrated_gradients
from attributions.smoothgrad import smoothgrad
from attributions.integration_rules import RULES

D = 4
W1 = np.random.default_rng(0).normal(size=(D, 3)).astype(np.float32)
W2 = np.random.default_rng(1).normal(size=(D, 3)).astype(np.float32)
C = np.array([0.7, -1.3, 2.0, 0.4], np.float32)


def _tanh_model(inputs):
    return tf.tanh(tf.matmul(inputs[0], W1)) * 2.0


def _other_model(inputs):
    return tf.matmul(inputs[0], W2) ** 2 / 4.0


TANH = build_model_functions(_tanh_model, [(D,)], 3)
OTHER = build_model_functions(_other_model, [(D,)], 3)
SINES = build_model_functions(lambda inputs: tf.reduce_sum(tf.sin(inputs[0] * C), axis=1), [(D,)], 1)

values = st.floats(-2.0, 2.0, allow_nan=False, width=32)
batches = st.integers(1, 6).flatmap(lambda n: arrays(np.float32, (n, D), elements=values))
# Derandomized: CI explores the same examples every run (no flaky red builds); raise max_examples
# or drop derandomize locally to search further.
PROPERTY = settings(max_examples=25, deadline=None, derandomize=True)


@PROPERTY
@given(x=batches, chunk=st.integers(1, 40), steps=st.integers(2, 12), rule=st.sampled_from(sorted(RULES)))
def test_integrated_gradients_are_batch_and_chunk_invariant(x, chunk, steps, rule):
    targets = (np.arange(len(x)) % 3).astype(np.int32)
    baseline = np.zeros(D, np.float32)
    batch = integrated_gradients(TANH, [x], [baseline], targets, steps, rule, chunk_size=chunk).attributions[0]
    alone = np.concatenate([
        integrated_gradients(TANH, [x[i : i + 1]], [baseline], targets[i : i + 1], steps, rule, chunk_size=1024).attributions[0]
        for i in range(len(x))
    ])
    np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-6)


@PROPERTY
@given(x=batches, b=arrays(np.float32, (D,), elements=values), steps=st.integers(1, 64))
def test_completeness_error_is_within_the_midpoint_rule_bound(x, b, steps):
    """F = sum sin(c_i x_i): along the path the integrand's second derivative is bounded by
    sum |c_i (x_i - b_i)|^3, so the midpoint rule's error is at most that / (24 n^2)."""
    result = integrated_gradients(SINES, [x], [b], np.zeros(len(x), np.int32), steps, "riemann_middle")
    bound = (np.abs(C * (x - b)) ** 3).sum(axis=1) / (24 * steps**2)
    assert np.all(np.abs(result.convergence_delta) <= bound + 1e-5)


@PROPERTY
@given(x=batches, steps=st.integers(1, 6), powers=arrays(np.int64, (D,), elements=st.integers(1, 11)))
def test_gauss_legendre_is_complete_for_polynomials_it_integrates_exactly(x, steps, powers):
    """F = sum_i x_i^k_i with every k_i <= 2 * steps is integrated exactly along a straight path
    (the integrand has degree k_i - 1 <= 2 steps - 1)."""
    powers = np.minimum(powers, 2 * steps).astype(np.float32)
    fns = build_model_functions(lambda inputs: tf.reduce_sum(inputs[0] ** powers, axis=1), [(D,)], 1)
    x = np.clip(x, -1.2, 1.2)
    result = integrated_gradients(fns, [x], [np.zeros(D, np.float32)], np.zeros(len(x), np.int32), steps)
    np.testing.assert_allclose(result.convergence_delta, 0.0, atol=2e-4 * max(1.0, np.abs(result.output_change).max()))


@PROPERTY
@given(x=batches, a=st.floats(-3, 3, width=32), b=st.floats(-3, 3, width=32), rule=st.sampled_from(sorted(RULES)))
def test_integrated_gradients_are_linear_in_the_model_output(x, a, b, rule):
    combined = build_model_functions(lambda inputs: a * _tanh_model(inputs) + b * _other_model(inputs), [(D,)], 3)
    targets = (np.arange(len(x)) % 3).astype(np.int32)
    baseline = [np.full(D, 0.1, np.float32)]
    ig = lambda fns: integrated_gradients(fns, [x], baseline, targets, 8, rule).attributions[0]  # noqa: E731
    np.testing.assert_allclose(ig(combined), a * ig(TANH) + b * ig(OTHER), rtol=1e-4, atol=1e-4)


@PROPERTY
@given(x=batches, seed=st.integers(0, 2**63 - 1), chunk=st.integers(1, 64))
def test_sampling_methods_are_deterministic_for_a_seed_and_independent_of_chunking(x, seed, chunk):
    targets = np.zeros(len(x), np.int32)
    keys = np.arange(len(x), dtype=np.uint64) * np.uint64(7919)
    background = [np.random.default_rng(3).normal(size=(5, D)).astype(np.float32)]
    for run in (
        lambda c: smoothgrad(TANH, [x], targets, keys, "smoothgrad_sq", samples=5, seed=seed, chunk_size=c).attributions[0],
        lambda c: expected_gradients(TANH, [x], background, targets, keys, samples=6, seed=seed, chunk_size=c).attributions[0],
    ):
        first = run(chunk)
        np.testing.assert_array_equal(first, run(chunk))
        np.testing.assert_allclose(first, run(1024), rtol=1e-5, atol=1e-6)
