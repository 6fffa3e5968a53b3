"""KernelSHAP (attributions.kernel_shap) against exact Shapley values computed here by an
independent enumeration of all coalitions, against the shap package's KernelExplainer, and its
own promises: exact efficiency, weighted backgrounds, batch invariance, groups, validation."""

from __future__ import annotations

from math import factorial

import numpy as np
import pytest
import tensorflow as tf

from attributions.model_functions import build_model_functions
from attributions.kernel_shap import background_summary, kernel_shap
from attributions.players import element_players

CLASSES = 3


def _data(features: int) -> np.ndarray:
    """The first `features` columns of scikit-learn's breast cancer data, standardized (569, P)."""
    from sklearn.datasets import load_breast_cancer

    x = load_breast_cancer().data[:, :features]
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32)


def _mlp(features: int, seed: int = 0):
    """A Keras Dense(16, tanh) -> Dense(3) with fixed random weights, and its ModelFunctions."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((features,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(CLASSES)])
    return build_model_functions(lambda inputs: model(inputs[0], training=False), [(features,)], CLASSES)


def _exact_shapley(fns, x: np.ndarray, background: np.ndarray, target: int, groups: np.ndarray,
                   weights: np.ndarray | None = None) -> np.ndarray:
    """Shapley values (P,) of v(S) = sum_r w_r f(x_S, r_notS)[target] by the permutation-weight
    formula over all 2^P coalitions; groups (features,) gives each feature's player."""
    players = int(groups.max()) + 1
    weights = np.full(len(background), 1.0 / len(background)) if weights is None else weights / weights.sum()
    coalitions = ((np.arange(2**players)[:, None] >> np.arange(players)) & 1).astype(bool)  # (2^P, P), bit i = player i
    take = coalitions[:, groups]  # (2^P, features)
    points = np.where(take[:, None, :], x[None, None, :], background[None])  # (2^P, R, features)
    outputs = fns.predict((points.reshape(-1, x.shape[0]),), 8192)[:, target].reshape(2**players, len(background))
    v = outputs.astype(np.float64) @ weights  # (2^P,)
    sizes = coalitions.sum(axis=1)
    phi = np.zeros(players)
    for i in range(players):
        without = np.flatnonzero(~coalitions[:, i])
        kernel = np.array([factorial(s) * factorial(players - s - 1) / factorial(players) for s in sizes[without]])
        phi[i] = kernel @ (v[without | (1 << i)] - v[without])
    return phi


def _shap_values(fns, background: np.ndarray, x: np.ndarray, targets: np.ndarray, nsamples: int, **kwargs) -> np.ndarray:
    """shap.KernelExplainer's values (B, P) at each row's target, its model the same function."""
    import shap

    explainer = shap.KernelExplainer(lambda z: fns.predict((np.asarray(z, np.float32),), 8192), background)
    values = np.asarray(explainer.shap_values(x, nsamples=nsamples, silent=True, **kwargs))  # (B, P, C)
    return values[np.arange(len(x)), :, targets]


P8 = 8
DATA8 = _data(P8)
FNS8 = _mlp(P8)
BACKGROUND8 = DATA8[200:220]  # R = 20
ROWS8 = DATA8[:5]
TARGETS8 = np.array([0, 1, 2, 0, 1], np.int32)

P12 = 12
DATA12 = _data(P12)
FNS12 = _mlp(P12, seed=1)
BACKGROUND12 = DATA12[300:320]
ROWS12 = DATA12[:4]
TARGETS12 = np.array([0, 1, 2, 1], np.int32)


def _explain(fns, rows, background, targets, players=None, **kwargs):
    players = element_players([rows.shape[1:]]) if players is None else players
    return kernel_shap(fns, (rows,), (background,), targets, players, np.arange(len(rows)), **kwargs)


def _efficiency_holds(result) -> None:
    """sum(phi) = f(x) - E f(r) to float32 rounding of the attributions, every row."""
    scale = np.maximum(np.abs(result.output_change), 1.0)
    assert np.all(np.abs(result.convergence_delta) <= 1e-5 * scale), result.convergence_delta
    assert np.all(result.completeness_error <= 1e-5)


@pytest.fixture(scope="module")
def exact8():
    return np.stack([_exact_shapley(FNS8, ROWS8[b], BACKGROUND8, TARGETS8[b], np.arange(P8)) for b in range(len(ROWS8))])


@pytest.fixture(scope="module")
def exact12():
    return np.stack([_exact_shapley(FNS12, ROWS12[b], BACKGROUND12, TARGETS12[b], np.arange(P12))
                     for b in range(len(ROWS12))])


# ------------------------------------------------------------------------------------------------
# Every coalition enumerated: exact


@pytest.mark.parametrize("samples", [None, 2**P8 - 2])
def test_all_coalitions_give_the_exact_shapley_values(exact8, samples):
    result = _explain(FNS8, ROWS8, BACKGROUND8, TARGETS8, samples=samples)
    np.testing.assert_allclose(result.attributions[0], exact8, atol=1e-5)
    np.testing.assert_array_equal(result.stderr, 0.0)
    _efficiency_holds(result)
    np.testing.assert_array_equal(result.targets, TARGETS8)
    np.testing.assert_allclose(result.target_scores, FNS8.predict((ROWS8,))[np.arange(5), TARGETS8], rtol=1e-6)


def test_all_coalitions_equal_shap_kernel_explainer(exact8):
    # nsamples=2^P: shap caps it at 2^P - 2 and enumerates every coalition too. Its default
    # l1_reg ("num_features(10)") keeps all 8 players here (fewer than 10).
    ours = _explain(FNS8, ROWS8, BACKGROUND8, TARGETS8, samples=2**P8).attributions[0]
    theirs = _shap_values(FNS8, BACKGROUND8, ROWS8, TARGETS8, 2**P8)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(theirs, exact8, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# Sampled coalitions (P = 12, 200 of the 4094: size-1 coalitions enumerated, the rest drawn)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sampled_values_lie_within_their_standard_errors_of_the_exact_values(exact12, seed):
    result = _explain(FNS12, ROWS12, BACKGROUND12, TARGETS12, samples=200, seed=seed)
    _efficiency_holds(result)
    assert np.all(result.stderr > 0)
    # stderr is the largest per-player jackknife standard error, so each player's is at most it.
    # Measured over 300 seeds of this design, |phi - mean| / stderr had a 99th percentile of 2.8
    # and a maximum of 3.3 (the jackknife of 10 groups errs on the large side: its median was 1.2x
    # the largest empirical standard deviation). 4 leaves room for KernelSHAP's small ratio bias.
    errors = np.abs(result.attributions[0] - exact12)  # (B, P)
    assert np.all(errors <= 4 * result.stderr[:, None]), errors.max(axis=1) / result.stderr
    # ... and the standard error is an error, not a bound that says nothing: well below the values.
    assert np.all(result.stderr < 0.25 * np.abs(exact12).max(axis=1))


def test_sampled_values_agree_with_shap_at_the_same_budget(exact12):
    """Both are draws from the same design (same sizes enumerated, same size distribution for the
    rest, paired draws), so both lie within our reported standard errors of the exact values
    (bound 4: see the test above) and their errors are of the same size. shap runs with
    l1_reg=False: its default "num_features(10)" would keep only 10 of the 12 players by LARS."""
    np.random.seed(0)  # shap draws from numpy's global generator
    theirs = _shap_values(FNS12, BACKGROUND12, ROWS12, TARGETS12, 200, l1_reg=False)
    rms = {}
    for name, seeds in (("ours", range(3)), ("shap", None)):
        if seeds is None:
            errors = [np.abs(theirs - exact12)]
        else:
            errors = [np.abs(_explain(FNS12, ROWS12, BACKGROUND12, TARGETS12, samples=200, seed=s).attributions[0] - exact12)
                      for s in seeds]
        rms[name] = float(np.sqrt(np.mean(np.square(errors))))
    stderr = _explain(FNS12, ROWS12, BACKGROUND12, TARGETS12, samples=200).stderr
    assert np.all(np.abs(theirs - exact12) <= 4 * stderr[:, None])
    # shap's values obey the efficiency constraint too
    np.testing.assert_allclose(theirs.sum(axis=1), (exact12.sum(axis=1)), atol=1e-5)
    assert 1 / 3 < rms["ours"] / rms["shap"] < 3, rms


def test_standard_error_is_calibrated_and_the_estimate_unbiased_over_many_seeds(exact12):
    """One row explained with 120 example seeds: the reported stderr (the largest per-player
    jackknife standard error) is of the size of the largest empirical standard deviation across
    seeds (measured: median ratio 1.2; the max over 12 noisy per-player estimates is biased up),
    and the mean over seeds is within 4 standard errors of the mean of the exact value."""
    seeds = 120
    rows, targets = np.repeat(ROWS12[:1], seeds, axis=0), np.repeat(TARGETS12[:1], seeds)
    result = kernel_shap(FNS12, (rows,), (BACKGROUND12,), targets, element_players([(P12,)]), np.arange(seeds),
                         samples=200)
    values = result.attributions[0]  # (seeds, P)
    spread_ = values.std(axis=0, ddof=1)  # (P,)
    assert 0.8 < np.median(result.stderr) / spread_.max() < 2.0, (np.median(result.stderr), spread_.max())
    assert np.all(np.abs(values.mean(axis=0) - exact12[0]) <= 4 * spread_ / np.sqrt(seeds) + 1e-6)


def test_the_design_draws_sizes_by_the_shapley_kernel():
    from math import comb

    from attributions.kernel_shap import _design

    m = 12
    design = _design(np.random.default_rng(0), m, 1500)
    sizes = design.masks.sum(axis=1)
    assert len(design.masks) == 1500 and len(np.unique(design.masks, axis=0)) == 1500
    # Sizes 1-3 and their complements fit (1500 x 0.361 / 24, 1476 x 0.311 / 132, 1344 x 0.334 /
    # 440 >= 1; size 4: 904 x 0.423 / 990 < 1) and are enumerated with their kernel weights ...
    enumerated = ~design.drawn
    assert sorted(set(sizes[enumerated])) == [1, 2, 3, 9, 10, 11] and enumerated.sum() == 24 + 132 + 440
    kernel = np.array([(m - 1) / (comb(m, s) * s * (m - s)) for s in range(1, m)])  # per coalition
    kernel /= np.array([comb(m, s) for s in range(1, m)]) @ kernel
    np.testing.assert_allclose(design.weights[enumerated], kernel[sizes[enumerated] - 1])
    np.testing.assert_allclose(design.weights.sum(), 1.0)
    # ... and a draw picks size s = 4, 5, 6 with probability proportional to 1 / (s (M - s)) (the
    # kernel's mass of size s; sizes 4, 5 bring their complements 8, 7 along): each size's count
    # of draws within 4 binomial standard deviations of its expectation.
    first = design.drawn & (sizes <= m // 2)  # a draw's own coalition (complements have sizes 7, 8)
    draws = np.bincount(sizes[first], weights=design.group_counts[first].sum(axis=1), minlength=m)[4:7]
    p = 1.0 / np.array([s * (m - s) for s in (4, 5, 6)])
    p /= p.sum()
    expected = draws.sum() * p
    assert np.all(np.abs(draws - expected) <= 4 * np.sqrt(draws.sum() * p * (1 - p))), (draws, expected)
    # a drawn coalition of a paired size (< M/2) comes with its complement, at the same weight
    drawn = np.flatnonzero(design.drawn & (sizes < m / 2))
    for i in drawn[:50]:
        assert np.array_equal(design.masks[i + 1], ~design.masks[i]) and design.weights[i + 1] == design.weights[i]


# ------------------------------------------------------------------------------------------------
# Closed forms and axioms


@pytest.mark.parametrize("samples", [100, None])
def test_linear_model_gets_weight_times_distance_from_the_background_mean(samples):
    rng = np.random.default_rng(4)
    w = rng.normal(size=(P12, CLASSES)).astype(np.float32)
    b = rng.normal(size=CLASSES).astype(np.float32)
    fns = build_model_functions(lambda inputs: tf.matmul(inputs[0], w) + b, [(P12,)], CLASSES)
    weights = rng.uniform(0.5, 2.0, size=len(BACKGROUND12))
    result = _explain(fns, ROWS12, BACKGROUND12, TARGETS12, samples=samples, background_weights=weights)
    mean = (weights / weights.sum()) @ BACKGROUND12.astype(np.float64)  # (P,)
    expected = w[:, TARGETS12].T * (ROWS12 - mean)  # (B, P)
    # A linear v is fitted with zero residual by any design: exact even when sampled.
    np.testing.assert_allclose(result.attributions[0], expected, atol=1e-5)
    assert np.all(result.stderr <= 1e-5)
    _efficiency_holds(result)


@pytest.mark.parametrize("samples", [2, 5, 13, 50, 300])
def test_efficiency_is_exact_for_every_row_whatever_the_budget(samples):
    rows = DATA12[:16]
    targets = np.arange(16, dtype=np.int32) % CLASSES
    result = _explain(FNS12, rows, BACKGROUND12, targets, samples=samples)
    _efficiency_holds(result)
    assert np.all(np.isfinite(result.attributions[0]))


def test_players_equal_to_every_background_row_get_zero():
    background = BACKGROUND8.copy()
    rows = ROWS8.copy()
    background[:, 3] = 0.5
    rows[:, 3] = 0.5  # player 3 is a dummy of v
    rows[0, 5] = background[0, 5] = 0.0  # not a dummy: other background rows differ
    for samples in (None, 20):
        result = _explain(FNS8, rows, background, TARGETS8, samples=samples)
        np.testing.assert_array_equal(result.attributions[0][:, 3], 0.0)
        _efficiency_holds(result)


def test_negative_targets_explain_the_argmax():
    result = _explain(FNS8, ROWS8, BACKGROUND8, np.full(5, -1, np.int32))
    np.testing.assert_array_equal(result.targets, FNS8.predict((ROWS8,)).argmax(axis=1))


# ------------------------------------------------------------------------------------------------
# Weighted background, batches, seeds, groups


@pytest.mark.parametrize("fns,data,samples", [(FNS8, DATA8, None), (FNS12, DATA12, 120)])
def test_weighted_summary_equals_its_rows_repeated_by_weight(fns, data, samples):
    sample = data[100:160]  # N = 60
    (centers,), weights = background_summary((sample,), 6, seed=3)
    counts = np.round(weights * len(sample)).astype(int)
    assert counts.sum() == len(sample)
    repeated = np.repeat(centers, counts, axis=0)  # (60, P)
    rows, targets = data[:3], np.array([0, 1, 2], np.int32)
    weighted = _explain(fns, rows, centers, targets, samples=samples, background_weights=weights)
    plain = _explain(fns, rows, repeated, targets, samples=samples)
    np.testing.assert_allclose(weighted.attributions[0], plain.attributions[0], atol=1e-5)
    np.testing.assert_allclose(weighted.output_change, plain.output_change, atol=1e-5)
    np.testing.assert_allclose(weighted.stderr, plain.stderr, rtol=1e-4, atol=1e-7)


def test_a_row_does_not_depend_on_its_batch_and_the_seed_decides():
    rows, targets = DATA12[:6], np.arange(6, dtype=np.int32) % CLASSES
    seeds = np.array([11, 12, 13, 14, 15, 16], np.uint64)
    players = element_players([(P12,)])
    batch = kernel_shap(FNS12, (rows,), (BACKGROUND12,), targets, players, seeds, samples=150, seed=7)
    for b in (0, 3, 5):
        alone = kernel_shap(FNS12, (rows[b:b + 1],), (BACKGROUND12,), targets[b:b + 1], players, seeds[b:b + 1],
                            samples=150, seed=7, chunk_size=50)  # other blocks, other calls
        np.testing.assert_allclose(alone.attributions[0][0], batch.attributions[0][b], atol=1e-6)
        np.testing.assert_allclose(alone.stderr[0], batch.stderr[b], rtol=1e-4)
    again = kernel_shap(FNS12, (rows,), (BACKGROUND12,), targets, players, seeds, samples=150, seed=7)
    np.testing.assert_array_equal(again.attributions[0], batch.attributions[0])
    other = kernel_shap(FNS12, (rows,), (BACKGROUND12,), targets, players, seeds, samples=150, seed=8)
    assert np.abs(other.attributions[0] - batch.attributions[0]).max() > 1e-4


def test_grouped_columns_are_one_player_spread_over_its_elements():
    groups = np.array([0, 0, 1, 1, 2, 3, 4, 4], np.int32)  # 5 players, three of two columns
    result = _explain(FNS8, ROWS8, BACKGROUND8, TARGETS8, players=(groups,))
    for b in range(len(ROWS8)):
        phi = _exact_shapley(FNS8, ROWS8[b], BACKGROUND8, TARGETS8[b], groups)  # (5,)
        np.testing.assert_allclose(result.attributions[0][b], phi[groups] / np.bincount(groups)[groups], atol=1e-5)
    _efficiency_holds(result)


def test_two_inputs_share_the_players():
    w_image = np.random.default_rng(0).normal(size=(4, CLASSES)).astype(np.float32)
    w_tab = np.random.default_rng(1).normal(size=(3, CLASSES)).astype(np.float32)
    fns = build_model_functions(
        lambda inputs: tf.tanh(tf.reshape(inputs[0], [-1, 4]) @ w_image) + tf.tanh(inputs[1]) @ w_tab,
        [(2, 2), (3,)], CLASSES)
    rng = np.random.default_rng(2)
    image, tab = rng.normal(size=(3, 2, 2)).astype(np.float32), rng.normal(size=(3, 3)).astype(np.float32)
    bg_image, bg_tab = rng.normal(size=(10, 2, 2)).astype(np.float32), rng.normal(size=(10, 3)).astype(np.float32)
    players = (np.array([[0, 1], [2, 3]], np.int32), np.array([4, 5, 6], np.int32))
    targets = np.array([0, 1, 2], np.int32)
    result = kernel_shap(fns, (image, tab), (bg_image, bg_tab), targets, players, np.arange(3))
    flat = np.concatenate([result.attributions[0].reshape(3, -1), result.attributions[1]], axis=1)  # (3, 7)
    # tanh(image) and tanh(tab) parts are additive: each side's values are exact
    # Shapley values of its own part, whose sum is the part's output change.
    image_part = lambda z: np.tanh(z.reshape(-1, 4) @ w_image)  # noqa: E731
    expected_image = image_part(image)[np.arange(3), targets] - image_part(bg_image).mean(axis=0)[targets]
    np.testing.assert_allclose(flat[:, :4].sum(axis=1), expected_image, atol=1e-5)
    _efficiency_holds(result)


# ------------------------------------------------------------------------------------------------
# background_summary


def test_background_summary_finds_clusters_weighs_them_and_snaps_to_data_values():
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 5]], np.float32)
    sizes = [30, 20, 10]
    rows = np.concatenate([c + rng.normal(scale=0.1, size=(n, 3)) for c, n in zip(centers, sizes)]).astype(np.float32)
    (summary,), weights = background_summary((rows,), 3, seed=0)
    order = np.argsort(-weights)
    np.testing.assert_allclose(weights[order], np.array(sizes) / 60)
    np.testing.assert_allclose(summary[order], centers, atol=0.1)
    for j in range(3):  # every element is a value its column takes in the data
        assert np.isin(summary[:, j], rows[:, j]).all()
    again = background_summary((rows,), 3, seed=0)
    np.testing.assert_array_equal(again[0][0], summary)


def test_background_summary_of_two_inputs_keeps_their_shapes():
    rng = np.random.default_rng(1)
    (image, tab), weights = background_summary((rng.normal(size=(40, 2, 2)), rng.normal(size=(40, 3))), 5, seed=1)
    assert image.shape == (5, 2, 2) and tab.shape == (5, 3) and image.dtype == np.float32
    assert weights.shape == (5,) and abs(weights.sum() - 1) < 1e-12


# ------------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("change,message", [
    (dict(background=(BACKGROUND8[:0],)), "background is empty"),
    (dict(samples=1), "samples .* must be an integer >= 2"),
    (dict(players=(np.arange(7, dtype=np.int32),)), r"players of input 0 have shape \(7,\)"),
    (dict(players=(np.arange(P8, dtype=np.int32), np.arange(2, dtype=np.int32))), "2 player arrays for 1 model inputs"),
    (dict(players=(np.array([0, 1, 2, 3, 4, 5, 6, 9], np.int32),)), "numbered 0..P-1"),
    (dict(background_weights=-np.ones(20)), "background_weights must be 20 finite, non-negative"),
    (dict(background_weights=np.ones(3)), "background_weights must be 20"),
    (dict(example_seeds=np.arange(2)), "example_seeds"),
    (dict(background=(DATA8[:20, :5],)), "must be .* the same shape"),
    (dict(targets=np.array([0, 1, 2, 3, 0], np.int32)), "targets go up to 3, the model has 3 outputs"),
])
def test_invalid_arguments_are_refused_with_what_to_do(change, message):
    args = dict(fns=FNS8, inputs=(ROWS8,), background=(BACKGROUND8,), targets=TARGETS8,
                players=element_players([(P8,)]), example_seeds=np.arange(5))
    args.update(change)
    with pytest.raises(ValueError, match=message):
        kernel_shap(**args)


@pytest.mark.parametrize("k", [0, 61, 2.5])
def test_background_summary_refuses_impossible_k(k):
    with pytest.raises(ValueError, match="k must be an integer from 1 to the 60 rows"):
        background_summary((DATA8[:60],), k)
