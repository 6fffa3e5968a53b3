"""The demo: real models on real data, attributed by the real pipeline, offline, in about a minute and a half.

1. scikit-learn's handwritten digits (1,797 8x8 images): a small Keras CNN is trained (fixed seed),
   the images are written as TFRecord (`pixels`: 64 floats, `label`, `id`), and integrated
   gradients explain the predicted class of every image (`digits_ig/`).
2. scikit-learn's breast cancer data (569 patients x 30 measurements): a Keras MLP with a
   Normalization layer and a sigmoid output is trained, the table is written as Parquet (one
   column per measurement), and integrated gradients explain the logit against the mean patient
   (a baseline row from a file; `breast_cancer_ig/`).
3. The Palmer penguins (344 rows; the CSV the `palmerpenguins` package ships, in the `demo` extra):
   species from island (int64 ids -> Embedding), sex (int64 ids -> one-hot CategoryEncoding) and
   four measurements, trained on the 333 complete rows and written as Parquet with all 344 rows: the
   11 with a missing sex (two of them without measurements too) are kept and dead-lettered with
   their reason (`column 'sex' is null`), as a real table would be. Integrated gradients of the
   logits, island and sex attributed at the layers found from the graph (the manifest's
   `model.layers` names them and why) against `layer_baseline id:0` (`penguins_ig/`; its report
   and summary.json show the token/category table).
4. The same digits upscaled to 16x16 and PNG-encoded in a TFRecord (`image/encoded`, decoded in the
   pipeline by the `images:` setting): a small CNN ending in global average pooling is trained on
   them and Grad-CAM explains its predicted class at its last conv layer, the default
   (`digits_grad_cam/`: `gradcam_image/encoded` 8x8 and `attr_image/encoded` upsampled to 16x16).

Every job writes `report.html` in its folder. The builders here (`penguins_table`,
`train_penguins_model`, `digits_uint8`, `encode_png`, `write_image_tfrecord`, `train_digits_cnn`)
are also the tests' real-data fixtures.
"""

from __future__ import annotations

import os
import re
import time
from typing import Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "run_demo", "make_digits_assets", "make_breast_cancer_assets", "make_penguins_assets", "make_digits_png_assets",
    "digits_uint8", "encode_png", "write_image_tfrecord", "train_digits_cnn", "penguins_table", "train_penguins_model",
    "PENGUIN_ISLANDS", "PENGUIN_SEXES", "PENGUIN_SPECIES", "PENGUIN_MEASUREMENTS",
]

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


def encode_png(pixels: np.ndarray) -> bytes:
    """uint8 (h, w, c) -> PNG bytes."""
    import tensorflow as tf

    return tf.io.encode_png(np.asarray(pixels, dtype=np.uint8)).numpy()


def digits_uint8(count: Optional[int] = None, upscale: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits (the first `count`; all 1,797 by default) as uint8 (count, 8*upscale, 8*upscale, 1) images (0..16 scaled to
    0..255, each pixel repeated upscale x upscale times) and int64 labels (count,)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images[:count] * 255 / 16).astype(np.uint8)
    images = np.kron(images, np.ones((1, upscale, upscale), dtype=np.uint8))[..., None]
    return images, digits.target[:count].astype(np.int64)


def write_image_tfrecord(path, encoded: list, ids=None, labels=None, feature_name: str = "image/encoded"):
    """One tf.train.Example per encoded image: a bytes feature, optional bytes id and int64 label."""
    import tensorflow as tf

    values = [tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])) for data in encoded]
    return write_examples(path, values, feature_name, ids, labels)


def write_examples(path, values: list, feature_name: str, ids=None, labels=None) -> str:
    """One tf.train.Example per entry of `values` (a tf.train.Feature each, stored as `feature_name`),
    with an optional bytes id and int64 label; returns the path."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path)) as writer:
        for i, value in enumerate(values):
            feature = {feature_name: value}
            if ids is not None:
                feature["id"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(ids[i]).encode()]))
            if labels is not None:
                feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(labels[i])]))
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return str(path)


def train_digits_cnn(path, images: np.ndarray, labels: np.ndarray, epochs: int = 3, seed: int = 0,
                     learning_rate: float = 0.001):
    """A small CNN (conv, pool, conv 'last_conv', global average pooling, dense softmax 'scores'; named
    layers, so names do not depend on what else the process built) trained on
    uint8 images scaled to [0, 1] with Adam (seeded, a few seconds); saved to `path`."""
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
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy")
    model.fit(images.astype(np.float32) / 255.0, labels, epochs=epochs, batch_size=32, verbose=0)
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
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
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    model.save(str(path))
    return str(path)

def make_penguins_assets(directory: str) -> dict:
    """Trains the penguins model on the complete rows and writes all 344 rows as one Parquet file
    (`penguins.parquet`; the 11 rows with a missing sex, two of them without measurements, stay in:
    the run dead-letters them with their reason). Returns their paths."""
    table = penguins_table()
    model_path = train_penguins_model(os.path.join(directory, "penguins.keras"), table)
    data = os.path.join(directory, "penguins.parquet")
    pq.write_table(table, data)
    return {"model": model_path, "data": data}


def make_digits_png_assets(directory: str, epochs: int = 12) -> dict:
    """The 1,797 digits upscaled to 16 x 16 uint8, PNG-encoded into one TFRecord file
    (`digits_png.tfrecord`: not digits-*, which the float digits job and configs/ glob;
    `image/encoded`, `label`, `id` digit-NNNNN as in the float digits), and the Grad-CAM CNN
    (`train_digits_cnn`) trained on them. Returns their paths."""
    images, labels = digits_uint8()
    # 10x Adam's default rate: the global-average-pooling CNN learns slowly (about 85% of the
    # training images right after 12 epochs, ~7 s on 2 cores; 24% at the default rate)
    model_path = train_digits_cnn(os.path.join(directory, "digits_png_cnn.keras"), images, labels, epochs=epochs,
                                  learning_rate=0.01)
    data = os.path.join(directory, "digits_png.tfrecord")
    write_image_tfrecord(data, [encode_png(image) for image in images], ids=[f"digit-{i:05d}" for i in range(len(images))],
                         labels=labels)
    return {"model": model_path, "data": data}



def _attributions(manifest: dict) -> pa.Table:
    """Every output row of a finished run (the files its manifest lists)."""
    return pa.concat_tables([pq.read_table(f["path"]) for f in manifest["output"]["attributions"]])


def _top_tabular(table: pa.Table, columns: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    scores = {c: float(np.abs(table.column(f"attr_{c}").to_numpy()).mean()) for c in columns}
    return sorted(scores.items(), key=lambda item: -item[1])[:k]


def _digit_map(table: pa.Table, column: str = "attr_pixels", side: int = 8) -> np.ndarray:
    values = table.column(column).combine_chunks().flatten().to_numpy().reshape(-1, side, side)
    return np.abs(values).mean(axis=0)  # (side, side)


def _print_heat(heat: np.ndarray) -> None:
    shades = " .:-=+*#%@"
    for row in heat / max(float(heat.max()), 1e-12):
        print("    " + "".join(shades[min(int(v * len(shades)), len(shades) - 1)] * 2 for v in row))


def _delta_summary(table: pa.Table) -> str:
    error = table.column("completeness_error").to_numpy()
    return f"completeness: median completeness_error {np.median(error):.2e}, {np.mean(error > 0.05):.1%} of rows over 5%"


def _counts_line(manifest: dict, what: str) -> str:
    counts = manifest["counts"]
    return (f"  {counts['records_attributed']} {what} attributed, {counts['records_dead_lettered']} dead-lettered, "
            f"{manifest['timings']['pipeline_seconds']:.1f} s")


def _run_penguins(penguins: dict, out: str) -> None:
    """Job 3: IG of the logits at the island embedding and the sex one-hot (found from the graph)."""
    import json

    from pipeline.config import RunConfig
    from pipeline.run import run_attribution

    islands = os.path.join(os.path.dirname(penguins["data"]), "islands.txt")  # id -> name, one per line
    with open(islands, "w") as handle:
        handle.write("\n".join(PENGUIN_ISLANDS) + "\n")
    config = RunConfig.from_mapping({
        "model": penguins["model"], "input": [penguins["data"]], "output": out, "method": "integrated_gradients",
        "steps": 32, "explain_logits": True, "layer_baseline": "id:0", "inputs": {"measurements": list(PENGUIN_MEASUREMENTS)},
        "key_column": "id", "passthrough_columns": ["species"], "slice_columns": ["species"], "overwrite": True,
        "class_names": list(PENGUIN_SPECIES), "vocabularies": {"island": islands},
    })
    print(f"\n[3/4] integrated gradients of the logits at the island embedding and sex one-hot, penguins model, Parquet -> Parquet\n"
          f"  attribution-pipeline run --model {penguins['model']} --input {penguins['data']} --output {out} --key-column id "
          f"--inputs measurements={','.join(PENGUIN_MEASUREMENTS)} --explain-logits --layer-baseline id:0 --steps 32 "
          f"--passthrough-columns species --slice-columns species --class-names {','.join(PENGUIN_SPECIES)} "
          f"--vocabulary island={islands} --overwrite")
    manifest = run_attribution(config)
    print(f"{_counts_line(manifest, 'penguins')}; {_delta_summary(_attributions(manifest))}")
    dead = pa.concat_tables([pq.read_table(f["path"]) for f in manifest["output"]["dead_letters"]])
    reasons = sorted(set(dead.column("error").to_pylist())) if dead.num_rows else []
    if reasons:
        print(f"  dead letters (rows with a missing value in the CSV): {', '.join(reasons)}")
    for layer in manifest["model"]["layers"]:
        print(f"  input {layer['input']!r} attributed at layer {layer['layer']!r}")
    with open(os.path.join(out, "summary.json")) as f:
        island = json.load(f)["token_importance"]["island"]
    print("  the island that argues most for each predicted species (vs the baseline record: Biscoe, female, measurements at their medians):")
    for cls, ranking in sorted(island["classes"].items()):
        if ranking["for"]:
            top = ranking["for"][0]
            note = " (the baseline's island: 0 by construction)" if top["token"] == PENGUIN_ISLANDS[0] else ""
            print(f"    {PENGUIN_SPECIES[int(cls)]:<10} {top['token']:<10} "
                  f"mean attribution {top['mean']:+.3f} over {top['count']} penguins{note}")


def _run_digits_grad_cam(digits_png: dict, out: str) -> None:
    """Job 4: Grad-CAM at the last conv layer (the default) of the CNN trained on PNG digits."""
    from pipeline.config import RunConfig
    from pipeline.run import run_attribution

    config = RunConfig.from_mapping({
        "model": digits_png["model"], "input": [digits_png["data"]], "output": out, "method": "grad_cam",
        "images": {"image/encoded": {"size": [16, 16], "channels": 1}}, "key_column": "id",
        "passthrough_columns": ["label"], "slice_columns": ["label"], "overwrite": True,
    })
    print(f"\n[4/4] Grad-CAM, CNN on PNG digits decoded in the pipeline, TFRecord -> Parquet\n"
          f"  attribution-pipeline run --model {digits_png['model']} --input {digits_png['data']} --output {out} "
          f"--method grad_cam --image image/encoded:16x16x1 --key-column id --passthrough-columns label --slice-columns label --overwrite")
    manifest = run_attribution(config)
    table = _attributions(manifest)
    accuracy = np.mean(table.column("target").to_numpy() == table.column("label").to_numpy())
    cam = manifest["model"]["grad_cam"]
    print(f"{_counts_line(manifest, 'images')}; the CNN predicts the label of {accuracy:.1%} (images it was trained on)")
    print(f"  mean Grad-CAM map at layer {cam['layer']!r} ({cam['layer_shape'][0]}x{cam['layer_shape'][1]}; "
          f"upsampled to 16x16 in attr_image/encoded):")
    _print_heat(_digit_map(table, "gradcam_image/encoded", cam["layer_shape"][0]))


def run_demo(output: str) -> None:
    """Builds the demo assets in `output` and runs the four attribution jobs; prints what it found."""
    from audit.report import write_report
    from audit.runs import load_run
    from pipeline.config import RunConfig
    from pipeline.run import run_attribution

    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r} is a file; the demo needs a folder for its models, data and runs.")
    start = time.time()
    assets = os.path.join(output, "assets")
    print("training a CNN on scikit-learn digits, an MLP on breast cancer data, a model on the Palmer penguins and a "
          "CNN on the digits as PNG (fixed seed) ...")
    digits = make_digits_assets(assets)
    cancer = make_breast_cancer_assets(assets)
    penguins = make_penguins_assets(assets)
    digits_png = make_digits_png_assets(assets)
    print(f"  digits CNN validation accuracy {digits['val_accuracy']:.3f}; "
          f"breast cancer MLP validation accuracy {cancer['val_accuracy']:.3f} ({time.time() - start:.1f} s)")

    digits_out = os.path.join(output, "digits_ig")
    digits_config = RunConfig.from_mapping({
        "model": digits["model"], "input": [os.path.join(assets, "digits-*.tfrecord")], "output": digits_out,
        "method": "integrated_gradients", "steps": 32, "key_column": "id", "passthrough_columns": ["label"],
        "slice_columns": ["label"], "overwrite": True,
    })
    print(f"\n[1/4] integrated gradients, digits CNN, TFRecord -> Parquet (DirectRunner)\n"
          f"  attribution-pipeline run --model {digits['model']} --input '{digits_config.input[0]}' "
          f"--output {digits_out} --method integrated_gradients --steps 32 --key-column id --passthrough-columns label --slice-columns label --overwrite")
    manifest = run_attribution(digits_config)
    table = _attributions(manifest)
    print(f"{_counts_line(manifest, 'images')}; {_delta_summary(table)}")
    print("  mean |attribution| per pixel (8x8; denser characters = more important):")
    _print_heat(_digit_map(table))

    cancer_out = os.path.join(output, "breast_cancer_ig")
    cancer_config = RunConfig.from_mapping({
        "model": cancer["model"], "input": cancer["data"], "output": cancer_out,
        "method": "integrated_gradients", "steps": 64, "baseline": f"file:{cancer['baseline']}",
        "explain_logits": True, "inputs": {"measurements": cancer["columns"]},
        "key_column": "patient_id", "passthrough_columns": ["diagnosis"], "slice_columns": ["diagnosis"], "overwrite": True,
    })
    import shlex

    print("\n[2/4] integrated gradients of the logit vs the mean patient, breast cancer MLP, Parquet -> Parquet\n"
          f"  attribution-pipeline run --model {cancer['model']} {' '.join('--input ' + shlex.quote(p) for p in cancer['data'])} "
          f"--output {cancer_out} "
          f"--method integrated_gradients --steps 64 --baseline file:{cancer['baseline']} --explain-logits "
          f"--inputs {shlex.quote('measurements=' + ','.join(cancer['columns']))} --key-column patient_id "
          f"--passthrough-columns diagnosis --slice-columns diagnosis --overwrite")
    manifest = run_attribution(cancer_config)
    table = _attributions(manifest)
    print(f"{_counts_line(manifest, 'patients')}; {_delta_summary(table)}")
    print("  top features by mean |attribution|:")
    for name, score in _top_tabular(table, cancer["columns"]):
        print(f"    {name:<28} {score:.4f}")

    penguins_out = os.path.join(output, "penguins_ig")
    _run_penguins(penguins, penguins_out)
    grad_cam_out = os.path.join(output, "digits_grad_cam")
    _run_digits_grad_cam(digits_png, grad_cam_out)

    run_dirs = (digits_out, cancer_out, penguins_out, grad_cam_out)
    for run_dir in run_dirs:
        write_report(load_run(run_dir), os.path.join(run_dir, "report.html"))
    print(f"\nresults: {', '.join(d + '/' for d in run_dirs)} (attributions-*.parquet, dead_letter-*.parquet, "
          f"summary.json, summary_*.parquet, manifest.json)")
    print(f"reports: {', '.join(os.path.join(d, 'report.html') for d in run_dirs)} "
          f"(attribution-pipeline report RUN --out FILE.html [--baseline OTHER_RUN])")
    print("quality: lines above are the runs' own quality audit (randomisation, input dominance, faithfulness) warning "
          "where these small demo models' explanations are weak; each report opens with what they mean (docs/quality.md).")
    print(f"demo finished in {time.time() - start:.1f} s")
