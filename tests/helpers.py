"""Shared test helpers: tiny Keras models with known weights, real Parquet/TFRecord files."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

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

    from pipeline.demo import write_examples

    values = [tf.train.Feature(float_list=tf.train.FloatList(value=row.reshape(-1))) for row in features]
    return write_examples(path, values, feature_name, ids, labels)


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


def run_on_the_portable_path(cli_args: list, log_path, timeout: float = 300, extra_pythonpath: str = "") -> str:
    """Runs `python -m pipeline *cli_args --wait` on PortableRunner through Beam's Python job service
    and an EXTERNAL SDK worker pool (the shape of Flink with SDK workers in a sidecar pool), each
    started here in its own session and stopped afterwards; every wait is bounded (a hung SDK worker
    fails the test, it does not hang CI). The services log to `log_path` (the pool logs each worker
    it starts). extra_pythonpath: a folder put first on every process's PYTHONPATH (e.g. one with a
    sitecustomize.py). Returns the launcher's stderr; fails the test unless it exits 0."""
    import subprocess
    import sys

    import pytest

    from pipeline.processes import free_port, stop_session, wait_for_port

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pythonpath = os.pathsep.join(p for p in (extra_pythonpath, repo) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    job_port, pool_port = free_port(), free_port()
    started = []
    with open(log_path, "w") as logs:
        try:
            started.append(subprocess.Popen([sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
                                             f"--port={job_port}"], env=env, stdout=logs, stderr=subprocess.STDOUT, start_new_session=True))
            started.append(subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                                             f"--service_port={pool_port}"], env=env, stdout=logs, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=repo))
            wait_for_port(job_port, started[0])
            wait_for_port(pool_port, started[1])
            launcher = subprocess.Popen(
                [sys.executable, "-m", "pipeline", *cli_args, "--wait", "--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}",
                 "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool_port}"],
                env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            started.append(launcher)
            try:
                _, err = launcher.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the portable run did not finish within {timeout} s")
            assert launcher.returncode == 0, err[-3000:]
            return err
        finally:
            for process in reversed(started):
                stop_session(process)


def write_night_partition(root, date: str, scale: float) -> None:
    """One night's partition ROOT/data/dt=DATE/part-0.parquet for the scheduling tests: 300 rows of
    6 features (the same draw every night) with feature f0 multiplied by `scale` (4.0: drift)."""
    rng = np.random.default_rng(21)
    features = rng.normal(size=(300, 6)).astype(np.float32)
    features[:, 0] *= scale
    partition = Path(root) / "data" / f"dt={date}"
    partition.mkdir(parents=True)
    write_tabular_parquet(partition / "part-0.parquet", features, ids=np.arange(300))


PRISM_REQUIRED_ENV = "ATTRIBUTION_REQUIRE_PRISM"


def prism_or_skip() -> str:
    """The Prism binary (pipeline.prism.find_prism), or a skip saying how to build one; a failure
    instead under $ATTRIBUTION_REQUIRE_PRISM=1 (set by .ci/run on a machine with Go)."""
    import pytest

    from pipeline.prism import PRISM_BIN_ENV, find_prism, install_command

    try:
        found = find_prism()
        reason = f"no Prism binary: set ${PRISM_BIN_ENV} or build one with: {install_command()}"
    except ValueError as error:
        found, reason = None, str(error)
    if found:
        return found
    if os.environ.get(PRISM_REQUIRED_ENV) == "1":
        pytest.fail(f"${PRISM_REQUIRED_ENV}=1 (.ci/run on a machine with Go) but {reason}")
    pytest.skip(reason)
