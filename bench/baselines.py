#!/usr/bin/env python
"""Does the feature ranking follow the model or the baseline? (issue 25)

    python bench/baselines.py            # 2 trained seeds

scikit-learn's wine data (178 rows, 13 features far from zero: proline ~750, magnesium ~100), a
small MLP with the normalisation inside the model (as a user would ship it), trained per seed.
The same CLI run twice per seed, `--baseline zeros` and the default (`auto`: the median of the
sampled rows). For each, the ranking of features by mean |attribution| is compared (Spearman) with

* the features' distance from zero, |median| / robust std: what a zeros baseline leaks into IG;
* the model's permutation importance: the mean drop of the predicted class's probability when one
  feature's column is shuffled (20 shuffles), a ranking of what the model relies on that uses no
  baseline.

Writes bench/results/baselines.md.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ranks = lambda v: np.argsort(np.argsort(v)).astype(np.float64)  # noqa: E731  (no ties in these values)
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def train(x: np.ndarray, y: np.ndarray, seed: int, path: str):
    import keras

    keras.utils.set_random_seed(seed)
    normalise = keras.layers.Normalization()
    normalise.adapt(x)
    model = keras.Sequential([keras.Input((x.shape[1],), name="features"), normalise, keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=150, batch_size=32, verbose=0)
    model.save(path)
    return model


def permutation_importance(model, x: np.ndarray, repeats: int = 20) -> np.ndarray:
    rng = np.random.default_rng(0)
    probabilities = model.predict(x, verbose=0)
    predicted = probabilities.argmax(axis=1)
    base = probabilities[np.arange(len(x)), predicted]
    drops = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        for _ in range(repeats):
            shuffled = x.copy()
            shuffled[:, j] = rng.permutation(shuffled[:, j])
            drops[j] += np.mean(base - model.predict(shuffled, verbose=0)[np.arange(len(x)), predicted]) / repeats
    return drops


def mean_abs_attributions(output: str, columns: list[str]) -> np.ndarray:
    table = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(os.path.join(output, "attributions-*.parquet")))])
    return np.array([np.mean(np.abs(table.column(f"attr_{c}").to_numpy())) for c in columns])


def main() -> int:
    from sklearn.datasets import load_wine

    wine = load_wine()
    x, y = wine.data.astype(np.float32), wine.target
    columns = [name.replace("/", "_") for name in wine.feature_names]
    median = np.median(x, axis=0)
    robust_std = 1.4826 * np.median(np.abs(x - median), axis=0)
    offset = np.abs(median) / robust_std
    lines = ["# Feature rankings with the zeros and the median baseline (wine, 13 features, MLP with normalisation inside)", "",
             "Spearman of the ranking by mean |attribution| with (a) distance from zero, |median| / robust std, and (b) the "
             "model's permutation importance.", "",
             "| seed | train accuracy | baseline | vs distance from zero | vs permutation importance | top 4 by mean abs attribution |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="bench-baselines-") as work:
        data = os.path.join(work, "wine.parquet")
        pq.write_table(pa.table({"id": np.arange(len(x)), **{c: x[:, j] for j, c in enumerate(columns)}}), data)
        for seed in (1, 2):
            model_path = os.path.join(work, f"wine-{seed}.keras")
            model = train(x, y, seed, model_path)
            accuracy = float(np.mean(model.predict(x, verbose=0).argmax(axis=1) == y))
            importance = permutation_importance(model, x)
            for baseline in ("zeros", "auto"):
                output = os.path.join(work, f"out-{seed}-{baseline}")
                subprocess.run([sys.executable, "-m", "pipeline", "run", "--model", model_path, "--input", data, "--output", output,
                                "--key-column", "id", "--baseline", baseline, "--quiet"], cwd=REPO, check=True,
                               env={**os.environ, "PYTHONPATH": REPO}, stdout=subprocess.DEVNULL)
                attributions = mean_abs_attributions(output, columns)
                top = ", ".join(columns[j] for j in np.argsort(-attributions)[:4])
                lines.append(f"| {seed} | {accuracy:.3f} | {baseline} | {spearman(attributions, offset):.2f} | "
                             f"{spearman(attributions, importance):.2f} | {top} |")
                print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "results", "baselines.md"), "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
