"""Every method against closed-form answers on models whose attributions are known exactly."""

import numpy as np
import pytest
import tensorflow as tf

from attributions import build_model_functions
from attributions.expected_gradients import expected_gradients
from attributions.gradient import gradient
from attributions.gradient_x_input import gradient_x_input
from attributions.integrated_gradients import integrated_gradients
from attributions.smoothgrad import smoothgrad
from attributions.integration_rules import RULES

RNG = np.random.default_rng(0)
W = RNG.normal(size=(5, 3)).astype(np.float32)
B = RNG.normal(size=(3,)).astype(np.float32)
X = RNG.normal(size=(9, 5)).astype(np.float32)
TARGETS = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2], dtype=np.int32)


@pytest.fixture(scope="module")
def linear():
    return build_model_functions(lambda inputs: tf.matmul(inputs[0], W) + B, [(5,)], 3)


@pytest.fixture(scope="module")
def separable():
    """F(x) = 5 x0 + x1^2 + sin(x2): IG with a zero baseline is [5 x0, x1^2, sin x2]."""

    def output(inputs):
        x = inputs[0]
        return 5 * x[:, 0] + x[:, 1] ** 2 + tf.sin(x[:, 2])

    return build_model_functions(output, [(3,)], 1)


def test_gradient_of_linear_model_is_the_weight_column(linear):
    result = gradient(linear, [X], TARGETS)
    np.testing.assert_allclose(result.attributions[0], W[:, TARGETS].T, rtol=1e-6)
    assert result.convergence_delta is None


def test_gradient_x_input_of_linear_model(linear):
    result = gradient_x_input(linear, [X], TARGETS)
    np.testing.assert_allclose(result.attributions[0], X * W[:, TARGETS].T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("steps", [2, 16])
def test_integrated_gradients_of_linear_model_is_exact_for_every_rule(linear, rule, steps):
    baseline = RNG.normal(size=(5,)).astype(np.float32)
    result = integrated_gradients(linear, [X], [baseline], TARGETS, steps=steps, rule=rule)
    expected = (X - baseline) * W[:, TARGETS].T
    np.testing.assert_allclose(result.attributions[0], expected, rtol=1e-5, atol=1e-5)
    # Completeness holds exactly: sum IG = F(x) - F(baseline).
    np.testing.assert_allclose(result.convergence_delta, 0.0, atol=1e-5)
    np.testing.assert_allclose(result.output_change, expected.sum(axis=1), rtol=1e-5, atol=1e-5)


def test_integrated_gradients_of_separable_function(separable):
    x = np.array([[1.0, 2.0, 0.5], [-0.3, 0.7, 2.0]], dtype=np.float32)
    targets = np.zeros(2, dtype=np.int32)
    result = integrated_gradients(separable, [x], [np.zeros(3, np.float32)], targets, steps=16)
    expected = np.stack([5 * x[:, 0], x[:, 1] ** 2, np.sin(x[:, 2])], axis=1)
    np.testing.assert_allclose(result.attributions[0], expected, rtol=1e-5, atol=1e-6)
    assert np.abs(result.convergence_delta).max() < 1e-5


def test_completeness_error_shrinks_with_steps_for_riemann(separable):
    x = np.array([[1.0, 2.0, 1.5]], dtype=np.float32)
    targets = np.zeros(1, dtype=np.int32)
    errors = [
        abs(integrated_gradients(separable, [x], [np.zeros(3, np.float32)], targets, steps=n, rule="riemann_left").convergence_delta[0])
        for n in (4, 16, 64)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_smoothgrad_variants_of_linear_model(linear):
    seeds = np.arange(len(X), dtype=np.uint64)
    expected = W[:, TARGETS].T
    mean = smoothgrad(linear, [X], TARGETS, seeds, "smoothgrad", samples=8)
    squared = smoothgrad(linear, [X], TARGETS, seeds, "smoothgrad_sq", samples=8)
    variance = smoothgrad(linear, [X], TARGETS, seeds, "vargrad", samples=8)
    np.testing.assert_allclose(mean.attributions[0], expected, rtol=1e-5)
    np.testing.assert_allclose(squared.attributions[0], expected**2, rtol=1e-5)
    np.testing.assert_allclose(variance.attributions[0], 0.0, atol=1e-6)


def test_smoothgrad_noise_is_a_fraction_of_the_input_range(separable):
    """For F = x1^2, SmoothGrad's x1 attribution is E[2 (x1 + e)] = 2 x1, while SmoothGrad^2 is
    E[4 (x1 + e)^2] = 4 x1^2 + 4 sigma^2 with sigma = fraction * (max - min)."""
    x = np.array([[0.0, 1.0, 3.0]], dtype=np.float32)
    sigma = 0.2 * 3.0
    result = smoothgrad(separable, [x], np.zeros(1, np.int32), np.array([5], np.uint64), "smoothgrad_sq", samples=20000, noise_fraction=0.2)
    assert result.attributions[0][0, 1] == pytest.approx(4 * 1.0 + 4 * sigma**2, rel=0.05)


def test_expected_gradients_with_one_background_row_is_ig_against_it(linear):
    background = RNG.normal(size=(1, 5)).astype(np.float32)
    seeds = np.arange(len(X), dtype=np.uint64)
    result = expected_gradients(linear, [X], [background], TARGETS, seeds, samples=16)
    np.testing.assert_allclose(result.attributions[0], (X - background) * W[:, TARGETS].T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.stderr, 0.0, atol=1e-6)
    np.testing.assert_allclose(result.convergence_delta, 0.0, atol=1e-5)


def test_expected_gradients_converges_to_mean_background_and_reports_its_error(linear):
    background = RNG.normal(size=(50, 5)).astype(np.float32)
    seeds = np.arange(3, dtype=np.uint64)
    result = expected_gradients(linear, [X[:3]], [background], TARGETS[:3], seeds, samples=4000)
    expected = (X[:3] - background.mean(axis=0)) * W[:, TARGETS[:3]].T
    assert np.all(result.stderr > 0)
    # Within 5 standard errors of the exact expectation.
    assert np.abs(result.attributions[0] - expected).max() < 5 * result.stderr.max()
