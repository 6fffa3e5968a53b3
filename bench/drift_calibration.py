#!/usr/bin/env python
"""How often compare flags sampling noise as drift, and how often it finds a planted change (issue 27).

    python bench/drift_calibration.py                  # 100 repetitions per cell
    python bench/drift_calibration.py --repetitions 20

Rows: a linear model's gradient x input on standard normal inputs, a_j = w_j x_j with
w = (3, 2.5, 2, 1.6, 1.3, 1, 0.8, 0.6, 0.5, 0.4), summarized by the pipeline's own accumulator
(with its Poisson bootstrap, 200 replicates) in batches of 1,000. Per repetition: one sample of
2n rows split into two disjoint halves A and B (no drift), and B's rows again through a
"retrained" model with f2's weight doubled and f6's removed (drift). Per threshold
(--max-relative-change, with --min-share 0 so every feature is judged) and half size n it reports:

* false_positive: share of (repetition, feature) cells flagged on the two halves, with the
  intervals (what compare does) and by the threshold alone (what it did before);
* detection: share of repetitions where both changed features are flagged;
* others_flagged: share of the untouched features flagged in the drift case.

Writes bench/results/drift_calibration.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pyarrow as pa

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCH)

from throughput import save_results  # noqa: E402

from audit.compare import DriftThresholds, compare_runs  # noqa: E402
from audit.runs import RunResult  # noqa: E402
from audit.summary import FeatureSpec, SummarySpec  # noqa: E402
from audit.summary_accumulator import SummaryAccumulator  # noqa: E402
from audit.summary_output import exemplars_table, features_table, summary_document  # noqa: E402

WEIGHTS = np.array([3.0, 2.5, 2.0, 1.6, 1.3, 1.0, 0.8, 0.6, 0.5, 0.4])
NAMES = [f"f{j}" for j in range(len(WEIGHTS))]
SPEC = SummarySpec(features=tuple(FeatureSpec(n, 1) for n in NAMES), path_method=False, bootstrap_replicates=200)


def summarized_run(name: str, keys: np.ndarray, x: np.ndarray, weights: np.ndarray) -> RunResult:
    accumulator = SummaryAccumulator(SPEC)
    for start in range(0, len(keys), 1000):
        part = slice(start, start + 1000)
        attributions = x[part] * weights
        columns = {"key": pa.array([f"{name}:{k}" for k in keys[part]]), "target": pa.array(np.zeros(len(attributions), np.int32)),
                   "target_score": pa.array(attributions.sum(axis=1).astype(np.float32))}
        columns.update({f"attr_{n}": pa.array(attributions[:, j].astype(np.float32)) for j, n in enumerate(NAMES)})
        columns["attributions_finite"] = pa.array(np.ones(len(attributions), bool))
        accumulator.add(pa.table(columns), (x[part].astype(np.float32),), np.arange(len(attributions)))
    summary = accumulator.result()
    settings = {"method": "gradient_x_input", "target": "predicted", "output_name": None, "explain_logits": False}
    manifest = {"status": "complete", "settings": settings, "model": {"sha256": "0" * 64, "path": "m.keras"}}
    return RunResult(name, manifest, summary_document(summary, 0, settings), features_table(summary), exemplars_table(summary))


def flagged(a: RunResult, b: RunResult, thresholds: DriftThresholds) -> tuple[set, set]:
    overall = next(g for g in compare_runs(a, b, thresholds)["groups"] if g["kind"] == "overall")
    return ({f["feature"] for f in overall["features"] if f["drift"]},
            {f["feature"] for f in overall["features"] if abs(f["relative_change"]) > thresholds.max_relative_change})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repetitions", type=int, default=100)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    rows, lines = [], ["| half size n | max_relative_change | false positive (intervals) | false positive (threshold alone) | detection | others flagged |",
                       "|---|---|---|---|---|---|"]
    changed = WEIGHTS.copy()
    changed[2] *= 2.0
    changed[6] = 0.0
    for n in (500, 2000, 8000):
        for threshold in (0.02, 0.05, 0.5):
            t = DriftThresholds(max_relative_change=threshold, min_share=0.0)
            rng = np.random.default_rng(n)
            fp = past = detected = others = 0
            for rep in range(args.repetitions):
                x = rng.normal(size=(2 * n, len(WEIGHTS)))
                order = rng.permutation(2 * n)
                first, second = order[:n], order[n:]
                a = summarized_run(f"a{rep}", first, x[first], WEIGHTS)
                with_intervals, alone = flagged(a, summarized_run(f"b{rep}", second, x[second], WEIGHTS), t)
                fp, past = fp + len(with_intervals), past + len(alone)
                drifted, _ = flagged(a, summarized_run(f"c{rep}", second, x[second], changed), t)
                detected += {"f2", "f6"} <= drifted
                others += len(drifted - {"f2", "f6"})
            cells = args.repetitions * len(WEIGHTS)
            row = {"n": n, "max_relative_change": threshold, "false_positive": fp / cells, "false_positive_threshold_alone": past / cells,
                   "detection": detected / args.repetitions, "others_flagged": others / (args.repetitions * (len(WEIGHTS) - 2))}
            rows.append(row)
            lines.append(f"| {n:,} | {threshold} | {row['false_positive']:.3f} | {row['false_positive_threshold_alone']:.3f} | "
                         f"{row['detection']:.2f} | {row['others_flagged']:.3f} |")
            print(lines[-1], flush=True)
    save_results(args.results, "drift_calibration", {"repetitions": args.repetitions, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
