#!/usr/bin/env python
"""Cost per row of every method, and sampled Shapley against a plain Python permutation loop (issue 28).

    python bench/model_agnostic.py                 # ~3 min on 2 cores
    python bench/model_agnostic.py --rows 100

Model: a Keras MLP (30 -> Dense(64, relu) -> Dense(32, relu) -> Dense(2, softmax)) trained here on
scikit-learn's breast cancer data (standardized, offline), saved and loaded the way the pipeline
loads it (attributions.loading), with the chunk size the pipeline picks for it
(attributions.chunking.automatic_chunk_size, 512 MiB). Every method runs on the same --rows rows
(after a warm-up on the same rows; the better of two passes) with its defaults: integrated gradients 64 steps from the median row,
SmoothGrad 50 samples, expected gradients 200 samples and sampled Shapley 24 permutations
against 100 background/baseline rows, KernelSHAP 2 P + 2,048 coalitions against a 50-row k-means
summary, occlusion one feature at a time. Reported: rows/s, milliseconds per row, model
evaluations per row (forward passes; a gradient counts as one) and per second.

Sampled Shapley against a plain loop: the same permutations' values computed the way a short
script does it, one model call per (row, permutation) holding that permutation's P + 1 prefix
points (the model as the same compiled function); the ratio is measured in this run.

On paper, per n1-standard-4 worker (pipeline.estimate's prices and assumption: throughput
proportional to vCPUs, rows/s here / cores x 4) and in dollars per million rows.

Results: bench/results/model_agnostic.json and .md. TensorFlow's own threading (one call at a
time); the pipeline on local runners runs a call per core side by side (docs/performance.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCH)

import numpy as np  # noqa: E402

from throughput import save_results  # noqa: E402


def trained_model(directory: str):
    """(LoadedModel, standardized rows (569, 30) float32) of an MLP trained on breast cancer."""
    import keras
    from sklearn.datasets import load_breast_cancer

    from attributions.loading import load_model

    data = load_breast_cancer()
    x = ((data.data - data.data.mean(axis=0)) / data.data.std(axis=0)).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((30,), name="features"), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, data.target, epochs=30, batch_size=32, verbose=0)
    path = os.path.join(directory, "mlp.keras")
    model.save(path)
    return load_model(path), x


def plain_permutation_loop(fns, rows: np.ndarray, baseline: np.ndarray, targets: np.ndarray, permutations: int, seed: int = 0) -> np.ndarray:
    """(B, P) sampled Shapley values, one model call per (row, permutation) of P + 1 prefix points."""
    rng = np.random.default_rng(seed)
    count = rows.shape[1]
    values = np.zeros(rows.shape)
    for b, x in enumerate(rows):
        for _ in range(permutations):
            order = rng.permutation(count)
            points = np.repeat(baseline[None], count + 1, axis=0)  # (P + 1, P): prefixes of the permutation
            for k, j in enumerate(order):
                points[k + 1 :, j] = x[j]
            scores = fns.predict_fn((points,)).numpy()[:, targets[b]]  # (P + 1,)
            values[b, order] += np.diff(scores)
    return values / permutations


def timed(function, rows: int) -> float:
    started = time.perf_counter()
    function()
    return rows / (time.perf_counter() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--plain-rows", type=int, default=20, help="rows for the plain permutation loop (slow)")
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)

    from attributions.chunking import automatic_chunk_size
    from attributions.concurrency import available_cores
    from attributions.expected_gradients import expected_gradients
    from attributions.gradient import gradient
    from attributions.gradient_x_input import gradient_x_input
    from attributions.integrated_gradients import integrated_gradients
    from attributions.kernel_shap import background_summary, default_samples, kernel_shap
    from attributions.occlusion import occlusion
    from attributions.players import element_players
    from attributions.sampled_shapley import permutation_count, sampled_shapley
    from attributions.smoothgrad import smoothgrad

    load_before = open("/proc/loadavg").read().split()[:3]
    with tempfile.TemporaryDirectory() as work:
        model, x = trained_model(work)
        fns = model.model_functions()
        chunk = automatic_chunk_size(fns)
        rows = x[100:100 + args.rows]
        count = rows.shape[1]
        background = x[:100]
        baseline = np.median(background, axis=0)[None]  # (1, P)
        targets = fns.predict((rows,), chunk).argmax(axis=1).astype(np.int32)
        seeds = np.arange(len(rows), dtype=np.uint64)
        players = element_players([(count,)])
        (centers,), weights = background_summary((background,), 50, seed=0)
        permutations = permutation_count(24)
        methods = {
            "gradient": (lambda r, t, s: gradient(fns, (r,), t, chunk), 1),
            "gradient_x_input": (lambda r, t, s: gradient_x_input(fns, (r,), t, chunk), 1),
            "integrated_gradients (64 steps)": (lambda r, t, s: integrated_gradients(fns, (r,), (baseline,), t, 64, chunk_size=chunk), 64),
            "smoothgrad (50 samples)": (lambda r, t, s: smoothgrad(fns, (r,), t, s, samples=50, chunk_size=chunk), 50),
            "expected_gradients (200 samples)": (lambda r, t, s: expected_gradients(fns, (r,), (background,), t, s, samples=200,
                                                                                    chunk_size=chunk), 200),
            "sampled_shapley (24 permutations)": (lambda r, t, s: sampled_shapley(fns, (r,), (baseline,), t, players, s, 24,
                                                                                  chunk_size=chunk), permutations * (count - 1) + 2),
            "kernel_shap (2P + 2048 coalitions, 50 background rows)": (
                lambda r, t, s: kernel_shap(fns, (r,), (centers,), t, players, s, chunk_size=chunk, background_weights=weights),
                min(default_samples(count), 2**count - 2) * 50 + 1),
            "occlusion (one feature at a time)": (lambda r, t, s: occlusion(fns, (r,), (baseline,), t, players, chunk), count + 1),
        }
        results = {}
        for name, (run, evaluations) in methods.items():
            run(rows, targets, seeds)  # traces (and XLA-compiles the path arithmetic) for these call sizes
            rate = max(timed(lambda: run(rows, targets, seeds), len(rows)) for _ in range(2))
            results[name] = {"rows_per_second": rate, "ms_per_row": 1000.0 / rate, "evaluations_per_row": evaluations,
                             "evaluations_per_second": rate * evaluations}
            print(f"{name}: {rate:,.1f} rows/s", flush=True)

        plain_rows = rows[:args.plain_rows]
        plain_permutation_loop(fns, plain_rows[:1], baseline[0], targets[:1], 2)  # traces the call size
        plain_rate = timed(lambda: plain_permutation_loop(fns, plain_rows, baseline[0], targets, permutations), len(plain_rows))
        ours = sampled_shapley(fns, (plain_rows,), (baseline,), targets[:len(plain_rows)], players, seeds[:len(plain_rows)], 24,
                               chunk_size=chunk)
        reference = plain_permutation_loop(fns, plain_rows, baseline[0], targets, 400, seed=1)
        ours_rate = results["sampled_shapley (24 permutations)"]["rows_per_second"]
    load_after = open("/proc/loadavg").read().split()[:3]

    from pipeline.estimate import Prices, WORKER_VCPUS

    worker_hour = Prices().worker_hour()
    for r in results.values():  # on paper: throughput proportional to vCPUs (this run used every core, TF's own threading)
        r["worker_rows_per_second"] = r["rows_per_second"] / available_cores() * WORKER_VCPUS
        r["usd_per_million_rows"] = 1e6 / r["worker_rows_per_second"] / 3600.0 * worker_hour
    lines = [
        f"cores: {available_cores()}; load average before {' '.join(load_before)}, after {' '.join(load_after)}; "
        f"chunk {chunk:,} points (the pipeline's automatic size); {len(rows)} rows of breast cancer, MLP 30-64-32-2",
        "",
        f"| method | rows/s | ms per row | model evaluations per row | evaluations/s | n1-standard-{WORKER_VCPUS} rows/s "
        f"(on paper) | USD per million rows (${worker_hour:.3f}/h) |",
        "|---|---|---|---|---|---|---|",
    ] + [f"| {name} | {r['rows_per_second']:,.1f} | {r['ms_per_row']:.2f} | {r['evaluations_per_row']:,} | {r['evaluations_per_second']:,.0f} "
         f"| {r['worker_rows_per_second']:,.0f} | {r['usd_per_million_rows']:.4g} |" for name, r in results.items()] + [
        "",
        f"sampled Shapley, {permutations} permutations: ours {ours_rate:,.1f} rows/s, a plain Python loop (one model call per row "
        f"and permutation) {plain_rate:,.2f} rows/s over {len(plain_rows)} rows: **{ours_rate / plain_rate:,.0f}x**. Largest "
        f"|ours - 400-permutation reference| = {np.abs(ours.attributions[0] - reference).max():.4f} "
        f"(ours' largest reported standard error {ours.stderr.max():.4f}).",
    ]
    document = {"cores": available_cores(), "load_before": load_before, "load_after": load_after, "rows": len(rows), "chunk": chunk,
                "methods": results, "sampled_shapley_rows_per_second": ours_rate, "plain_loop_rows_per_second": plain_rate,
                "ratio_to_plain_loop": ours_rate / plain_rate}
    save_results(args.results, "model_agnostic", document, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
