#!/usr/bin/env python
"""Integrated gradients at an embedding layer against integrated gradients at the input of the
same computation (issue 10: target <= 1.2x).

    python bench/layers.py                 # 2,048 records, 64 points, best of 3 (~1 min on 2 cores)
    python bench/layers.py --records 512   # quicker

Two models with the same weights, built here (seeded, untrained: speed does not depend on
training):
  * tokens: ids (T,) int32 -> Embedding(V, D) -> Dense(H, relu) at each position -> mean over
    positions -> Dense(C, softmax); attributed at the Embedding (the default for an id input):
    the lower part (the lookup) runs once per batch, IG on the rest, summed over D per position;
  * embedded: the same model from the Embedding's output on, whose float input (T, D) is the
    embedding of the same ids; attributed at its input.
Both go through the pipeline's own launcher checks and worker engine (`pipeline.plan.resolve_plan`,
`transforms.attribute.AttributionEngine.attribute`) on one decoded batch of all records, timed
interleaved, best of --repeats. The two must agree: the embedded model's attributions summed over
D equal the token model's (checked, max abs difference printed).
Results: bench/results/layers.json and layers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

LENGTH, VOCAB, DIM, HIDDEN, CLASSES = 32, 2000, 16, 32, 4


def build_models(folder: str) -> tuple[str, str, np.ndarray]:
    """(token model path, embedded model path, embedding matrix (V, D))."""
    import keras

    keras.utils.set_random_seed(0)
    dense, head = keras.layers.Dense(HIDDEN, activation="relu"), keras.layers.Dense(CLASSES, activation="softmax")
    embedded = keras.Input((LENGTH, DIM), name="embedded")
    float_model = keras.Model(embedded, head(keras.layers.GlobalAveragePooling1D()(dense(embedded))))
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    embedding = keras.layers.Embedding(VOCAB, DIM, name="embedding")
    # the same layer objects, so the same weights; built flat (a nested model would be one layer)
    token_model = keras.Model(tokens, head(keras.layers.GlobalAveragePooling1D()(dense(embedding(tokens)))))
    paths = os.path.join(folder, "tokens.keras"), os.path.join(folder, "embedded.keras")
    token_model.save(paths[0])
    float_model.save(paths[1])
    return paths[0], paths[1], embedding.get_weights()[0]


def engine_and_batch(model: str, data: str, folder: str, steps: int):
    from pipeline.config import RunConfig
    from pipeline.plan import resolve_plan
    from transforms.attribute import AttributionEngine
    from transforms.records import RawBatch, decode_batch

    config = RunConfig.from_mapping({"model": model, "input": data, "output": os.path.join(folder, "unused"),
                                     "key_column": "id", "steps": steps, "summaries": False})
    plan = resolve_plan(config)
    engine = AttributionEngine(plan.settings)
    batch, dead = decode_batch(RawBatch(data, "data", 0, table=pq.read_table(data)), plan.schema)
    if dead:
        raise RuntimeError(f"unexpected dead letters: {dead[:1]}")
    return engine, batch


def measure(records: int, steps: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-layers-") as folder:
        token_path, float_path, table = build_models(folder)
        ids = np.random.default_rng(1).integers(0, VOCAB, size=(records, LENGTH))
        pq.write_table(pa.table({"id": np.arange(records), "tokens": pa.array(ids.tolist(), pa.list_(pa.int64()))}),
                       os.path.join(folder, "tokens.parquet"))
        flat = table[ids].reshape(records, -1)
        pq.write_table(pa.table({"id": np.arange(records), "embedded": pa.array(flat.tolist(), pa.list_(pa.float32()))}),
                       os.path.join(folder, "embedded.parquet"))
        at_layer = engine_and_batch(token_path, os.path.join(folder, "tokens.parquet"), folder, steps)
        at_input = engine_and_batch(float_path, os.path.join(folder, "embedded.parquet"), folder, steps)
        tables = {}
        for name, (engine, batch) in (("layer", at_layer), ("input", at_input)):
            tables[name] = engine.attribute(batch)  # warm-up: traces and compiles
        times = {"layer": [], "input": []}
        for _ in range(repeats):
            for name, (engine, batch) in (("layer", at_layer), ("input", at_input)):
                start = time.perf_counter()
                engine.attribute(batch)
                times[name].append(time.perf_counter() - start)
        layer_attr = np.array(tables["layer"].column("attr_tokens").to_pylist())  # (N, T)
        input_attr = np.array(tables["input"].column("attr_embedded").to_pylist()).reshape(records, LENGTH, DIM).sum(axis=2)
        best = {name: min(values) for name, values in times.items()}
        return {
            "records": records, "steps": steps, "repeats": repeats,
            "model": f"ids ({LENGTH},) -> Embedding({VOCAB}, {DIM}) -> Dense({HIDDEN}, relu) per position -> mean -> Dense({CLASSES}, softmax)",
            "seconds_at_layer": round(best["layer"], 4), "seconds_at_input": round(best["input"], 4),
            "ratio_layer_to_input": round(best["layer"] / best["input"], 3),
            "chunk_rows": {"layer": at_layer[0].chunk_size, "input": at_input[0].chunk_size},
            "max_abs_difference": float(np.abs(layer_attr - input_attr).max()),
            "all_seconds": {k: [round(v, 4) for v in vs] for k, vs in times.items()},
        }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-save", action="store_true", help="print only; do not write bench/results/layers.*")
    args = parser.parse_args(argv)
    result = measure(args.records, args.steps, args.repeats)
    print(json.dumps(result, indent=2))
    print(f"IG at the embedding / IG at the input: {result['ratio_layer_to_input']:.3f} "
          f"({result['seconds_at_layer']:.3f} s vs {result['seconds_at_input']:.3f} s, {args.records} records x {args.steps} points)")
    if not args.no_save:
        folder = os.path.join(REPO, "bench", "results")
        with open(os.path.join(folder, "layers.json"), "w") as handle:
            json.dump(result, handle, indent=2)
        with open(os.path.join(folder, "layers.md"), "w") as handle:
            handle.write(
                f"# IG at an embedding layer vs at the input (bench/layers.py)\n\n{result['model']}; "
                f"{result['records']} records x {result['steps']} Gauss-Legendre points, best of {result['repeats']}.\n\n"
                f"| attributed at | seconds | rows per gradient call |\n|---|---|---|\n"
                f"| the Embedding's output (ids model) | {result['seconds_at_layer']} | {result['chunk_rows']['layer']} |\n"
                f"| the input (the same model from the embedding on) | {result['seconds_at_input']} | {result['chunk_rows']['input']} |\n\n"
                f"Ratio: **{result['ratio_layer_to_input']}** (target <= 1.2). Attributions agree to "
                f"{result['max_abs_difference']:.2e} (max abs difference, summed over the embedding dimension).\n"
            )


if __name__ == "__main__":
    main()
