#!/usr/bin/env python
"""Completeness-driven integrated gradients (#11): share of rows meeting a completeness target
and gradient evaluations, fixed step counts against the adaptive rule.

    python bench/adaptive_ig.py            # 1,000 rows per model (~8 min on 2 cores)
    python bench/adaptive_ig.py --rows 200 # quicker

Models (built and trained here, offline, seeded): the bench's small ReLU/tanh MLPs (64-64 relu-32
tanh-10 softmax, and a narrow 64-12 relu-8 tanh-10 softmax: few units, so each kink is large) and
small CNN (8x8x1 conv8-conv16-dense10 softmax) on scikit-learn's digits, and the demo's two
models (`pipeline.demo`: the digits CNN and the breast-cancer MLP with its mean-patient baseline). Each explains its predicted class (probabilities, as the pipeline does by
default); baseline zeros except the breast-cancer model.

For each model, at --target (0.01):
  * fixed Gauss-Legendre step counts 4 ... 4096: share of rows with completeness_error <= target;
  * the smallest fixed count in that grid reaching --share (0.99) of rows, and its evaluations
    (rows x steps);
  * the adaptive rule (first pass at 64 points, the default --steps, and at 16 and 8; max_steps
    4096): share met, gradient evaluations (sum of steps_used), forward evaluations at panel
    midpoints, and the ratio of its gradient evaluations to the fixed count's.
Gradient-evaluation counts are deterministic: they do not depend on the machine's load.
Results: bench/results/adaptive_ig.json and adaptive_ig.md.
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

FIXED_STEPS = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
FIRST_STEPS_TRIED = (64, 16, 8)  # the default --steps, and cheaper first passes
MAX_STEPS = 4096


def build_models(directory: str) -> dict[str, tuple]:
    """{name: (model path, inputs (N, *shape), baseline (*shape))}."""
    import keras

    from pipeline import demo

    images, labels = demo.digits_data()  # (1797, 8, 8, 1)
    keras.utils.set_random_seed(0)
    mlp = keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(32, activation="tanh"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    mlp.compile("adam", "sparse_categorical_crossentropy")
    mlp.fit(images.reshape(-1, 64), labels, epochs=10, batch_size=32, verbose=0)
    narrow = keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(12, activation="relu"),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    narrow.compile("adam", "sparse_categorical_crossentropy")
    narrow.fit(images.reshape(-1, 64), labels, epochs=20, batch_size=32, verbose=0)
    cnn = keras.Sequential([
        keras.Input((8, 8, 1), name="pixels"),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    cnn.compile("adam", "sparse_categorical_crossentropy")
    cnn.fit(images, labels, epochs=10, batch_size=32, verbose=0)
    models = {}
    for name, model, x in (("bench_mlp", mlp, images.reshape(-1, 64)), ("bench_narrow_mlp", narrow, images.reshape(-1, 64)),
                           ("bench_cnn", cnn, images)):
        path = os.path.join(directory, f"{name}.keras")
        model.save(path)
        models[name] = (path, x, np.zeros(x.shape[1:], np.float32))
    digits = demo.make_digits_assets(os.path.join(directory, "digits"))
    models["demo_digits_cnn"] = (digits["model"], images, np.zeros(images.shape[1:], np.float32))
    cancer = demo.make_breast_cancer_assets(os.path.join(directory, "cancer"))
    features, _, _ = demo.breast_cancer_data()
    models["demo_breast_cancer"] = (cancer["model"], features, features.mean(axis=0))
    return models


def measure(path: str, x: np.ndarray, baseline: np.ndarray, rows: int, target: float, share: float) -> dict:
    from attributions.adaptive_ig import adaptive_integrated_gradients
    from attributions.integrated_gradients import integrated_gradients
    from attributions.loading import load_model
    from attributions.result import relative_delta

    fns = load_model(path).model_functions()
    x = x[np.random.default_rng(0).permutation(len(x))[:rows]]
    n = len(x)
    outputs = fns.predict([x])
    targets = outputs.argmax(axis=1).astype(np.int32)
    chunk = 65536
    fixed = {}
    for steps in FIXED_STEPS:
        r = integrated_gradients(fns, [x], [baseline], targets, steps, chunk_size=chunk, outputs_at_inputs=outputs)
        fixed[steps] = {
            "share_met": float(np.mean(r.completeness_error <= target)),
            "share_relative_delta_met": float(np.mean(relative_delta(r.convergence_delta, r.output_change) <= target)),
            "gradient_evaluations": n * steps,
        }
    reaching = [s for s in FIXED_STEPS if fixed[s]["share_met"] >= share]
    from attributions.adaptive_ig import PANEL_POINTS

    needed = reaching[0] if reaching else None
    adaptive = {}
    for first in FIRST_STEPS_TRIED:
        start = time.perf_counter()
        a = adaptive_integrated_gradients(fns, [x], [baseline], targets, target, first, MAX_STEPS, chunk_size=chunk, outputs_at_inputs=outputs)
        seconds = time.perf_counter() - start
        bisections = (a.steps_used - first) // (2 * PANEL_POINTS)
        evaluations = int(a.steps_used.sum())
        adaptive[str(first)] = {
            "share_met": float(np.mean(a.completeness_met)),
            "gradient_evaluations": evaluations,
            "forward_evaluations_at_midpoints": int(bisections.sum()),
            "rows_refined": int(np.sum(a.steps_used > first)),
            "steps_used_quantiles": {f"q{q}": float(np.percentile(a.steps_used, q)) for q in (50, 90, 99, 100)},
            "seconds_on_this_machine": round(seconds, 2),
            "ratio_to_fixed": evaluations / (n * needed) if needed else None,
        }
    return {
        "rows": n,
        "fixed": {str(s): v for s, v in fixed.items()},
        "fixed_64_share_met": fixed[64]["share_met"],
        "fixed_steps_for_share": needed,
        "fixed_evaluations_for_share": n * needed if needed else None,
        "adaptive_by_first_steps": adaptive,
    }


def markdown(results: dict, target: float, share: float) -> str:
    lines = [
        f"# Completeness-driven IG: target completeness_error <= {target}, {share:.0%} of rows",
        "",
        f"Adaptive: first pass of N Gauss-Legendre points (N = {', '.join(map(str, FIRST_STEPS_TRIED))}), max_steps {MAX_STEPS}; gradient evaluations = sum of steps_used. "
        "Fixed: rows x steps. Counts are deterministic (no timing).",
        "",
        "| model | rows | fixed 64: share met | fixed steps for share | fixed evaluations | adaptive first pass | adaptive share met | adaptive evaluations | ratio | rows refined | midpoint forward passes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["models"].items():
        for first, a in r["adaptive_by_first_steps"].items():
            ratio = f"{a['ratio_to_fixed']:.2f}" if a["ratio_to_fixed"] is not None else "n/a"
            lines.append(
                f"| {name} | {r['rows']} | {r['fixed_64_share_met']:.1%} | {r['fixed_steps_for_share'] or '> ' + str(FIXED_STEPS[-1])} | "
                f"{r['fixed_evaluations_for_share'] or 'n/a'} | {first} | {a['share_met']:.2%} | {a['gradient_evaluations']} | {ratio} | "
                f"{a['rows_refined']} | {a['forward_evaluations_at_midpoints']} |"
            )
    lines += ["", "Share of rows meeting the target per fixed step count (new measure / old |delta|/|dF| measure):", "",
              "| model | " + " | ".join(str(s) for s in FIXED_STEPS) + " |", "|---|" + "---|" * len(FIXED_STEPS)]
    for name, r in results["models"].items():
        cells = [f"{r['fixed'][str(s)]['share_met']:.1%} / {r['fixed'][str(s)]['share_relative_delta_met']:.1%}" for s in FIXED_STEPS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--target", type=float, default=0.01)
    parser.add_argument("--share", type=float, default=0.99)
    parser.add_argument("--models", nargs="*", help="only these models")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        models = build_models(directory)
        results = {"target": args.target, "share": args.share, "first_steps_tried": list(FIRST_STEPS_TRIED), "max_steps": MAX_STEPS, "models": {}}
        for name, (path, x, baseline) in models.items():
            if args.models and name not in args.models:
                continue
            results["models"][name] = measure(path, x, baseline, args.rows, args.target, args.share)
            r = results["models"][name]
            for first, a in r["adaptive_by_first_steps"].items():
                print(f"{name}: fixed 64 met {r['fixed_64_share_met']:.1%}; fixed for {args.share:.0%}: {r['fixed_steps_for_share']} steps "
                      f"({r['fixed_evaluations_for_share']} evals); adaptive from {first} met {a['share_met']:.2%} with "
                      f"{a['gradient_evaluations']} evals (ratio {a['ratio_to_fixed']})", flush=True)
    os.makedirs(os.path.join(REPO, "bench", "results"), exist_ok=True)
    with open(os.path.join(REPO, "bench", "results", "adaptive_ig.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(REPO, "bench", "results", "adaptive_ig.md"), "w") as f:
        f.write(markdown(results, args.target, args.share))
    print(markdown(results, args.target, args.share))


if __name__ == "__main__":
    main()
