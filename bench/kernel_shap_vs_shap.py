#!/usr/bin/env python
"""KernelSHAP throughput: attributions.kernel_shap against the shap package's KernelExplainer on
the same Keras model, the same background and the same coalitions per row.

    python bench/kernel_shap_vs_shap.py                 # ~2-3 min on 2 cores
    python bench/kernel_shap_vs_shap.py --rows 50 --shap-rows 5

Model: a Keras MLP (Normalization -> Dense(16, relu) -> Dense(1, sigmoid)) trained here on the
first P columns of scikit-learn's breast cancer data (seeded, offline). Background: a k-means
summary of the first 300 rows (`background_summary`, weights = cluster sizes); shap gets the same
centers and weights (its DenseData), so both explain the same game. Coalitions: shap's "auto",
2 P + 2048 per row, for both (P = 10: all 1022 enumerated); shap runs with l1_reg=False (its
default "num_features(10)" adds a LARS feature selection and keeps only 10 players non-zero).
shap's model is the same compiled tf.function (ModelFunctions.predict, one call for a row's
n x R points), so the model's own cost is the same and the ratio measures everything around it.

Reported (medians of --rounds rounds, alternating the order): rows/s of ours (at chunk_size 1024
and at the chunk the pipeline picks for this model, attributions.chunking.automatic_chunk_size)
and of shap on the same model, as the same compiled function and as shap's documentation passes a
Keras model (KernelExplainer(model.predict, ...): Keras predicts in batches of 32), their ratios
(measured in this run), the largest |ours - shap| in units of our reported
standard error on the rows both explained, and how our rows/s scales with P (10, 20, 30 at
R = 50) and with the background size R (10, 50, 100 at P = 30). Results:
bench/results/kernel_shap_vs_shap.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402


def train(features: int):
    """(ModelFunctions, standardized data (569, P) float32) for an MLP on the first P columns."""
    import keras
    from sklearn.datasets import load_breast_cancer

    from attributions.model_functions import build_model_functions

    data = load_breast_cancer()
    x, y = data.data[:, :features].astype(np.float32), data.target
    keras.utils.set_random_seed(0)
    normalize = keras.layers.Normalization()
    normalize.adapt(x)
    model = keras.Sequential([keras.Input((features,)), normalize, keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=20, batch_size=32, verbose=0)
    return build_model_functions(lambda inputs: model(inputs[0], training=False), [(features,)], 1), x, model


def ours(fns, rows, centers, weights, chunk_size: int):
    """(rows/s, Attributions) of kernel_shap at the default budget, after a warm-up."""
    from attributions.kernel_shap import kernel_shap
    from attributions.players import element_players

    players = element_players([rows.shape[1:]])
    targets = np.zeros(len(rows), np.int32)

    def run(x):
        return kernel_shap(fns, (x,), (centers,), np.zeros(len(x), np.int32), players, np.arange(len(x)),
                           chunk_size=chunk_size, background_weights=weights)

    run(rows[:2])  # traces the model's predict for the call sizes
    start = time.perf_counter()
    result = kernel_shap(fns, (rows,), (centers,), targets, players, np.arange(len(rows)), chunk_size=chunk_size,
                         background_weights=weights)
    return len(rows) / (time.perf_counter() - start), result


def theirs(fns, rows, centers, weights, keras_model=None):
    """(rows/s, values (n, P)) of shap.KernelExplainer on the same game: the model as the same
    compiled function (fns.predict, one call per row), or, given keras_model, as shap's own
    documentation passes it: KernelExplainer(model.predict, background) (Keras batches of 32)."""
    import shap
    from shap.utils._legacy import DenseData

    background = DenseData(centers.astype(np.float64), [str(i) for i in range(centers.shape[1])], None,
                           weights.copy())
    if keras_model is not None:
        model = lambda z: keras_model.predict(np.asarray(z, np.float32), verbose=0)[:, 0]  # noqa: E731
    else:
        model = lambda z: fns.predict((np.asarray(z, np.float32),))[:, 0]  # noqa: E731
    explainer = shap.KernelExplainer(model, background)
    np.random.seed(0)
    explainer.shap_values(rows[:1], silent=True, l1_reg=False)  # warm-up
    start = time.perf_counter()
    values = np.asarray(explainer.shap_values(rows, silent=True, l1_reg=False))
    return len(rows) / (time.perf_counter() - start), values


def load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200, help="rows explained by ours (at most 269)")
    parser.add_argument("--shap-rows", type=int, default=50, help="rows explained by shap (compiled model)")
    parser.add_argument("--shap-predict-rows", type=int, default=4, help="rows explained by shap with keras model.predict (slow)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)

    import shap

    from attributions.concurrency import available_cores
    from attributions.kernel_shap import background_summary, default_samples
    from throughput import save_results

    load_before = load()
    models = {p: train(p) for p in (10, 20, 30)}
    summaries = {}
    for p, (fns, x, _) in models.items():
        for r in (10, 50, 100):
            if p == 30 or r == 50:
                (centers,), weights = background_summary((x[:300],), r, seed=0)
                summaries[p, r] = centers, weights

    # ours against shap, P = 30, R = 50: rounds alternate the order, medians reported (the
    # machine may be shared: a load that comes and goes hits both sides alike).
    fns, x, keras_model = models[30]
    from attributions.chunking import automatic_chunk_size

    auto_chunk = automatic_chunk_size(fns)  # what the pipeline picks for this model (512 MiB budget)
    rows = x[300:300 + args.rows]  # 269 rows after the 300 summarized
    centers, weights = summaries[30, 50]
    rates: dict[str, list[float]] = {"ours_1024": [], "ours_auto": [], "shap": [], "shap_predict": []}
    for r in range(args.rounds):
        order = ("ours_1024", "ours_auto", "shap", "shap_predict") if r % 2 == 0 else ("shap_predict", "shap", "ours_auto", "ours_1024")
        for name in order:
            if name == "shap":
                rate, shap_values = theirs(fns, rows[:args.shap_rows], centers, weights)
            elif name == "shap_predict":
                rate, _ = theirs(fns, rows[:args.shap_predict_rows], centers, weights, keras_model)
            else:
                rate, result = ours(fns, rows, centers, weights, 1024 if name == "ours_1024" else auto_chunk)
            rates[name].append(rate)
            print(f"round {r + 1} {name}: {rate:.2f} rows/s", flush=True)
    ours_rate, ours_big_rate, shap_rate, shap_predict_rate = (float(np.median(rates[k])) for k in ("ours_1024", "ours_auto", "shap", "shap_predict"))
    ours_values = result.attributions[0][:args.shap_rows]
    in_stderr = float((np.abs(ours_values - shap_values).max(axis=1) / result.stderr[:args.shap_rows]).max())
    samples = default_samples(30)

    scaling = {}
    for (p, r), (centers, weights) in sorted(summaries.items()):
        fns, x, _ = models[p]
        count = max(10, args.rows // (2 if r == 100 else 1))
        rate, res = ours(fns, x[300:300 + count], centers, weights, automatic_chunk_size(fns))
        coalitions = min(default_samples(p), 2**p - 2)
        scaling[f"P{p}_R{r}"] = {"players": p, "background": r, "rows": count, "coalitions": coalitions,
                                 "rows_per_second": rate, "evaluations_per_second": rate * coalitions * r,
                                 "median_stderr": float(np.median(res.stderr))}
        print(f"P {p} R {r}: {rate:.1f} rows/s", flush=True)
    load_after = load()

    lines = [
        f"cores: {available_cores()}; load average before {load_before}, after {load_after}; shap {shap.__version__}",
        "",
        f"P = 30 players, R = 50 background rows (k-means summary), {samples} coalitions per row "
        f"({samples * 50:,} model evaluations per row)",
        "",
        "| method | rows | rows/s | vs shap (same compiled model) | vs shap (model.predict) |",
        "|---|---|---|---|---|",
        f"| kernel_shap, chunk_size 1024 | {len(rows)} | {ours_rate:.2f} | {ours_rate / shap_rate:.1f}x | {ours_rate / shap_predict_rate:.1f}x |",
        f"| kernel_shap, the pipeline's automatic chunk ({auto_chunk:,} points) | {len(rows)} | {ours_big_rate:.2f} | "
        f"{ours_big_rate / shap_rate:.1f}x | {ours_big_rate / shap_predict_rate:.1f}x |",
        f"| shap.KernelExplainer (l1_reg=False), model = our compiled predict | {args.shap_rows} | {shap_rate:.2f} | 1.0x | |",
        f"| shap.KernelExplainer (l1_reg=False), model = keras model.predict (shap's documented usage) | {args.shap_predict_rows} | "
        f"{shap_predict_rate:.2f} | | 1.0x |",
        "",
        f"largest |ours - shap| over the {args.shap_rows} rows both explained: {in_stderr:.2f} of our reported stderr",
        "",
        "kernel_shap scaling (the pipeline's automatic chunk size):",
        "",
        "| players P | background R | coalitions | rows | rows/s | model evaluations/s | median stderr |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in scaling.values():
        lines.append(f"| {item['players']} | {item['background']} | {item['coalitions']} | {item['rows']} | "
                     f"{item['rows_per_second']:.2f} | {item['evaluations_per_second']:,.0f} | {item['median_stderr']:.2e} |")
    document = {
        "cores": available_cores(), "load_before": load_before, "load_after": load_after, "shap": shap.__version__,
        "coalitions": samples, "rows": len(rows), "shap_rows": args.shap_rows,
        "rounds": args.rounds, "rates": rates, "ours_rows_per_second": ours_rate, "ours_rows_per_second_auto_chunk": ours_big_rate, "auto_chunk": auto_chunk,
        "shap_model_predict_rows_per_second": shap_predict_rate, "ratio_to_shap_model_predict": ours_big_rate / shap_predict_rate,
        "shap_rows_per_second": shap_rate, "ratio": ours_rate / shap_rate, "ratio_auto_chunk": ours_big_rate / shap_rate,
        "max_difference_in_stderr": in_stderr, "scaling": scaling,
    }
    save_results(args.results, "kernel_shap_vs_shap", document, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
