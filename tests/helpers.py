"""Shared test helpers: tiny Keras models with known weights, real Parquet/TFRecord files."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def linear_weights(num_features: int = 6, num_classes: int = 3, seed: int = 1):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(num_features, num_classes)).astype(np.float32),
        rng.normal(size=(num_classes,)).astype(np.float32),
    )


def save_linear_model(path, weights, bias, input_name: str = "features", activation=None):
    """Sequential Dense model with exactly these weights: F(x) = act(x @ W + b)."""
    import keras

    model = keras.Sequential(
        [keras.Input((weights.shape[0],), name=input_name), keras.layers.Dense(weights.shape[1], activation=activation)]
    )
    model.layers[-1].set_weights([weights, bias])
    model.save(str(path))
    return str(path)


def save_nonlinear_model(path, num_features: int = 5, num_classes: int = 4, seed: int = 3):
    """A smooth (tanh) MLP with fixed random weights."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((num_features,), name="features"),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.save(str(path))
    return str(path)


def save_multi_input_linear_model(path, seed: int = 2):
    """image (4, 4, 1) and tabular (3,) inputs; F(x) = flatten(image) @ Wi + tabular @ Wt + b, 2 classes."""
    import keras

    rng = np.random.default_rng(seed)
    image = keras.Input((4, 4, 1), name="image")
    tabular = keras.Input((3,), name="tabular")
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(image), tabular])
    dense = keras.layers.Dense(2)
    model = keras.Model([image, tabular], dense(merged))
    weights = rng.normal(size=(19, 2)).astype(np.float32)
    bias = rng.normal(size=(2,)).astype(np.float32)
    dense.set_weights([weights, bias])
    model.save(str(path))
    return str(path), weights, bias


def write_tabular_parquet(path, features: np.ndarray, ids=None, labels=None, row_group_size: int = 16):
    """One scalar column f0..f{d-1} per feature, plus id and label columns."""
    columns = {}
    if ids is not None:
        columns["id"] = pa.array(ids)
    if labels is not None:
        columns["label"] = pa.array(np.asarray(labels, dtype=np.int64))
    for j in range(features.shape[1]):
        columns[f"f{j}"] = pa.array(features[:, j].astype(np.float32))
    pq.write_table(pa.table(columns), str(path), row_group_size=row_group_size)
    return str(path)


def write_vector_tfrecord(path, features: np.ndarray, ids=None, labels=None, feature_name: str = "features"):
    """One tf.train.Example per row: a float_list feature, optional bytes id and int64 label."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, row in enumerate(features):
            feature = {feature_name: tf.train.Feature(float_list=tf.train.FloatList(value=row.reshape(-1)))}
            if ids is not None:
                feature["id"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(ids[i]).encode()]))
            if labels is not None:
                feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


def read_parquet_dir(directory, prefix: str = "attributions") -> pa.Table:
    files = sorted(f for f in os.listdir(directory) if f.startswith(prefix) and f.endswith(".parquet"))
    return pa.concat_tables([pq.read_table(os.path.join(directory, f)) for f in files])


def rows_by_key(table: pa.Table, key: str = "id") -> dict:
    return {row[key]: row for row in table.to_pylist()}


def bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(h, w, ...) -> (height, width, ...) float64, bilinear with half-pixel centers and no
    antialiasing, written out in numpy (TensorFlow's `resize_bilinear(half_pixel_centers=True)`
    rule: source = (i + 0.5) * in/out - 0.5, neighbours clamped to the edge)."""

    def axis(out: int, size: int):
        source = (np.arange(out) + 0.5) * (size / out) - 0.5
        floor = np.floor(source)
        lower = np.clip(floor, 0, size - 1).astype(int)
        upper = np.clip(np.ceil(source), 0, size - 1).astype(int)
        return lower, upper, source - floor

    image = np.asarray(image, dtype=np.float64)
    y0, y1, fy = axis(height, image.shape[0])
    x0, x1, fx = axis(width, image.shape[1])
    extra = (1,) * (image.ndim - 2)
    fy, fx = fy.reshape(-1, 1, *extra), fx.reshape(1, -1, *extra)
    top = image[y0][:, x0] * (1 - fx) + image[y0][:, x1] * fx
    bottom = image[y1][:, x0] * (1 - fx) + image[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (h, w, c) -> PNG bytes."""
    import tensorflow as tf

    return tf.io.encode_png(np.asarray(pixels, dtype=np.uint8)).numpy()


def digits_uint8(count: int = 300, upscale: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 (count, 8*upscale, 8*upscale, 1) images (0..16 scaled to
    0..255, each pixel repeated upscale x upscale times) and int64 labels (count,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images[:count] * 255 / 16).astype(np.uint8)
    images = np.kron(images, np.ones((1, upscale, upscale), dtype=np.uint8))[..., None]
    return images, digits.target[:count].astype(np.int64)


def write_image_tfrecord(path, encoded: list, ids=None, labels=None, feature_name: str = "image/encoded"):
    """One tf.train.Example per encoded image: a bytes feature, optional bytes id and int64 label."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, data in enumerate(encoded):
            feature = {feature_name: tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))}
            if ids is not None:
                feature["id"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(ids[i]).encode()]))
            if labels is not None:
                feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


def save_token_model(path, vocab: int = 12, length: int = 6, dim: int = 4, classes: int = 1, seed: int = 0,
                     hidden: int = 0, extra_float: int = 0):
    """Token ids (length,) int32 -> Embedding(vocab, dim, name 'embedding') -> mean over positions
    [-> concatenated with a float input 'extra' (extra_float,)] [-> Dense(hidden, tanh)] ->
    Dense(classes, linear). Without hidden: F(x) = mean_t e(x_t) @ W [+ extra @ V] + b, so the
    attribution of position t at the embedding is (e(x_t) - e(b_t)) @ W[:, c] / length.
    Returns (path, embedding matrix (vocab, dim), W of the last layer (inputs, classes))."""
    import keras

    keras.utils.set_random_seed(seed)
    tokens = keras.Input((length,), dtype="int32", name="tokens")
    inputs = [tokens]
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(vocab, dim, name="embedding")(tokens))
    if extra_float:
        extra = keras.Input((extra_float,), name="extra")
        inputs.append(extra)
        x = keras.layers.Concatenate()([x, extra])
    if hidden:
        x = keras.layers.Dense(hidden, activation="tanh", name="hidden")(x)
    head = keras.layers.Dense(classes, name="head")
    model = keras.Model(inputs, head(x))
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(vocab, dim)).astype(np.float32)
    model.get_layer("embedding").set_weights([embedding])
    model.save(str(path))
    return str(path), embedding, head.get_weights()[0]


def write_token_parquet(path, tokens: np.ndarray, ids=None, extra=None, column: str = "tokens"):
    """A list<int64> column of token ids per row (plus id and an 'extra' list<float32> column)."""
    columns = {}
    if ids is not None:
        columns["id"] = pa.array(ids)
    columns[column] = pa.array([list(map(int, row)) for row in tokens], type=pa.list_(pa.int64()))
    if extra is not None:
        columns["extra"] = pa.array([list(map(float, row)) for row in extra], type=pa.list_(pa.float32()))
    pq.write_table(pa.table(columns), str(path))
    return str(path)


def write_token_tfrecord(path, tokens: np.ndarray, ids, column: str = "tokens"):
    """One tf.train.Example per row: an int64_list of token ids and a bytes id."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for key, row in zip(ids, tokens):
            feature = {
                column: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in row])),
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(key).encode()])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


def train_digits_cnn(path, images: np.ndarray, labels: np.ndarray, epochs: int = 3, seed: int = 0):
    """A small CNN (conv, pool, conv 'last_conv', global average pooling, dense softmax 'scores'; named
    layers, so names do not depend on what else the process built) trained on
    uint8 images scaled to [0, 1] (seeded, a few seconds); saved to `path`."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(images.shape[1:], name="pixels"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="first_conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="last_conv"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(10, activation="softmax", name="scores"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images.astype(np.float32) / 255.0, labels, epochs=epochs, batch_size=32, verbose=0)
    model.save(str(path))
    return str(path)


PENGUIN_ISLANDS = ("Biscoe", "Dream", "Torgersen")
PENGUIN_SEXES = ("female", "male")
PENGUIN_SPECIES = ("Adelie", "Chinstrap", "Gentoo")
PENGUIN_MEASUREMENTS = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")


def penguins_table() -> pa.Table:
    """The Palmer penguins (344 rows, palmerpenguins' bundled CSV, read offline) as Arrow: island and
    sex as int64 ids (PENGUIN_ISLANDS / PENGUIN_SEXES order; sex null where the CSV says NA), the
    four measurements as float32 (null where NA), species as an int64 label, and an id column."""
    import importlib.resources

    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    path = importlib.resources.files("palmerpenguins") / "data" / "penguins.csv"
    raw = pcsv.read_csv(str(path), convert_options=pcsv.ConvertOptions(null_values=["NA"], strings_can_be_null=True))

    def ids(column, names):
        return pc.index_in(raw.column(column), value_set=pa.array(names)).cast(pa.int64())

    columns = {"id": pa.array(np.arange(raw.num_rows, dtype=np.int64)), "island": ids("island", PENGUIN_ISLANDS),
               "sex": ids("sex", PENGUIN_SEXES)}
    for name in PENGUIN_MEASUREMENTS:
        columns[name] = raw.column(name).cast(pa.float32())
    columns["species"] = ids("species", PENGUIN_SPECIES)
    return pa.table(columns)


def train_penguins_model(path, table: pa.Table, seed: int = 0):
    """species from island (ids -> Embedding(3, 2)), sex (ids -> one-hot CategoryEncoding) and the
    four measurements (floats, standardized inside the model): 3-class softmax, trained in seconds
    on the complete rows. Returns the path."""
    import keras

    keras.utils.set_random_seed(seed)
    complete = table.filter(np.all([table.column(c).is_valid().to_numpy(zero_copy_only=False) for c in table.column_names], axis=0))
    island = complete.column("island").to_numpy().reshape(-1, 1).astype(np.int32)
    sex = complete.column("sex").to_numpy().reshape(-1, 1).astype(np.int32)
    measurements = np.stack([complete.column(c).to_numpy() for c in PENGUIN_MEASUREMENTS], axis=1)
    labels = complete.column("species").to_numpy()

    island_in = keras.Input((1,), dtype="int32", name="island")
    sex_in = keras.Input((1,), dtype="int32", name="sex")
    measured_in = keras.Input((4,), name="measurements")
    island_vec = keras.layers.Flatten()(keras.layers.Embedding(3, 2, name="island_embedding")(island_in))
    sex_vec = keras.layers.CategoryEncoding(2, output_mode="one_hot", name="sex_one_hot")(sex_in)
    scaled = keras.layers.Normalization(mean=measurements.mean(axis=0), variance=measurements.var(axis=0))(measured_in)
    hidden = keras.layers.Dense(16, activation="tanh")(keras.layers.Concatenate()([island_vec, sex_vec, scaled]))
    model = keras.Model([island_in, sex_in, measured_in], keras.layers.Dense(3, activation="softmax")(hidden))
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit([island, sex, measurements], labels, epochs=40, batch_size=32, verbose=0)
    model.save(str(path))
    return str(path)


def save_text_model(path, texts, length: int = 8, dim: int = 4, classes: int = 2, seed: int = 0, max_tokens: int = 50,
                    standardize="lower_and_strip_punctuation"):
    """A string input 'text' (1,) -> TextVectorization(adapted on `texts`, output_sequence_length
    `length`, name 'vectorize') -> Embedding(max_tokens, dim, name 'embedding') -> mean over
    positions -> Dense(classes, name 'head'). Returns (path, embedding (max_tokens, dim), W (dim, classes),
    vocabulary list)."""
    import keras

    keras.utils.set_random_seed(seed)
    vectorize = keras.layers.TextVectorization(max_tokens=max_tokens, output_sequence_length=length, name="vectorize",
                                               standardize=standardize)
    vectorize.adapt(list(texts))
    text = keras.Input((1,), dtype="string", name="text")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(max_tokens, dim, name="embedding")(vectorize(text)))
    head = keras.layers.Dense(classes, name="head")
    model = keras.Model(text, head(pooled))
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(max_tokens, dim)).astype(np.float32)
    model.get_layer("embedding").set_weights([embedding])
    model.save(str(path))
    return str(path), embedding, head.get_weights()[0], list(vectorize.get_vocabulary())


def vader_lexicon() -> dict:
    """{word: mean valence in [-4, 4]} of the lowercase alphabetic entries of the VADER sentiment
    lexicon (vaderSentiment's bundled vader_lexicon.txt, read offline: each entry rated by 10 human
    raters; Hutto & Gilbert, ICWSM 2014)."""
    import importlib.resources
    import re

    text = (importlib.resources.files("vaderSentiment") / "vader_lexicon.txt").read_text(encoding="utf-8")
    entries = (line.split("\t") for line in text.splitlines() if line.strip())
    return {fields[0]: float(fields[1]) for fields in entries if re.fullmatch("[a-z]+", fields[0])}
