"""The quality metrics (attributions.quality) against closed forms and independent references:
scipy's Spearman, loops written from the papers' and captum's definitions, and linear models whose
curves and infidelity are known exactly."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from attributions.quality.faithfulness import area_under, deletion_insertion
from attributions.quality.infidelity import infidelity
from attributions.quality.randomisation import shuffled_weights
from attributions.quality.ranks import spearman_rows
from attributions.quality.sensitivity import sensitivity_max
from attributions.quality.units import build_units


def test_spearman_rows_equal_scipy_with_ties_and_nan_for_constant_rows():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(20, 9)).astype(float)  # many ties
    b = rng.normal(size=(20, 9))
    b[3] = a[3] * 2 + 1  # monotone: rho 1
    rho = spearman_rows(a, b)
    for row in range(20):
        if np.ptp(a[row]) == 0:
            assert np.isnan(rho[row])
        else:
            assert rho[row] == pytest.approx(spearmanr(a[row], b[row]).statistic, abs=1e-12)
    assert rho[3] == pytest.approx(1.0)
    constant = spearman_rows(np.ones((2, 5)), rng.normal(size=(2, 5)))
    assert np.isnan(constant).all()
    with pytest.raises(ValueError, match="one shape"):
        spearman_rows(np.ones((2, 5)), np.ones((2, 4)))


def test_units_total_pixels_patches_and_positions_as_loops_do():
    rng = np.random.default_rng(1)
    image, tokens, flat = rng.normal(size=(3, 5, 6, 2)), rng.normal(size=(3, 4, 7)), rng.normal(size=(3, 3))
    units = build_units(["patches", "positions", "features"], [(5, 6, 2), (4, 7), (3,)], patch=2)
    totals = units.totals([image, tokens, flat])
    assert units.count == 3 * 3 + 4 + 3 and totals.shape == (3, 16)
    for r in range(3):
        patches = [image[r, i:i + 2, j:j + 2].sum() for i in range(0, 5, 2) for j in range(0, 6, 2)]
        np.testing.assert_allclose(totals[r], patches + list(tokens[r].sum(axis=1)) + list(flat[r]), rtol=1e-12)
    pixels = build_units(["pixels"], [(5, 6, 2)])
    np.testing.assert_allclose(pixels.totals([image]), image.sum(axis=3).reshape(3, -1))
    mask = np.zeros((3, units.count), bool)
    mask[0, 0] = mask[1, 9] = True  # the first patch of row 0, the first position of row 1
    image_mask, token_mask, flat_mask = units.expand(mask)
    assert image_mask[0, :2, :2].all() and image_mask.sum() == 8
    assert token_mask[1, 0].all() and token_mask.sum() == 7 and not flat_mask.any()


def test_deletion_and_insertion_curves_of_a_linear_score_are_its_partial_sums():
    rng = np.random.default_rng(2)
    w = np.array([3.0, -1.0, 0.5, 2.0, 0.0, -2.5])
    x, b = rng.normal(size=(4, 6)), rng.normal(size=(1, 6))
    attribution = (x - b) * w  # integrated gradients of a linear score, exactly

    def score(inputs):
        return inputs[0].astype(np.float64) @ w

    units = build_units(["features"], [(6,)])
    curves = deletion_insertion(score, (x,), (b,), attribution, units, steps=6, seed=0)
    np.testing.assert_allclose(curves.fractions, np.arange(7) / 6)
    for r in range(4):
        order = np.argsort(-attribution[r], kind="stable")
        removed = np.concatenate([[0.0], np.cumsum(attribution[r][order])])
        np.testing.assert_allclose(curves.deletion[r], score((x,))[r] - removed, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(curves.insertion[r], score((b,))[0] + removed, rtol=1e-5, atol=1e-5)
    # the attribution order deletes the largest contributions first: nothing beats it on a linear score
    assert (curves.deletion_gap() >= -1e-9).all() and (curves.insertion_gap() >= -1e-9).all()
    assert curves.deletion_gap().sum() > 0
    again = deletion_insertion(score, (x,), (b,), attribution, units, steps=6, seed=0, points_per_call=3)  # batched points
    for name in ("deletion", "deletion_random", "insertion", "insertion_random"):
        np.testing.assert_array_equal(getattr(again, name), getattr(curves, name))
    assert area_under(np.array([0.0, 0.5, 1.0]), np.array([[1.0, 1.0, 0.0]]))[0] == pytest.approx(0.75)


def _infidelity_reference(f, x, a, noises, normalize):
    """captum.metrics.infidelity, row by row, as its docstring and code define it."""
    values = []
    for r in range(len(x)):
        dots = np.array([np.sum(n[r] * a[r]) for n in noises])
        changes = np.array([f(x[r:r + 1])[0] - f(x[r:r + 1] - n[r:r + 1])[0] for n in noises])
        beta = (dots * changes).sum() / (dots ** 2).sum() if normalize and (dots ** 2).sum() else 1.0 if not normalize else 0.0
        values.append(np.mean((beta * dots - changes) ** 2))
    return np.array(values)


def test_infidelity_equals_a_row_by_row_reference_and_is_zero_for_exact_linear_attributions():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 4))
    weights = rng.normal(size=4)

    def f(values):
        return np.tanh(values.astype(np.float64) @ weights) + 0.3 * values[:, 0] ** 2

    attributions = rng.normal(size=(5, 4))
    noises = [rng.normal(scale=0.1, size=(5, 4)) for _ in range(7)]
    result = infidelity(lambda inputs: f(inputs[0]), (x,), (attributions,), lambda s: (noises[s],), 7)
    np.testing.assert_allclose(result.infidelity, _infidelity_reference(f, x.astype(np.float32), attributions,
                                                                        [n.astype(np.float32) for n in noises], False), rtol=1e-4)
    np.testing.assert_allclose(result.normalized, _infidelity_reference(f, x.astype(np.float32), attributions,
                                                                        [n.astype(np.float32) for n in noises], True), rtol=1e-4)
    assert (result.normalized <= result.effect + 1e-12).all() and ((0 <= result.share) & (result.share <= 1 + 1e-9)).all()
    batched = infidelity(lambda inputs: f(inputs[0]), (x,), (attributions,), lambda s: (noises[s],), 7, samples_per_call=3)
    np.testing.assert_array_equal(batched.normalized, result.normalized)

    def linear(values):
        return values.astype(np.float64) @ weights

    exact = infidelity(lambda inputs: linear(inputs[0]), (x,), (np.tile(weights, (5, 1)),), lambda s: (noises[s],), 7)
    np.testing.assert_allclose(exact.infidelity, 0, atol=1e-9)
    scaled = infidelity(lambda inputs: linear(inputs[0]), (x,), (np.tile(3 * weights, (5, 1)),), lambda s: (noises[s],), 7)
    np.testing.assert_allclose(scaled.normalized, 0, atol=1e-9)  # normalize=True forgives the scale
    assert (scaled.infidelity > 1e-4).all()  # normalize=False does not


def test_sensitivity_max_equals_a_reference_loop_and_is_zero_for_a_constant_explanation():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(6, 3)).astype(np.float32)

    def explain(inputs):
        return (np.sin(inputs[0].astype(np.float64) * 3),)

    draws = [rng.uniform(-0.05, 0.05, size=(6, 3)).astype(np.float32) for _ in range(5)]
    values = sensitivity_max(explain, (x,), explain((x,)), lambda s: (draws[s],), 5)
    original = np.sin(x.astype(np.float64) * 3)
    expected = [max(np.linalg.norm(np.sin((x[r] + d[r]).astype(np.float64) * 3) - original[r]) / np.linalg.norm(original[r])
                    for d in draws) for r in range(6)]
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    constant = sensitivity_max(lambda inputs: (np.ones_like(inputs[0]),), (x,), (np.ones_like(x),), lambda s: (draws[s],), 5)
    np.testing.assert_array_equal(constant, 0)


def test_shuffled_weights_permute_each_tensor_and_restore_it_even_after_an_error():
    import tensorflow as tf

    kernel = tf.Variable(np.arange(12, dtype=np.float32).reshape(3, 4))
    bias, scalar = tf.Variable([1.0, 2.0]), tf.Variable([5.0])

    @tf.function
    def uses_kernel():  # traced before the shuffle: it reads the variable, not a copy
        return kernel[0]

    uses_kernel()
    with shuffled_weights([kernel, bias, scalar], seed=0) as count:
        assert count == 2 and scalar.numpy().tolist() == [5.0]
        values = kernel.numpy().ravel()
        assert sorted(values) == list(range(12)) and values.tolist() != list(range(12))
        assert uses_kernel().numpy().tolist() == values[:4].tolist()
    assert kernel.numpy().ravel().tolist() == list(range(12)) and bias.numpy().tolist() == [1.0, 2.0]
    with pytest.raises(RuntimeError):
        with shuffled_weights([kernel], seed=1):
            raise RuntimeError("the attribution failed")
    assert kernel.numpy().ravel().tolist() == list(range(12))
