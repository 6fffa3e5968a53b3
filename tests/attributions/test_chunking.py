"""The automatic chunk size: measured per model, bounded by the memory budget and the cap."""

import numpy as np
import pytest
import tensorflow as tf

from attributions.integrated_gradients import integrated_gradients
from attributions.chunking import PATH_BYTES_PER_INPUT_VALUE, MAX_CHUNK_ROWS, automatic_chunk_size, bytes_per_row
from attributions.model_functions import build_model_functions


def dense_functions(width: int, inputs: int = 5):
    """x (B, inputs) -> tanh(x W1) W2, (B, 3): one hidden layer of `width` units."""
    w1 = tf.constant(np.random.default_rng(0).normal(size=(inputs, width)), tf.float32)
    w2 = tf.constant(np.random.default_rng(1).normal(size=(width, 3)), tf.float32)
    return build_model_functions(lambda x: tf.tanh(x[0] @ w1) @ w2, [(inputs,)], 3)


def test_bytes_per_row_counts_the_hidden_activations_forward_and_backward():
    small, large = bytes_per_row(dense_functions(8)), bytes_per_row(dense_functions(1008))
    # 1,000 more hidden units: at least the matmul output and the tanh, x 2 for the backward pass.
    assert large - small >= 1000 * 2 * 4 * 2
    assert small >= PATH_BYTES_PER_INPUT_VALUE * 5


def test_the_chunk_fits_the_budget_and_the_cap():
    fns = dense_functions(1008)
    per_row = bytes_per_row(fns)
    chunk = automatic_chunk_size(fns, memory_mib=1)
    assert chunk == 2**20 // per_row
    assert chunk * per_row <= 2**20 < (chunk + 1) * per_row
    assert automatic_chunk_size(dense_functions(8), memory_mib=10_000) == MAX_CHUNK_ROWS
    assert automatic_chunk_size(fns, memory_mib=1) >= 1


def test_a_shared_baseline_row_gives_the_same_result_as_a_full_baseline_array():
    fns = dense_functions(16)
    x = np.random.default_rng(2).normal(size=(6, 5)).astype(np.float32)
    targets = np.array([0, 1, 2, 0, 1, 2], np.int32)
    row = np.full(5, 0.25, np.float32)
    shared = integrated_gradients(fns, [x], [row], targets, steps=8, chunk_size=7)
    full = integrated_gradients(fns, [x], [np.tile(row, (6, 1))], targets, steps=8, chunk_size=7,
                                outputs_at_inputs=fns.predict([x]))
    # The shared row is broadcast inside the compiled call: the same points, bit for bit.
    np.testing.assert_array_equal(shared.attributions[0], full.attributions[0])
    np.testing.assert_allclose(shared.convergence_delta, full.convergence_delta, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 0, -3, 2.5])
def test_config_chunk_size_is_automatic_or_a_positive_integer(chunk_size):
    from pipeline.config import RunConfig

    values = {"model": "m.keras", "input": "d.parquet", "output": "o"}
    if chunk_size is None:
        config = RunConfig.from_mapping(values)
        assert config.chunk_size is None and config.chunk_memory_mib == 512
    else:
        with pytest.raises(ValueError, match=f"chunk_size must be a positive integer; got {chunk_size!r}"):
            RunConfig.from_mapping({**values, "chunk_size": chunk_size})
