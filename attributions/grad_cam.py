"""Grad-CAM: the class-activation map at a convolutional layer (Selvaraju et al., arXiv:1610.02391).

For an example x, a target class t and a layer with activations A = lower(x), shape (h, w, K):

    alpha_k  = mean over (i, j) of d score_t / d A[i, j, k]          (K,)
    map[i,j] = ReLU( sum_k alpha_k * A[i, j, k] )                    (h, w)

with score_t = upper(A)[t], the explained output (the model is split at the layer: lower maps the
input to the layer's output, upper maps that to the explained output). This is Captum's
`LayerGradCam` convention (`relu_attributions=True`, the map at the layer's resolution). The map
upsampled to the input's (H, W) with bilinear interpolation (`tf.image.resize`, half-pixel
centers) overlays the image. Grad-CAM has no completeness property: its maps do not sum to
F(x) - F(baseline), so it reports no convergence delta.

No Beam import: `GradCam` is built once per worker from a Keras model; `grad_cam` is the pure
function it compiles.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import tensorflow as tf

__all__ = ["grad_cam", "upsample", "conv_layer", "split_at_layer", "GradCam"]


def grad_cam(lower: Any, upper: Any, inputs: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Grad-CAM maps (module docstring) of a batch.

    lower: (B, H, W, C) inputs -> (B, h, w, K) layer activations; upper: (B, h, w, K) -> the
    explained output (B, N) (or (B,) for a scalar output); both called with training=False.
    inputs: float32 (B, H, W, C); targets: int32 (B,), each in [0, N).
    Returns (maps float32 (B, h, w), target scores float32 (B,)).
    """
    activations = lower(inputs, training=False)  # (B, h, w, K)
    with tf.GradientTape() as tape:
        tape.watch(activations)
        outputs = upper(activations, training=False)
        outputs = tf.reshape(tf.cast(outputs, tf.float32), [tf.shape(inputs)[0], -1])  # (B, N)
        scores = tf.gather(outputs, targets, axis=1, batch_dims=1)  # (B,)
    # Each example's score depends only on its own activations: the gradient of the sum is per example.
    grads = tape.gradient(scores, activations)  # (B, h, w, K)
    alphas = tf.reduce_mean(grads, axis=[1, 2])  # (B, K)
    maps = tf.nn.relu(tf.einsum("bhwk,bk->bhw", activations, alphas))  # (B, h, w)
    return maps, scores


def upsample(maps: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """(B, h, w) maps -> (B, H, W), bilinear (`tf.image.resize`, half-pixel centers, no antialiasing)."""
    return tf.image.resize(maps[..., tf.newaxis], size, method="bilinear")[..., 0]


def _output_rank(layer: Any) -> Optional[int]:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer without a single output (shared, or never called)
        return None


def conv_layer(model: Any, name: Optional[str] = None) -> Any:
    """The layer Grad-CAM reads: `name`, or the last layer with a 4-D (batch, height, width,
    channels) output before the model's output layer. Raises ValueError saying what was seen."""
    import keras

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if name is not None:
        names = [layer.name for layer in layers]
        if name not in names:
            raise ValueError(f"layer {name!r} is not a layer of the model; its layers are {names}. Pass one of them with --layer.")
        layer = layers[names.index(name)]
        if _output_rank(layer) != 4:
            shape = tuple(layer.output.shape) if _output_rank(layer) is not None else "not a single tensor"
            raise ValueError(
                f"grad_cam needs a layer with a 4-D (batch, height, width, channels) output, but layer {name!r} outputs "
                f"{shape}; pass a convolutional layer with --layer (4-D layers: {_four_d_names(layers)})."
            )
        return layer
    candidates = [layer for layer in layers[:-1] if _output_rank(layer) == 4]
    if not candidates:
        seen = ", ".join(f"{layer.name} {tuple(layer.output.shape) if _output_rank(layer) else '?'}" for layer in layers[:12])
        raise ValueError(
            f"grad_cam needs a layer with a 4-D (batch, height, width, channels) output before the model's output, and "
            f"this model has none (its layers: {seen}); use another method (e.g. integrated_gradients) for it."
        )
    return candidates[-1]


def _four_d_names(layers: list) -> list[str]:
    return [layer.name for layer in layers if _output_rank(layer) == 4]


def split_at_layer(model: Any, layer: Any, output: Any) -> tuple[Any, Any]:
    """(lower, upper) Keras models: model inputs -> the layer's output, and that -> `output` (a
    Keras tensor of `model`: the explained output). The graph work (the layer's tensor on the
    output's path, even in a Sequential model loaded from a file) is `attributions.layers.split_model`'s.
    Raises ValueError when the output depends on the input along a path that bypasses the layer
    (a skip connection around it)."""
    import keras

    from attributions.layers import split_model

    split = split_model(model, [layer.name], output)
    if split.kept_inputs:  # the upper part would still read the image: a path around the layer
        raise ValueError(
            f"the model's output depends on its input along a path that bypasses layer {layer.name!r} (a skip connection "
            f"around it?), so Grad-CAM at that layer is not defined; choose a layer every path to the output goes "
            f"through with --layer."
        )
    (activations,) = split.lower_model.outputs
    return keras.Model(model.inputs, activations), keras.Model(activations, output)


class GradCam:
    """Grad-CAM of one Keras model at one layer, compiled once (one trace per input shape).

    model: a Keras model with one input (H, W, C); layer: see `conv_layer`; output: the Keras
    tensor explained (model.outputs[i], or the pre-activation tensor for logits: built by
    `attributions.loading.LoadedModel.grad_cam`).
    """

    def __init__(self, model: Any, layer: Any, output: Any):
        self.lower, self.upper = split_at_layer(model, layer, output)
        self.layer_name = layer.name
        self.input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])  # (H, W, C)
        self.layer_shape = tuple(int(d) for d in self.lower.outputs[0].shape[1:])  # (h, w, K)
        size = self.input_shape[:2]

        @tf.function(input_signature=[tf.TensorSpec((None, *self.input_shape), tf.float32), tf.TensorSpec((None,), tf.int32)])
        def compiled(inputs, targets):
            maps, scores = grad_cam(self.lower, self.upper, inputs, targets)
            return maps, upsample(maps, size), scores

        self._compiled = compiled

    def __call__(self, inputs: np.ndarray, targets: np.ndarray, chunk_size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """inputs float32 (B, H, W, C), targets int (B,) >= 0 -> (maps (B, h, w), upsampled (B, H, W),
        scores (B,)), float32, at most `chunk_size` examples per call."""
        num = len(inputs)
        step = chunk_size or max(num, 1)
        parts = [
            self._compiled(tf.convert_to_tensor(np.asarray(inputs[i : i + step], np.float32)),
                           tf.convert_to_tensor(np.asarray(targets[i : i + step], np.int32)))
            for i in range(0, num, step)
        ]
        if not parts:
            return (np.zeros((0, *self.layer_shape[:2]), np.float32), np.zeros((0, *self.input_shape[:2]), np.float32),
                    np.zeros((0,), np.float32))
        return tuple(np.concatenate([p[k].numpy() for p in parts]) for k in range(3))
