"""Occlusion (attributions.occlusion) against loops written here, one model call per occluded
point, on small Keras models."""

import numpy as np
import pytest

from attributions import build_model_functions
from attributions.occlusion import occlusion, sliding_occlusion
from attributions.players import element_players, patch_players

RNG = np.random.default_rng(21)
X = RNG.normal(size=(5, 6)).astype(np.float32)
BASELINE = RNG.normal(size=(6,)).astype(np.float32) * 0.3
TARGETS = np.array([0, 1, 2, 0, 1], np.int32)
IMAGES = RNG.normal(size=(3, 9, 8, 2)).astype(np.float32)
IMAGE_TARGETS = np.array([0, 3, 1], np.int32)


def _functions(model):
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    if len(shapes) == 1:
        return build_model_functions(lambda inputs: model(inputs[0], training=False), shapes, model.output_shape[-1])
    return build_model_functions(lambda inputs: model(list(inputs), training=False), shapes, model.output_shape[-1])


@pytest.fixture(scope="module")
def mlp():
    import keras

    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(3)])
    return model, _functions(model)


@pytest.fixture(scope="module")
def cnn():
    import keras

    keras.utils.set_random_seed(7)
    model = keras.Sequential([
        keras.Input((9, 8, 2)),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(5),
    ])
    return model, _functions(model)


def _score(model, point, target):
    return float(np.asarray(model(point[None]))[0, target])


def loop_occlusion(model, x, baseline, targets, element_player):
    """(B, d): each element gets F(x) - F(x with its player at the baseline) / the player's size."""
    sizes = np.bincount(element_player)
    out = np.zeros(x.shape)
    for b in range(len(x)):
        for p in range(len(sizes)):
            point = np.where(element_player == p, baseline, x[b])
            out[b, element_player == p] = (_score(model, x[b], targets[b]) - _score(model, point, targets[b])) / sizes[p]
    return out


def loop_sliding_occlusion(model, images, baseline, targets, window, stride):
    """Captum's Occlusion, one window at a time: each pixel the mean over the windows covering it
    of F(x) - F(x with the window at the baseline), 0 where none does."""
    rows, height, width = images.shape[:3]
    out = np.zeros(images.shape)
    for b in range(rows):
        total, count = np.zeros(images.shape[1:]), np.zeros(images.shape[1:])
        full = _score(model, images[b], targets[b])
        for top in range(0, height - window + 1, stride):
            for left in range(0, width - window + 1, stride):
                point = images[b].copy()
                point[top : top + window, left : left + window] = baseline[top : top + window, left : left + window]
                total[top : top + window, left : left + window] += full - _score(model, point, targets[b])
                count[top : top + window, left : left + window] += 1
        out[b] = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return out


def test_each_feature_against_a_loop(mlp):
    model, fns = mlp
    result = occlusion(fns, [X], [BASELINE], TARGETS, element_players([(6,)]))
    np.testing.assert_allclose(result.attributions[0], loop_occlusion(model, X, BASELINE, TARGETS, np.arange(6)), rtol=1e-5, atol=1e-6)
    assert result.convergence_delta is None and result.completeness_error is None
    np.testing.assert_array_equal(result.targets, TARGETS)
    np.testing.assert_allclose(result.target_scores, np.asarray(model(X))[np.arange(5), TARGETS], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 4, 1024])
def test_groups_and_per_row_baselines_in_any_chunk(mlp, chunk_size):
    model, fns = mlp
    groups = np.array([1, 0, 2, 0, 1, 1], np.int32)
    baselines = RNG.normal(size=X.shape).astype(np.float32)
    result = occlusion(fns, [X], [baselines], TARGETS, [groups], chunk_size=chunk_size)
    expected = np.stack([loop_occlusion(model, X[b : b + 1], baselines[b], TARGETS[b : b + 1], groups)[0] for b in range(5)])
    np.testing.assert_allclose(result.attributions[0], expected, rtol=1e-5, atol=1e-6)


def test_a_row_gets_the_same_values_alone(mlp):
    _, fns = mlp
    whole = occlusion(fns, [X], [BASELINE], TARGETS, element_players([(6,)]))
    alone = occlusion(fns, [X[2:3]], [BASELINE], TARGETS[2:3], element_players([(6,)]))
    np.testing.assert_allclose(alone.attributions[0][0], whole.attributions[0][2], rtol=1e-6, atol=1e-6)


def test_two_inputs():
    import keras

    keras.utils.set_random_seed(9)
    image, tabular = keras.Input((4, 4, 1)), keras.Input((3,))
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(image), tabular])
    model = keras.Model([image, tabular], keras.layers.Dense(2)(keras.layers.Dense(8, activation="tanh")(merged)))
    fns = _functions(model)
    images, tab = RNG.normal(size=(2, 4, 4, 1)).astype(np.float32), RNG.normal(size=(2, 3)).astype(np.float32)
    players = (patch_players((4, 4, 1), 2), np.array([4, 5, 5], np.int32))  # 4 patches, then 2 tabular players
    targets = np.array([0, 1], np.int32)
    result = occlusion(fns, [images, tab], [np.zeros((4, 4, 1)), np.zeros(3)], targets, players)
    for b in range(2):
        full = float(np.asarray(model([images[b : b + 1], tab[b : b + 1]]))[0, targets[b]])
        for p in range(6):
            occluded_image = np.where(players[0] == p, 0.0, images[b : b + 1]).astype(np.float32)
            occluded_tab = np.where(players[1] == p, 0.0, tab[b : b + 1]).astype(np.float32)
            value = full - float(np.asarray(model([occluded_image, occluded_tab]))[0, targets[b]])
            got = result.attributions[0][b][players[0] == p].sum() + result.attributions[1][b][players[1] == p].sum()
            np.testing.assert_allclose(got, value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("window,stride", [(3, 2), (4, 3), (2, 1), (8, 1)])
def test_sliding_windows_against_captums_semantics(cnn, window, stride):
    model, fns = cnn
    baseline = RNG.normal(size=IMAGES.shape[1:]).astype(np.float32)
    result = sliding_occlusion(fns, [IMAGES], [baseline], IMAGE_TARGETS, window, stride, chunk_size=16)
    expected = loop_sliding_occlusion(model, IMAGES, baseline, IMAGE_TARGETS, window, stride)
    np.testing.assert_allclose(result.attributions[0], expected, rtol=1e-4, atol=1e-5)
    assert result.convergence_delta is None
    np.testing.assert_allclose(result.target_scores, np.asarray(model(IMAGES))[np.arange(3), IMAGE_TARGETS], rtol=1e-5, atol=1e-6)


def test_uncovered_edges_get_zero(cnn):
    _, fns = cnn
    # 9 x 8 image, window 3, stride 2: windows start at rows 0, 2, 4, 6 and columns 0, 2, 4, so
    # column 7 is never covered; row 8 is covered (6 + 3 = 9).
    result = sliding_occlusion(fns, [IMAGES], [np.zeros(IMAGES.shape[1:])], IMAGE_TARGETS, 3, 2)
    np.testing.assert_array_equal(result.attributions[0][:, :, 7], 0.0)
    assert np.abs(result.attributions[0][:, 8, :7]).max() > 0


def test_tiling_windows_are_patch_players(cnn):
    model, fns = cnn
    images = IMAGES[:, :8]  # 8 x 8: 2 x 2 windows of 4 tile it
    import keras

    cropped = keras.Sequential([keras.Input((8, 8, 2)), *model.layers[:2], keras.layers.Flatten(), keras.layers.Dense(5)])
    fns = _functions(cropped)
    sliding = sliding_occlusion(fns, [images], [np.zeros((8, 8, 2))], IMAGE_TARGETS, 4, 4)
    patches = occlusion(fns, [images], [np.zeros((8, 8, 2))], IMAGE_TARGETS, [patch_players((8, 8, 2), 4)])
    # A window's value is spread over its 32 values by `occlusion`, given whole to each pixel by
    # `sliding_occlusion` (Captum's convention: every covered element gets the window's value).
    np.testing.assert_allclose(sliding.attributions[0], patches.attributions[0] * 32, rtol=1e-5, atol=1e-6)


def test_invalid_arguments_are_explained(mlp, cnn):
    _, fns = mlp
    with pytest.raises(ValueError, match=r"players of input 0 .* expected integers"):
        occlusion(fns, [X], [BASELINE], TARGETS, [np.arange(5)])
    with pytest.raises(ValueError, match="input 0 has shape"):
        occlusion(fns, [X[:, :5]], [BASELINE], TARGETS, element_players([(5,)]))
    with pytest.raises(ValueError, match="a batch of 0 rows"):
        occlusion(fns, [X[:0]], [BASELINE], TARGETS[:0], element_players([(6,)]))
    _, image_fns = cnn
    zeros = np.zeros(IMAGES.shape[1:])
    with pytest.raises(ValueError, match="window 9 is larger than input 0's image, 9 x 8"):
        sliding_occlusion(image_fns, [IMAGES], [zeros], IMAGE_TARGETS, 9, 1)
    with pytest.raises(ValueError, match="stride must be a positive integer"):
        sliding_occlusion(image_fns, [IMAGES], [zeros], IMAGE_TARGETS, 3, 0)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        sliding_occlusion(image_fns, [IMAGES], [zeros], IMAGE_TARGETS, 0, 1)
    with pytest.raises(ValueError, match=r"expected images \(B, H, W\)"):
        sliding_occlusion(fns, [X], [BASELINE], TARGETS, 2, 1)
