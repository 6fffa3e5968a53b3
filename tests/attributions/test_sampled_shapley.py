"""Sampled Shapley (attributions.sampled_shapley) against Shapley values enumerated over every
coalition, on small Keras models built here."""

import itertools
import math

import numpy as np
import pytest

from attributions import build_model_functions
from attributions.gradient import gradient
from attributions.occlusion import occlusion
from attributions.players import element_players
from attributions.sampled_shapley import permutation_count, sampled_shapley, shapley_values

RNG = np.random.default_rng(11)
FEATURES = 6
X = RNG.normal(size=(7, FEATURES)).astype(np.float32)
BASELINE = RNG.normal(size=(FEATURES,)).astype(np.float32) * 0.3
TARGETS = np.array([0, 1, 2, 0, 1, 2, 0], np.int32)
SEEDS = np.arange(100, 107, dtype=np.uint64)
PLAYERS = element_players([(FEATURES,)])


def _functions(model, shape):
    return build_model_functions(lambda inputs: model(inputs[0], training=False), [shape], model.output_shape[-1])


@pytest.fixture(scope="module")
def mlp():
    """Dense(16, tanh) -> Dense(3): every pair of features interacts."""
    import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)])
    return model, _functions(model, (FEATURES,))


@pytest.fixture(scope="module")
def steps():
    """A staircase model, round(2 x) -> Dense(3): its gradient is 0 almost everywhere."""
    import keras

    keras.utils.set_random_seed(8)
    inputs = keras.Input((FEATURES,))
    outputs = keras.layers.Dense(3)(keras.layers.Dense(8, activation="tanh")(keras.ops.round(2.0 * inputs)))
    model = keras.Model(inputs, outputs)
    return model, _functions(model, (FEATURES,))


def exact_shapley(model, x, baseline, target, element_player):
    """(P,) Shapley values of one row by enumerating all 2^P coalitions (independent of the
    package: its own masks, one model call over every coalition, the Shapley weights)."""
    count = int(element_player.max()) + 1
    masks = np.array(list(itertools.product([False, True], repeat=count)))  # (2^P, P)
    points = np.where(masks[:, element_player], x, baseline).astype(np.float32)  # (2^P, d)
    value = {tuple(m): v for m, v in zip(masks, np.asarray(model(points))[:, target].astype(np.float64))}
    phi = np.zeros(count)
    for p in range(count):
        for mask in masks:
            if mask[p]:
                continue
            size = int(mask.sum())
            weight = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            joined = mask.copy()
            joined[p] = True
            phi[p] += weight * (value[tuple(joined)] - value[tuple(mask)])
    return phi


def _exact_all(model, element_player=np.arange(FEATURES)):
    return np.stack([exact_shapley(model, X[b], BASELINE, TARGETS[b], element_player) for b in range(len(X))])


# Antithetic pairs cancel the pairwise interactions, so a pair's average is the Shapley value plus
# rarer higher-order terms: fewer pairs can miss those and understate the standard error (on this
# model at 30 permutations, 35 % of 40 seeds had a player beyond 4 standard errors; at 200, 2.5 %;
# plain permutations at 30: none of 40).
@pytest.mark.parametrize("antithetic,samples", [(True, 200), (False, 30)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_exact_shapley_within_its_standard_errors(mlp, seed, antithetic, samples):
    model, fns = mlp
    exact = _exact_all(model)
    values, stderr, f_x, f_b = shapley_values(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=samples, seed=seed,
                                              antithetic=antithetic)
    assert values.shape == stderr.shape == (len(X), FEATURES)
    assert (stderr > 0).all()
    assert (np.abs(values - exact) <= 4 * stderr + 1e-5).all(), np.abs(values - exact) / stderr
    np.testing.assert_allclose(f_x, np.asarray(model(X))[np.arange(len(X)), TARGETS], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f_b, np.asarray(model(BASELINE[None]))[0, TARGETS], rtol=1e-5, atol=1e-6)
    result = sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=samples, seed=seed, antithetic=antithetic)
    np.testing.assert_allclose(result.stderr, stderr.max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(result.attributions[0], values, rtol=1e-6, atol=1e-7)


def test_antithetic_pairs_are_closer_at_the_same_cost(mlp):
    model, fns = mlp
    exact = _exact_all(model)
    errors = {
        antithetic: np.mean([
            np.abs(shapley_values(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=30, seed=seed, antithetic=antithetic)[0] - exact).mean()
            for seed in range(3)
        ])
        for antithetic in (True, False)
    }
    assert errors[True] < 0.8 * errors[False], errors  # 0.0019 against 0.0031 when written


def test_many_permutations_converge_to_the_exact_values(mlp):
    model, fns = mlp
    exact = _exact_all(model)
    result = sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=400)
    error = np.abs(result.attributions[0] - exact).max()
    assert error < 0.02 * np.abs(exact).max(), (error, np.abs(exact).max())
    assert result.stderr.max() < 0.02 * np.abs(exact).max()


def test_linear_model_gives_the_exact_values_with_per_row_baselines():
    weights = RNG.normal(size=(FEATURES, 3)).astype(np.float32)
    bias = RNG.normal(size=(3,)).astype(np.float32)
    fns = build_model_functions(lambda inputs: inputs[0] @ weights + bias, [(FEATURES,)], 3)
    baselines = RNG.normal(size=X.shape).astype(np.float32)
    result = sampled_shapley(fns, [X], [baselines], TARGETS, PLAYERS, SEEDS, samples=5)
    np.testing.assert_allclose(result.attributions[0], (X - baselines) * weights[:, TARGETS].T, rtol=1e-5, atol=1e-5)
    # Every permutation gives the same marginals: no sampling error.
    assert result.stderr.max() < 1e-5


def test_efficiency_holds_for_every_row(mlp):
    _, fns = mlp
    for samples in (3, 8):
        result = sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=samples, antithetic=samples % 2 == 1)
        scale = np.maximum(1.0, np.abs(result.output_change))
        assert (np.abs(result.convergence_delta) <= 1e-5 * scale).all(), result.convergence_delta
        total = result.attributions[0].sum(axis=1, dtype=np.float64)
        assert (np.abs(total - result.output_change) <= 1e-5 * scale).all()
        assert (result.completeness_error <= 1e-5).all()
        np.testing.assert_array_equal(result.targets, TARGETS)


def test_groups_are_players_and_two_groups_are_exact(mlp):
    model, fns = mlp
    groups = np.array([0, 0, 0, 1, 1, 1], np.int32)  # two players: every permutation is one of two
    values, _, _, _ = shapley_values(fns, [X], [BASELINE], TARGETS, [groups], SEEDS, samples=4)
    np.testing.assert_allclose(values, _exact_all(model, groups), rtol=1e-5, atol=1e-5)
    result = sampled_shapley(fns, [X], [BASELINE], TARGETS, [groups], SEEDS, samples=4)
    per_group = np.stack([result.attributions[0][:, groups == g].sum(axis=1) for g in (0, 1)], axis=1)
    np.testing.assert_allclose(per_group, values, rtol=1e-5, atol=1e-6)
    # Within a group every element gets the same share.
    np.testing.assert_allclose(result.attributions[0][:, :3], result.attributions[0][:, :1].repeat(3, axis=1), rtol=1e-6)


def test_three_groups_match_exact_within_standard_errors(mlp):
    model, fns = mlp
    groups = np.array([2, 0, 1, 0, 2, 1], np.int32)
    # Plain permutations: with 3 players a pair's average takes only two values per player, too
    # few for a standard error from a handful of pairs.
    values, stderr, _, _ = shapley_values(fns, [X], [BASELINE], TARGETS, [groups], SEEDS, samples=30, antithetic=False)
    assert (np.abs(values - _exact_all(model, groups)) <= 4 * stderr + 1e-5).all()


def test_a_row_gets_the_same_values_in_any_batch_and_chunk(mlp):
    _, fns = mlp
    whole = sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=10, chunk_size=1024)
    again = sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=10, chunk_size=1024)
    np.testing.assert_array_equal(whole.attributions[0], again.attributions[0])
    small_chunks = sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=10, chunk_size=7)
    np.testing.assert_allclose(small_chunks.attributions[0], whole.attributions[0], rtol=1e-6, atol=1e-6)
    for row in (0, 3, 6):
        alone = sampled_shapley(fns, [X[row : row + 1]], [BASELINE], TARGETS[row : row + 1], PLAYERS, SEEDS[row : row + 1], samples=10)
        np.testing.assert_allclose(alone.attributions[0][0], whole.attributions[0][row], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(alone.stderr[0], whole.stderr[row], rtol=1e-6, atol=1e-6)
    other_seed = sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=10, seed=1)
    assert not np.allclose(other_seed.attributions[0], whole.attributions[0])


def test_zero_gradient_model_where_shapley_and_occlusion_still_see_the_features(steps):
    model, fns = steps
    grads = gradient(fns, [X], TARGETS)
    np.testing.assert_array_equal(grads.attributions[0], 0.0)

    exact = _exact_all(model)
    assert np.abs(exact).max() > 0.1
    values, stderr, _, _ = shapley_values(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=200)
    assert (np.abs(values - exact) <= 4 * stderr + 1e-5).all()
    assert np.abs(values - exact).max() < 0.1 * np.abs(exact).max()

    occluded = occlusion(fns, [X], [BASELINE], TARGETS, PLAYERS)
    expected = np.zeros(X.shape)
    for b in range(len(X)):
        for p in range(FEATURES):
            point = X[b].copy()
            point[p] = BASELINE[p]
            expected[b, p] = np.asarray(model(X[b : b + 1]))[0, TARGETS[b]] - np.asarray(model(point[None]))[0, TARGETS[b]]
    np.testing.assert_allclose(occluded.attributions[0], expected, rtol=1e-5, atol=1e-6)
    assert np.abs(occluded.attributions[0]).max() > 0.1


def test_two_inputs_and_a_single_player():
    import tensorflow as tf

    weights = RNG.normal(size=(7,)).astype(np.float32)
    fns = build_model_functions(
        lambda inputs: (tf.linalg.matvec(inputs[0], weights[:4]) + tf.linalg.matvec(inputs[1], weights[4:])) ** 2,
        [(4,), (3,)], 1,
    )
    a, b = RNG.normal(size=(3, 4)).astype(np.float32), RNG.normal(size=(3, 3)).astype(np.float32)
    targets = np.zeros(3, np.int32)
    # One player holding both inputs: its value is F(x) - F(0), whatever the permutations.
    one = (np.zeros(4, np.int32), np.zeros(3, np.int32))
    result = sampled_shapley(fns, [a, b], [np.zeros(4), np.zeros(3)], targets, one, np.arange(3, dtype=np.uint64), samples=3)
    expected = (a @ weights[:4] + b @ weights[4:]) ** 2
    np.testing.assert_allclose(result.attributions[0].sum(axis=1) + result.attributions[1].sum(axis=1), expected, rtol=1e-5)
    np.testing.assert_allclose(result.output_change, expected, rtol=1e-5)


def test_permutation_count():
    assert permutation_count(25) == 26
    assert permutation_count(24) == 24
    assert permutation_count(25, antithetic=False) == 25
    assert permutation_count(2, antithetic=False) == 2


def test_invalid_arguments_are_explained(mlp):
    _, fns = mlp
    with pytest.raises(ValueError, match="samples >= 2"):
        sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=1, antithetic=False)
    with pytest.raises(ValueError, match="samples >= 3"):
        sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=2)
    with pytest.raises(ValueError, match=r"players of input 0 .* expected integers of the input's shape"):
        sampled_shapley(fns, [X], [BASELINE], TARGETS, [np.arange(5)], SEEDS)
    with pytest.raises(ValueError, match="got 2 player arrays for 1 model inputs"):
        sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS * 2, SEEDS)
    with pytest.raises(ValueError, match="numbered 0..P-1"):
        sampled_shapley(fns, [X], [BASELINE], TARGETS, [np.array([0, 1, 2, 4, 4, 4])], SEEDS)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 3\)"):
        sampled_shapley(fns, [X], [BASELINE], TARGETS - 1, PLAYERS, SEEDS)
    with pytest.raises(ValueError, match="baseline 0 has shape"):
        sampled_shapley(fns, [X], [np.zeros((2, FEATURES))], TARGETS, PLAYERS, SEEDS)
    with pytest.raises(ValueError, match="example_seeds must be"):
        sampled_shapley(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS[:3])


def test_marginals_in_row_blocks_and_concurrent_calls_change_nothing(mlp, monkeypatch):
    import attributions.sampled_shapley as module

    model, fns = mlp
    whole = shapley_values(fns, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=10)
    monkeypatch.setattr(module, "MARGINALS_PER_BLOCK", 10 * FEATURES * 2)  # two rows at a time
    concurrent = build_model_functions(lambda inputs: model(inputs[0], training=False), [(FEATURES,)], 3, concurrent_calls=3)
    blocked = shapley_values(concurrent, [X], [BASELINE], TARGETS, PLAYERS, SEEDS, samples=10, chunk_size=32)
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
