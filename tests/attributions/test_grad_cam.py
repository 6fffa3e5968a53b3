"""Grad-CAM against maps computed by hand in numpy on tiny conv nets with set weights."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import bilinear_resize

keras = pytest.importorskip("keras")
from attributions.grad_cam import GradCam, conv_layer, grad_cam, split_at_layer  # noqa: E402
from attributions.loading import load_model  # noqa: E402


def _conv_relu(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Valid 2-D cross-correlation + bias + ReLU, as Keras' Conv2D computes it: x (B, H, W, C),
    kernel (kh, kw, C, K) -> (B, H-kh+1, W-kw+1, K), float64."""
    b, height, width, _ = x.shape
    kh, kw, _, k = kernel.shape
    out = np.zeros((b, height - kh + 1, width - kw + 1, k))
    for i in range(height - kh + 1):
        for j in range(width - kw + 1):
            patch = x[:, i : i + kh, j : j + kw, :].astype(np.float64)  # (B, kh, kw, C)
            out[:, i, j, :] = np.einsum("bhwc,hwck->bk", patch, kernel) + bias
    return np.maximum(out, 0.0)


def _tiny_model(head: str, seed: int = 0):
    """Input (5, 5, 2) -> Conv2D(3, 2x2, relu, 'conv') -> head -> 4 outputs, weights set from a
    seeded generator. head: 'dense' (Flatten, Dense), 'tanh' (Flatten, Dense tanh, Dense) or
    'gap' (GlobalAveragePooling2D, Dense softmax)."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((5, 5, 2), name="image")
    conv = keras.layers.Conv2D(3, 2, activation="relu", name="conv")
    x = conv(inputs)
    weights = {"kernel": rng.normal(size=(2, 2, 2, 3)).astype(np.float32), "bias": rng.normal(size=3).astype(np.float32) * 0.1}
    if head == "gap":
        dense = keras.layers.Dense(4, activation="softmax", name="out")
        outputs = dense(keras.layers.GlobalAveragePooling2D()(x))
        weights["dense"] = [rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
        layers = [dense]
    elif head == "dense":
        dense = keras.layers.Dense(4, name="out")
        outputs = dense(keras.layers.Flatten()(x))
        weights["dense"] = [rng.normal(size=(48, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
        layers = [dense]
    else:
        hidden, dense = keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(4, name="out")
        outputs = dense(hidden(keras.layers.Flatten()(x)))
        weights["hidden"] = [rng.normal(size=(48, 6)).astype(np.float32) * 0.3, rng.normal(size=6).astype(np.float32) * 0.1]
        weights["dense"] = [rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
        layers = [hidden, dense]
    model = keras.Model(inputs, outputs)
    conv.set_weights([weights["kernel"], weights["bias"]])
    for layer, name in zip(layers, ["hidden", "dense"] if head == "tanh" else ["dense"]):
        layer.set_weights(weights[name])
    return model, weights


def _hand_grad_cam(head: str, weights: dict, x: np.ndarray, targets: np.ndarray, logits: bool = False) -> np.ndarray:
    """The Grad-CAM map in numpy: activations A from the conv weights, d score / d A in closed
    form for each head, alpha = mean over (h, w), map = ReLU(sum_k alpha_k A_k). (B, 4, 4)."""
    a = _conv_relu(x, weights["kernel"], weights["bias"])  # (B, 4, 4, 3)
    b = len(x)
    if head == "dense":
        w, _ = weights["dense"]
        grads = w[:, targets].T.reshape(b, 4, 4, 3)  # d(flat(A) @ W)_t / dA
    elif head == "tanh":
        u, c = weights["hidden"]
        v, _ = weights["dense"]
        hidden = np.tanh(a.reshape(b, -1) @ u + c)  # (B, 6)
        grads = ((v[:, targets].T * (1 - hidden**2)) @ u.T).reshape(b, 4, 4, 3)
    else:  # gap: softmax(mean(A) @ W + c)
        w, c = weights["dense"]
        z = a.mean(axis=(1, 2)) @ w + c  # (B, 4)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        onehot = np.eye(4)[targets]
        dz = onehot if logits else p[np.arange(b), targets][:, None] * (onehot - p)  # d score / d z, (B, 4)
        grads = np.broadcast_to((dz @ w.T)[:, None, None, :] / 16.0, a.shape)
    alphas = grads.mean(axis=(1, 2))  # (B, 3)
    return np.maximum(np.einsum("bhwk,bk->bhw", a, alphas), 0.0)


@pytest.mark.parametrize("head", ["dense", "tanh", "gap"])
def test_grad_cam_equals_the_map_computed_by_hand(head):
    model, weights = _tiny_model(head)
    x = np.random.default_rng(5).normal(size=(6, 5, 5, 2)).astype(np.float32)
    targets = np.array([0, 1, 2, 3, 1, 2], dtype=np.int32)
    cam = GradCam(model, conv_layer(model), model.outputs[0])
    maps, upsampled, scores = cam(x, targets)
    expected = _hand_grad_cam(head, weights, x, targets)
    assert maps.shape == (6, 4, 4) and upsampled.shape == (6, 5, 5)
    assert np.abs(expected).max() > 1e-3  # the maps are not all zero: the comparison means something
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scores, np.asarray(model(x))[np.arange(6), targets], rtol=1e-5, atol=1e-6)


def test_grad_cam_of_a_global_average_pooling_head_is_cam_of_the_class_weights(tmp_path):
    # Selvaraju et al. section 3.1: with GAP + a linear layer, Grad-CAM is CAM, sum_k w_kt A_k / (h w), up to ReLU.
    model, weights = _tiny_model("gap")
    model.save(tmp_path / "gap.keras")
    x = np.random.default_rng(6).normal(size=(3, 5, 5, 2)).astype(np.float32)
    targets = np.array([2, 0, 3], dtype=np.int32)
    cam = load_model(str(tmp_path / "gap.keras")).grad_cam(None, explain_logits=True)
    maps, _, _ = cam(x, targets)
    a = _conv_relu(x, weights["kernel"], weights["bias"])
    w, _ = weights["dense"]
    expected = np.maximum(np.einsum("bhwk,kb->bhw", a, w[:, targets]) / 16.0, 0.0)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(maps, _hand_grad_cam("gap", weights, x, targets, logits=True), rtol=1e-4, atol=1e-6)


def test_a_sequential_model_loaded_from_a_file_gives_the_same_maps(tmp_path):
    # A loaded Sequential's layer.output is the layer's first call node, not the one its output is
    # computed through: splitting there would give no gradient at all.
    model, weights = _tiny_model("dense")
    sequential = keras.Sequential([keras.Input((5, 5, 2)), *model.layers[1:]])
    sequential.save(tmp_path / "seq.keras")
    loaded = keras.saving.load_model(tmp_path / "seq.keras", safe_mode=True)
    x = np.random.default_rng(7).normal(size=(4, 5, 5, 2)).astype(np.float32)
    targets = np.array([3, 2, 1, 0], dtype=np.int32)
    maps, _, _ = GradCam(loaded, conv_layer(loaded, "conv"), loaded.outputs[0])(x, targets)
    np.testing.assert_allclose(maps, _hand_grad_cam("dense", weights, x, targets), rtol=1e-4, atol=1e-5)


def test_a_batch_equals_its_examples_run_alone_for_every_chunk_size():
    model, _ = _tiny_model("tanh", seed=3)
    x = np.random.default_rng(8).normal(size=(7, 5, 5, 2)).astype(np.float32)
    targets = np.array([0, 1, 2, 3, 0, 1, 2], dtype=np.int32)
    cam = GradCam(model, conv_layer(model), model.outputs[0])
    alone = [cam(x[i : i + 1], targets[i : i + 1]) for i in range(7)]
    for chunk in (None, 1, 2, 3, 7):
        maps, upsampled, scores = cam(x, targets, chunk)
        for i, (m, u, s) in enumerate(alone):
            np.testing.assert_allclose(maps[i], m[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(upsampled[i], u[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(scores[i], s[0], rtol=1e-6)


def test_the_upsampled_map_is_the_bilinear_resize_of_the_layer_map():
    import tensorflow as tf

    model, _ = _tiny_model("dense", seed=4)
    x = np.random.default_rng(9).normal(size=(3, 5, 5, 2)).astype(np.float32)
    maps, upsampled, _ = GradCam(model, conv_layer(model), model.outputs[0])(x, np.array([1, 2, 3], np.int32))
    resized = tf.image.resize(maps[..., None], (5, 5), method="bilinear").numpy()[..., 0]
    np.testing.assert_allclose(upsampled, resized, rtol=1e-6, atol=1e-7)
    by_hand = np.stack([bilinear_resize(m, 5, 5) for m in maps])  # the rule written out in numpy
    np.testing.assert_allclose(upsampled, by_hand, rtol=1e-5, atol=1e-6)


def test_the_pure_function_takes_any_split_and_shapes_follow_the_docstring():
    import tensorflow as tf

    model, weights = _tiny_model("dense")
    lower, upper = split_at_layer(model, model.get_layer("conv"), model.outputs[0])
    x = tf.constant(np.random.default_rng(10).normal(size=(2, 5, 5, 2)).astype(np.float32))
    maps, scores = grad_cam(lower, upper, x, tf.constant([0, 3], tf.int32))
    assert maps.shape == (2, 4, 4) and scores.shape == (2,)
    np.testing.assert_allclose(maps.numpy(), _hand_grad_cam("dense", weights, x.numpy(), np.array([0, 3])), rtol=1e-4, atol=1e-5)


def test_the_default_layer_is_the_last_4d_layer_before_the_output():
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", name="first")(inputs)
    x = keras.layers.Conv2D(2, 3, padding="same", name="second")(x)
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(x)))
    assert conv_layer(model).name == "pool"
    assert conv_layer(model, "first").name == "first"


def test_a_model_without_a_4d_layer_or_a_named_layer_that_is_not_4d_is_refused_with_what_was_seen():
    dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="hidden"), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"has none \(its layers: hidden \(None, 3\).*use another method"):
        conv_layer(dense)
    model, _ = _tiny_model("dense")
    with pytest.raises(ValueError, match=r"layer 'out' outputs \(None, 4\); pass a convolutional layer with --layer \(4-D layers: \['conv'\]\)"):
        conv_layer(model, "out")
    with pytest.raises(ValueError, match=r"layer 'nope' is not a layer of the model; its layers are \['conv', 'flatten.*'out'\]"):
        conv_layer(model, "nope")


def test_a_layer_bypassed_by_a_skip_connection_is_refused():
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(1, 3, padding="same", name="inner")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Add()([conv, inputs]))))
    with pytest.raises(ValueError, match="bypasses layer 'inner'.*choose a layer every path to the output goes through"):
        split_at_layer(model, model.get_layer("inner"), model.outputs[0])
