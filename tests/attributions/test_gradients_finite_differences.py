"""Input gradients of a real nonlinear Keras model against central finite differences."""

import numpy as np
import pytest

from attributions.loading import load_model
from helpers import save_nonlinear_model


@pytest.fixture(scope="module")
def tanh_model(tmp_path_factory):
    path = save_nonlinear_model(tmp_path_factory.mktemp("fd") / "tanh.keras")
    return load_model(path).model_functions()


def test_gradient_matches_finite_differences(tanh_model):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(6, 5)).astype(np.float64)
    targets = np.array([0, 1, 2, 3, 0, 1], dtype=np.int32)
    scores, (grads,), used = tanh_model.gradients([x], targets)
    np.testing.assert_array_equal(used, targets)
    h = 1e-2
    numeric = np.zeros_like(x)
    for j in range(x.shape[1]):
        step = np.zeros_like(x)
        step[:, j] = h
        up = tanh_model.predict([x + step])[np.arange(6), targets]
        down = tanh_model.predict([x - step])[np.arange(6), targets]
        numeric[:, j] = (up.astype(np.float64) - down) / (2 * h)
    np.testing.assert_allclose(grads, numeric, atol=2e-4, rtol=2e-2)
    np.testing.assert_allclose(scores, tanh_model.predict([x])[np.arange(6), targets], rtol=1e-6)


def test_negative_target_means_the_predicted_class(tanh_model):
    x = np.random.default_rng(2).normal(size=(8, 5)).astype(np.float32)
    _, _, used = tanh_model.gradients([x], np.full(8, -1, np.int32))
    np.testing.assert_array_equal(used, tanh_model.predict([x]).argmax(axis=1))


def test_the_gradient_function_traces_once_for_many_batch_sizes(tanh_model):
    before = tanh_model.gradients_fn.experimental_get_tracing_count()
    for n in (1, 7, 33, 128):
        tanh_model.gradients([np.zeros((n, 5), np.float32)], np.zeros(n, np.int32))
    assert tanh_model.gradients_fn.experimental_get_tracing_count() - before <= 1
