"""Attributions at a layer (attributions.layers): closed forms on a linear model over mean-pooled
embeddings, completeness at the layer, batch invariance, a planted token, and the split's errors."""

from __future__ import annotations

import numpy as np
import pytest

from attributions.expected_gradients import expected_gradients
from attributions.gradient import gradient
from attributions.gradient_x_input import gradient_x_input
from attributions.integrated_gradients import integrated_gradients
from attributions.adaptive_ig import adaptive_integrated_gradients
from attributions.layers import default_layers, id_range, reduce_to_positions, split_model
from attributions.loading import load_model
from attributions.smoothgrad import smoothgrad
from helpers import save_token_model

LENGTH = 6


@pytest.fixture
def linear_tokens(tmp_path):
    path, embedding, weights = save_token_model(tmp_path / "tokens.keras", vocab=12, length=LENGTH, dim=4, classes=3)
    model = load_model(path)
    split, fns = model.layer_functions(["embedding"])
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 12, size=(9, LENGTH)).astype(np.int32)
    return model, split, fns, embedding, weights, tokens


def _activations(split, tokens):
    return tuple(np.asarray(a, dtype=np.float32) for a in split.lower((tokens,)))


def _expected(embedding, weights, tokens, reference_tokens, targets):
    """(e(x_t) - e(b_t)) @ W[:, target] / T: the exact attribution of each position, (B, T)."""
    diff = embedding[tokens] - (0 if reference_tokens is None else embedding[reference_tokens])  # (B, T, D)
    w = weights[:, np.broadcast_to(targets, (len(tokens),))]  # (D, B)
    return np.einsum("btd,db->bt", diff, w) / LENGTH


def test_split_reports_what_each_part_reads(linear_tokens):
    model, split, _, _, _, tokens = linear_tokens
    assert split.layer_names == ("embedding",) and split.replaced_inputs == ("tokens",)
    assert split.kept_inputs == () and split.lower_inputs == ("tokens",)
    assert split.activation_shapes == ((LENGTH, 4),)
    assert default_layers(model._keras_model) == {"tokens": "embedding"}
    assert id_range(model._keras_model, "embedding") == 12
    # upper(lower(x)) is the model
    np.testing.assert_allclose(split.upper(_activations(split, tokens)), model._call_all((tokens,))[0], rtol=1e-6)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_middle", "riemann_trapezoid"])
def test_integrated_gradients_at_the_layer_is_exact_on_a_linear_model(linear_tokens, rule):
    _, split, fns, embedding, weights, tokens = linear_tokens
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2], dtype=np.int32)
    acts = _activations(split, tokens)
    result = integrated_gradients(fns, acts, (np.zeros((LENGTH, 4), np.float32),), targets, steps=16, rule=rule)
    np.testing.assert_allclose(reduce_to_positions(result.attributions[0]), _expected(embedding, weights, tokens, None, targets),
                               rtol=1e-4, atol=1e-6)
    # baseline id 0 (padding): the layer's output for id 0 at every position
    pad = np.zeros((1, LENGTH), np.int32)
    base = _activations(split, pad)
    result = integrated_gradients(fns, acts, base, targets, steps=16, rule=rule)
    np.testing.assert_allclose(reduce_to_positions(result.attributions[0]), _expected(embedding, weights, tokens, pad, targets),
                               rtol=1e-4, atol=1e-6)
    assert np.abs(result.completeness_error).max() < 1e-5


def test_gradient_and_gradient_x_input_at_the_layer(linear_tokens):
    _, split, fns, embedding, weights, tokens = linear_tokens
    acts = _activations(split, tokens)
    targets = np.full(len(tokens), 2, np.int32)
    g = gradient(fns, acts, targets)
    # dF/da_td = W[d, 2] / T at every position, so the position's sum is sum_d W[d, 2] / T
    np.testing.assert_allclose(reduce_to_positions(g.attributions[0]), np.full((len(tokens), LENGTH), weights[:, 2].sum() / LENGTH),
                               rtol=1e-5)
    gx = gradient_x_input(fns, acts, targets)
    np.testing.assert_allclose(reduce_to_positions(gx.attributions[0]), _expected(embedding, weights, tokens, None, 2),
                               rtol=1e-4, atol=1e-6)


def test_smoothgrad_and_expected_gradients_at_the_layer(linear_tokens):
    _, split, fns, embedding, weights, tokens = linear_tokens
    acts = _activations(split, tokens)
    targets = np.full(len(tokens), 1, np.int32)
    seeds = np.arange(len(tokens), dtype=np.uint64)
    sg = smoothgrad(fns, acts, targets, seeds, "smoothgrad", 8, 0.15, 0, 64)
    np.testing.assert_allclose(reduce_to_positions(sg.attributions[0]), np.full((len(tokens), LENGTH), weights[:, 1].sum() / LENGTH),
                               rtol=1e-4)
    reference = np.array([[3, 3, 3, 3, 3, 3]], np.int32)
    eg = expected_gradients(fns, acts, _activations(split, reference), targets, seeds, 16, 0, 64)
    np.testing.assert_allclose(reduce_to_positions(eg.attributions[0]), _expected(embedding, weights, tokens, reference, 1),
                               rtol=1e-4, atol=1e-6)


def test_completeness_at_the_layer_on_a_nonlinear_model(tmp_path):
    path, _, _ = save_token_model(tmp_path / "mlp.keras", vocab=20, length=8, dim=5, classes=4, hidden=16, seed=3)
    model = load_model(path)
    split, fns = model.layer_functions(["embedding"])
    tokens = np.random.default_rng(1).integers(0, 20, size=(25, 8)).astype(np.int32)
    acts = _activations(split, tokens)
    base = (np.zeros((8, 5), np.float32),)
    targets = np.argmax(fns.predict(acts), axis=1).astype(np.int32)
    result = integrated_gradients(fns, acts, base, targets, steps=64)
    attr = reduce_to_positions(result.attributions[0])  # (B, T)
    f_x = fns.predict(acts)[np.arange(25), targets]
    f_b = fns.predict(tuple(np.broadcast_to(b, a.shape) for a, b in zip(acts, base)))[np.arange(25), targets]
    np.testing.assert_allclose(attr.sum(axis=1), f_x - f_b, rtol=1e-3, atol=1e-5)
    assert result.completeness_error.max() < 1e-3
    adaptive = adaptive_integrated_gradients(fns, acts, base, targets, 1e-4, 8, 1024, "gausslegendre", 1024)
    np.testing.assert_allclose(reduce_to_positions(adaptive.attributions[0]).sum(axis=1), f_x - f_b, rtol=1e-3, atol=1e-5)
    assert adaptive.completeness_met.all()


def test_a_row_alone_equals_the_row_in_a_batch_of_50(tmp_path):
    path, _, _ = save_token_model(tmp_path / "mlp.keras", vocab=20, length=8, dim=5, classes=2, hidden=8, seed=4)
    model = load_model(path)
    split, fns = model.layer_functions(["embedding"])
    tokens = np.random.default_rng(2).integers(0, 20, size=(50, 8)).astype(np.int32)
    base = (np.zeros((8, 5), np.float32),)
    targets = np.zeros(50, np.int32)
    batch = integrated_gradients(fns, _activations(split, tokens), base, targets, steps=32, chunk_size=96)
    for row in (0, 17, 49):
        alone = integrated_gradients(fns, _activations(split, tokens[row : row + 1]), base, targets[:1], steps=32, chunk_size=1024)
        np.testing.assert_allclose(alone.attributions[0][0], batch.attributions[0][row], rtol=1e-5, atol=1e-7)


def test_a_planted_token_dominates_its_rows(tmp_path):
    """Trained in the test: label 1 iff token 7 occurs. On rows the model calls positive, IG at the
    embedding gives the largest attribution to a position holding token 7 on >= 95 % of rows."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    vocab, length = 16, 10
    tokens = rng.integers(1, vocab, size=(3000, length))
    tokens[tokens == 7] = 8
    positive = rng.random(3000) < 0.5
    tokens[positive, rng.integers(0, length, size=positive.sum())] = 7
    inputs = keras.Input((length,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab, 8, name="embedding")(inputs)
    x = keras.layers.GlobalMaxPooling1D()(keras.layers.Dense(8, activation="relu")(x))
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss=keras.losses.BinaryCrossentropy(from_logits=True))
    model.fit(tokens, positive.astype(np.float32), epochs=6, batch_size=64, verbose=0)
    model.save(str(tmp_path / "planted.keras"))

    loaded = load_model(str(tmp_path / "planted.keras"))
    split, fns = loaded.layer_functions(default_layers(loaded._keras_model).values())
    test = rng.integers(1, vocab, size=(400, length))
    test[test == 7] = 8
    test[:, 0] = 7
    perm = rng.permuted(np.tile(np.arange(length), (400, 1)), axis=1)
    test = np.take_along_axis(test, perm, axis=1)  # token 7 at a random position of each row
    acts = _activations(split, test.astype(np.int32))
    assert (fns.predict(acts)[:, 0] > 0).mean() > 0.95  # the model learned the rule
    result = integrated_gradients(fns, acts, (np.zeros((length, 8), np.float32),), np.zeros(400, np.int32), steps=32)
    top = np.argmax(reduce_to_positions(result.attributions[0]), axis=1)
    assert (test[np.arange(400), top] == 7).mean() >= 0.95


def test_unsplittable_models_are_refused_with_what_and_how(tmp_path):
    import keras

    a = keras.Input((3,), dtype="int32", name="a")
    b = keras.Input((3,), dtype="int32", name="b")
    summed = keras.layers.Add(name="added")([a, b])
    emb = keras.layers.Embedding(10, 2, name="emb")(summed)
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Flatten()(emb)))
    with pytest.raises(ValueError, match=r"layer 'emb' is fed by 2 model inputs \['a', 'b'\].*Pick a layer that only one input reaches"):
        split_model(model, ["emb"])
    with pytest.raises(ValueError, match=r"layer 'embb' is not a layer of the model. Did you mean 'emb'\?"):
        split_model(model, ["embb"])

    ids = keras.Input((3,), dtype="int32", name="ids")
    e = keras.layers.Flatten()(keras.layers.Embedding(10, 2, name="e")(ids))
    # the raw ids also reach the output as numbers, not only through the embedding
    leak = keras.layers.Concatenate()([e, keras.layers.Activation("linear", name="as_float")(keras.ops.cast(ids, "float32"))])
    leaky = keras.Model(ids, keras.layers.Dense(1)(leak))
    with pytest.raises(ValueError, match=r"model input 'ids' \(int32\) reaches the output other than through layers \['e'\]"):
        split_model(leaky, ["e"])


def test_any_layer_splits_e_g_a_conv_layer_of_a_float_cnn(tmp_path):
    """The split is generic (Grad-CAM takes a conv layer's activations the same way): a float CNN
    split at its conv layer recomposes to the model, and the layer stands for the image input."""
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    side = keras.Input((2,), name="side")
    conv = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(image)
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(conv), side])
    model = keras.Model([image, side], keras.layers.Dense(3, activation="softmax")(merged))
    split = split_model(model, ["conv"])
    assert split.replaced_inputs == ("image",) and split.kept_inputs == ("side",) and split.lower_inputs == ("image",)
    assert split.activation_shapes == ((6, 6, 4),)
    rng = np.random.default_rng(0)
    x, s = rng.normal(size=(5, 8, 8, 1)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)
    (activation,) = split.lower((x,))
    np.testing.assert_allclose(split.upper((activation, s)), model([x, s]), rtol=1e-6, atol=1e-7)


def test_id_range_is_known_through_layers_that_only_move_values():
    import keras

    ids = keras.Input((2, 3), dtype="int32", name="ids")
    flat = keras.layers.Reshape((6,))(ids)
    embedded = keras.layers.Embedding(7, 2, name="emb")(flat)
    shifted = keras.layers.Embedding(5, 2, name="emb_after_add")(keras.layers.Add()([flat, flat]))
    model = keras.Model(ids, keras.layers.Dense(1)(keras.layers.Flatten()(keras.layers.Concatenate()([embedded, shifted]))))
    assert id_range(model, "emb") == 7  # through the Reshape: the ids are the input's
    assert id_range(model, "emb_after_add") is None  # 2 x id: not the input's ids, no range to check
