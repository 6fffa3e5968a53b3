"""ModelFunctions.path_gradients: the weighted gradient sums along a path, in one compiled call."""

import numpy as np
import pytest
import tensorflow as tf

from attributions.model_functions import build_model_functions

RNG = np.random.default_rng(5)
W1 = tf.constant(RNG.normal(size=(4, 8)), tf.float32)
W2 = tf.constant(RNG.normal(size=(8, 3)), tf.float32)


def dense():
    return build_model_functions(lambda x: tf.tanh(x[0] @ W1) @ W2, [(4,)], 3)


def conv():
    kernel = tf.constant(RNG.normal(size=(3, 3, 1, 2)), tf.float32)

    def output_fn(x):
        h = tf.nn.conv2d(x[0], kernel, strides=1, padding="VALID")  # (B, 4, 4, 2)
        return tf.reshape(tf.tanh(h), [-1, 32])[:, :3]

    return build_model_functions(output_fn, [(6, 6, 1)], 3)


@pytest.mark.parametrize("model", [dense, conv])
def test_weighted_sums_equal_the_gradients_at_the_points_built_in_numpy(model):
    fns = model()
    shape = fns.input_shapes[0]
    baselines = RNG.normal(size=(5, *shape)).astype(np.float32)
    diffs = RNG.normal(size=(5, *shape)).astype(np.float32)
    alphas, weights = np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.5, 0.3])
    targets = np.array([0, 1, 2, 0, 1], np.int32)
    (sums,) = fns.path_gradients([baselines], [diffs], alphas, weights, targets)
    expected = np.zeros((5, *shape))
    for a, w in zip(alphas, weights):
        points = (baselines + a * diffs.astype(np.float64)).astype(np.float32)  # the same points, bit for bit
        _, (grads,), _ = fns.gradients([points], targets)
        expected += w * grads
    np.testing.assert_allclose(sums, expected, rtol=1e-12, atol=1e-12)


def test_padding_a_small_block_to_a_power_of_two_does_not_change_its_rows():
    fns = dense()
    baselines, diffs = np.zeros((3, 4), np.float32), RNG.normal(size=(3, 4)).astype(np.float32)
    alphas, weights = np.array([0.25, 0.75]), np.array([0.5, 0.5])
    targets = np.array([2, 1, 0], np.int32)
    (alone,) = fns.path_gradients([baselines], [diffs], alphas, weights, targets)
    (padded,) = fns.path_gradients([baselines], [diffs], alphas, weights, targets, pad_to=16)
    assert padded.shape == (3, 4)
    np.testing.assert_allclose(padded, alone, rtol=1e-6, atol=1e-7)
