"""A record's attributions do not depend on its batch or on the chunk size, for every method."""

import numpy as np
import pytest

from attributions.expected_gradients import expected_gradients
from attributions.gradient import gradient
from attributions.gradient_x_input import gradient_x_input
from attributions.integrated_gradients import integrated_gradients
from attributions.smoothgrad import smoothgrad
from attributions.loading import load_model
from helpers import save_nonlinear_model

RNG = np.random.default_rng(4)
X = RNG.normal(size=(7, 5)).astype(np.float32)
TARGETS = np.array([0, 1, 2, 3, 0, 1, 2], dtype=np.int32)
SEEDS = np.arange(100, 107, dtype=np.uint64)
BACKGROUND = RNG.normal(size=(10, 5)).astype(np.float32)


@pytest.fixture(scope="module")
def fns(tmp_path_factory):
    return load_model(save_nonlinear_model(tmp_path_factory.mktemp("bi") / "m.keras")).model_functions()


METHODS = {
    "gradient": lambda f, x, t, s, c: gradient(f, [x], t, chunk_size=c),
    "gradient_x_input": lambda f, x, t, s, c: gradient_x_input(f, [x], t, chunk_size=c),
    "integrated_gradients": lambda f, x, t, s, c: integrated_gradients(f, [x], [np.zeros(5, np.float32)], t, steps=12, chunk_size=c),
    "smoothgrad": lambda f, x, t, s, c: smoothgrad(f, [x], t, s, "vargrad", samples=6, chunk_size=c),
    "expected_gradients": lambda f, x, t, s, c: expected_gradients(f, [x], [BACKGROUND], t, s, samples=9, chunk_size=c),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_batch_equals_its_examples_alone_for_several_chunk_sizes(fns, method):
    run = METHODS[method]
    alone = np.concatenate([run(fns, X[i : i + 1], TARGETS[i : i + 1], SEEDS[i : i + 1], 1024).attributions[0] for i in range(len(X))])
    for chunk in (1, 5, 1024):
        batch = run(fns, X, TARGETS, SEEDS, chunk).attributions[0]
        np.testing.assert_allclose(batch, alone, rtol=1e-5, atol=1e-6, err_msg=f"chunk_size={chunk}")


@pytest.mark.parametrize("method", ["smoothgrad", "expected_gradients"])
def test_sampling_methods_are_deterministic_and_depend_on_the_seed(fns, method):
    run = METHODS[method]
    first = run(fns, X, TARGETS, SEEDS, 64).attributions[0]
    again = run(fns, X, TARGETS, SEEDS, 64).attributions[0]
    other = run(fns, X, TARGETS, SEEDS + np.uint64(1), 64).attributions[0]
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)
