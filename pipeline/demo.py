"""The demo: real models on real data, attributed by the real pipeline, offline, in about a minute.

1. scikit-learn's handwritten digits (1,797 8x8 images): a small Keras CNN is trained (fixed seed),
   the images are written as TFRecord (`pixels`: 64 floats, `label`, `id`), and integrated
   gradients explain the predicted class of every image.
2. scikit-learn's breast cancer data (569 patients x 30 measurements): a Keras MLP with a
   Normalization layer and a sigmoid output is trained, the table is written as Parquet (one
   column per measurement), and integrated gradients explain the logit against the mean patient
   (a baseline row from a file).
"""

from __future__ import annotations

import os
import re
import time
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["run_demo", "make_digits_assets", "make_breast_cancer_assets"]

SEED = 0


def _keras_seed():
    import keras

    keras.utils.set_random_seed(SEED)
    return keras


def digits_data() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8, 1) float32 images scaled to [0, 1], (1797,) int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[..., None], digits.target.astype(np.int64)


def write_digits_tfrecord(path: str, images: np.ndarray, labels: np.ndarray, first_id: int = 0) -> None:
    """One tf.train.Example per image: pixels (64 floats, row-major), label (int64), id (bytes)."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as writer:
        for i, (image, label) in enumerate(zip(images, labels)):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=image.reshape(-1))),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"digit-{first_id + i:05d}".encode()])),
                    }
                )
            )
            writer.write(example.SerializeToString())


def _train_and_save(model, loss: str, x: np.ndarray, y: np.ndarray, epochs: int, path: str) -> float:
    """Fits with a 20% validation split, saves to `path`; returns the final validation accuracy."""
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    history = model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, validation_split=0.2)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    model.save(path)
    return float(history.history["val_accuracy"][-1])


def make_digits_assets(directory: str, epochs: int = 8) -> dict:
    """Trains the CNN and writes model + TFRecord files (two shards). Returns their paths."""
    keras = _keras_seed()
    images, labels = digits_data()
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="pixels"),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model_path = os.path.join(directory, "digits_cnn.keras")
    accuracy = _train_and_save(model, "sparse_categorical_crossentropy", images, labels, epochs, model_path)
    half = len(images) // 2
    data = [os.path.join(directory, f"digits-{i}.tfrecord") for i in range(2)]
    write_digits_tfrecord(data[0], images[:half], labels[:half], 0)
    write_digits_tfrecord(data[1], images[half:], labels[half:], half)
    return {"model": model_path, "data": data, "val_accuracy": accuracy}


def breast_cancer_data() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(569, 30) float32 measurements, (569,) int64 labels (1 = benign), snake_case column names."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [re.sub(r"\W+", "_", n.strip()) for n in data.feature_names]
    return data.data.astype(np.float32), data.target.astype(np.int64), names


def make_breast_cancer_assets(directory: str, epochs: int = 30) -> dict:
    """Trains the MLP and writes model, Parquet data (two files) and a mean-patient baseline."""
    keras = _keras_seed()
    features, labels, names = breast_cancer_data()
    normalize = keras.layers.Normalization()
    normalize.adapt(features)
    model = keras.Sequential(
        [
            keras.Input((30,), name="measurements"),
            normalize,
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model_path = os.path.join(directory, "breast_cancer_mlp.keras")
    accuracy = _train_and_save(model, "binary_crossentropy", features, labels, epochs, model_path)

    def table(rows: slice) -> pa.Table:
        columns = {"patient_id": np.arange(len(features), dtype=np.int64)[rows], "diagnosis": labels[rows]}
        columns.update({name: features[rows, i] for i, name in enumerate(names)})
        return pa.table(columns)

    half = len(features) // 2
    data = [os.path.join(directory, f"patients-{i}.parquet") for i in range(2)]
    pq.write_table(table(slice(0, half)), data[0], row_group_size=128)
    pq.write_table(table(slice(half, None)), data[1], row_group_size=128)
    baseline = os.path.join(directory, "mean_patient.parquet")
    pq.write_table(pa.table({name: features[:, i].mean(keepdims=True) for i, name in enumerate(names)}), baseline)
    return {
        "model": model_path,
        "data": data,
        "baseline": baseline,
        "columns": names,
        "val_accuracy": accuracy,
    }


def _attributions(manifest: dict) -> pa.Table:
    """Every output row of a finished run (the files its manifest lists)."""
    return pa.concat_tables([pq.read_table(f["path"]) for f in manifest["output"]["attributions"]])


def _top_tabular(table: pa.Table, columns: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    scores = {c: float(np.abs(table.column(f"attr_{c}").to_numpy()).mean()) for c in columns}
    return sorted(scores.items(), key=lambda item: -item[1])[:k]


def _digit_map(table: pa.Table) -> np.ndarray:
    values = table.column("attr_pixels").combine_chunks().flatten().to_numpy().reshape(-1, 8, 8)
    return np.abs(values).mean(axis=0)  # (8, 8)


def _delta_summary(table: pa.Table) -> str:
    error = table.column("completeness_error").to_numpy()
    return f"completeness: median completeness_error {np.median(error):.2e}, {np.mean(error > 0.05):.1%} of rows over 5%"


def run_demo(output: str) -> None:
    """Builds the demo assets in `output` and runs both attribution jobs; prints what it found."""
    from audit.report import write_report
    from audit.runs import load_run
    from pipeline.config import RunConfig
    from pipeline.run import run_attribution

    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r} is a file; the demo needs a folder for its models, data and runs.")
    start = time.time()
    assets = os.path.join(output, "assets")
    print("training a CNN on scikit-learn digits and an MLP on breast cancer data (fixed seed) ...")
    digits = make_digits_assets(assets)
    cancer = make_breast_cancer_assets(assets)
    print(f"  digits CNN validation accuracy {digits['val_accuracy']:.3f}; "
          f"breast cancer MLP validation accuracy {cancer['val_accuracy']:.3f} ({time.time() - start:.1f} s)")

    digits_out = os.path.join(output, "digits_ig")
    digits_config = RunConfig.from_mapping({
        "model": digits["model"], "input": [os.path.join(assets, "digits-*.tfrecord")], "output": digits_out,
        "method": "integrated_gradients", "steps": 32, "key_column": "id", "passthrough_columns": ["label"],
        "slice_columns": ["label"], "overwrite": True,
    })
    print(f"\n[1/2] integrated gradients, digits CNN, TFRecord -> Parquet (DirectRunner)\n"
          f"  attribution-pipeline run --model {digits['model']} --input '{digits_config.input[0]}' "
          f"--output {digits_out} --method integrated_gradients --steps 32 --key-column id --passthrough-columns label --slice-columns label --overwrite")
    manifest = run_attribution(digits_config)
    table = _attributions(manifest)
    counts = manifest["counts"]
    print(f"  {counts['records_attributed']} images attributed, {counts['records_dead_lettered']} dead-lettered, "
          f"{manifest['timings']['pipeline_seconds']:.1f} s; {_delta_summary(table)}")
    heat = _digit_map(table)
    print("  mean |attribution| per pixel (8x8; denser characters = more important):")
    shades = " .:-=+*#%@"
    for row in heat / heat.max():
        print("    " + "".join(shades[min(int(v * len(shades)), len(shades) - 1)] * 2 for v in row))

    cancer_out = os.path.join(output, "breast_cancer_ig")
    cancer_config = RunConfig.from_mapping({
        "model": cancer["model"], "input": cancer["data"], "output": cancer_out,
        "method": "integrated_gradients", "steps": 64, "baseline": f"file:{cancer['baseline']}",
        "explain_logits": True, "inputs": {"measurements": cancer["columns"]},
        "key_column": "patient_id", "passthrough_columns": ["diagnosis"], "slice_columns": ["diagnosis"], "overwrite": True,
    })
    print("\n[2/2] integrated gradients of the logit vs the mean patient, breast cancer MLP, Parquet -> Parquet")
    manifest = run_attribution(cancer_config)
    table = _attributions(manifest)
    counts = manifest["counts"]
    print(f"  {counts['records_attributed']} patients attributed, {counts['records_dead_lettered']} dead-lettered, "
          f"{manifest['timings']['pipeline_seconds']:.1f} s; {_delta_summary(table)}")
    print("  top features by mean |attribution|:")
    for name, score in _top_tabular(table, cancer["columns"]):
        print(f"    {name:<28} {score:.4f}")
    for run_dir in (digits_out, cancer_out):
        write_report(load_run(run_dir), os.path.join(run_dir, "report.html"))
    print(f"\nresults: {digits_out}/ and {cancer_out}/ (attributions-*.parquet, dead_letter-*.parquet, "
          f"summary.json, summary_*.parquet, manifest.json)")
    print(f"reports: {digits_out}/report.html and {cancer_out}/report.html "
          f"(attribution-pipeline report RUN --out FILE.html [--baseline OTHER_RUN])")
    print(f"demo finished in {time.time() - start:.1f} s")
