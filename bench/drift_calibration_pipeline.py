#!/usr/bin/env python
"""Drift calibration on whole pipeline runs of trained models (issue 27).

    python bench/drift_calibration_pipeline.py                  # 20 repetitions, both datasets, three baselines
    python bench/drift_calibration_pipeline.py --repetitions 5 --datasets breast_cancer --baselines auto

bench/drift_calibration.py calibrates `compare` on synthetic summaries (a linear model's rows fed
straight into the accumulator). This one runs the real pipeline end to end on two datasets bundled
with scikit-learn (nothing downloaded), each with a small Keras MLP (d -> Dense(h, relu) ->
Dense(classes, softmax)) trained on all its rows:

* digits: 1,797 rows, 64 pixels scaled to [0, 1], 10 classes (h = 32). No pixel holds the default
  min_share (5 %) of the total mean |attribution|, so the default thresholds judge no feature here;
* breast_cancer: 569 rows, 30 standardized measurements, 2 classes (h = 16).

The rows are written as Parquet (id, label, f0..f{d-1}). Per repetition, a random split into two
disjoint halves A and B; each half goes through `run_attribution` (DirectRunner, in-process) with
the pipeline's defaults: integrated gradients, 64 steps, target = the predicted class, the Poisson
bootstrap with 200 replicates; the quality audit is off (quality_rows 0), as in the tests. The
baseline is 'auto' (the default: each run's OWN median row, so the two halves are attributed
against slightly different baselines) and, on the same splits, 'reference' (--baseline
median:ALL.parquet: the median of one fixed file, all the dataset's rows standing for the
training data, the same for every run, what docs/audits.md advises for audits) and 'zeros'
(fixed). Then, at each of
THRESHOLDS (the defaults; 50 % with every feature and the ~90-row digits classes judged; a tight
10 %, at which the threshold alone flags sampling noise):

* halves: compare(A, B) with the same model. Counted: the features flagged in the overall group
  (past the threshold and beyond noise, what compare does) and past the threshold alone, the same
  over the judged per-class groups (kind 'target'), whether compare said DRIFT at all, and whether
  the explained-class shares moved beyond noise ("explained-class shares moved" among the reasons);
* retrain: compare(A, B') where B' is half B explained by a copy of the model whose first Dense
  kernel row for feature J is multiplied by 2 and the row for feature K set to 0 (J, K: the two
  features with the largest share of mean |attribution| in a pilot run on all rows). Detection:
  the share of repetitions with both J and K flagged (overall group); others flagged: the share of
  the judged untouched features flagged (a retrain changes the model, so their attributions may
  truly move too).

Writes bench/results/drift_calibration_pipeline.json and .md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Optional, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("NO_GCE_CHECK", "true")

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCH)

from throughput import save_results  # noqa: E402

from audit.compare import DriftThresholds, compare_runs  # noqa: E402
from audit.runs import RunResult, load_run  # noqa: E402

INPUT_NAME = "features"
DEFAULT = DriftThresholds()
# The default relative change with every feature judged (no digits pixel holds the default
# min_share of 5 %), and a tight threshold at which the threshold alone flags sampling noise. Both
# judge groups of 50 rows or more, so that the ~90-row per-class groups of a digits half are
# judged too (the overall group, ~900 rows, is judged either way).
ALL_JUDGED = DriftThresholds(min_share=0.0, min_group_rows=50)
TIGHT = DriftThresholds(max_relative_change=0.1, min_share=0.0, min_group_rows=50)
THRESHOLDS = {"default": DEFAULT, "all_judged": ALL_JUDGED, "tight": TIGHT}
LABELS = {"default": "default (50 %, min share 0.05, min rows 100)", "all_judged": "50 %, min share 0, min rows 50",
          "tight": "tight (10 %, min share 0, min rows 50)"}
CLASS_SHARE_REASON = "explained-class shares moved"


def columns(count: int) -> list[str]:
    return [f"f{j}" for j in range(count)]


def digits_rows() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 64) float32 pixels scaled to [0, 1], (1797,) int64 labels: scikit-learn's digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def breast_cancer_rows() -> tuple[np.ndarray, np.ndarray]:
    """(569, 30) float32 standardized measurements (z-scores over the dataset), (569,) int64 labels
    (1 = benign): scikit-learn's Wisconsin breast cancer data."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = data.data
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32), data.target.astype(np.int64)


DATASETS = {"digits": (digits_rows, 32), "breast_cancer": (breast_cancer_rows, 16)}  # rows, hidden units


def train_mlp(path: str, features: np.ndarray, labels: np.ndarray, hidden: int = 32, epochs: int = 20,
              seed: int = 0) -> tuple[str, float]:
    """Trains Input(d, name 'features') -> Dense(hidden, relu) -> Dense(classes, softmax) on all
    rows and saves it as .keras. Returns (path, training accuracy)."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((features.shape[1],), name=INPUT_NAME),
        keras.layers.Dense(hidden, activation="relu", name="hidden"),
        keras.layers.Dense(int(labels.max()) + 1, activation="softmax", name="head"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(features, labels, epochs=epochs, batch_size=32, verbose=0)
    model.save(str(path))
    return str(path), float(history.history["accuracy"][-1])


def retrained_copy(model_path: str, path: str, doubled: int, removed: int) -> str:
    """A copy of the model with feature `doubled`'s row of the first Dense kernel multiplied by 2
    and feature `removed`'s row set to 0 (its gradient, hence its attribution, is then exactly 0)."""
    import keras

    model = keras.models.load_model(model_path)
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    kernel, bias = dense.get_weights()
    kernel = kernel.copy()
    kernel[doubled] *= 2.0
    kernel[removed] = 0.0
    dense.set_weights([kernel, bias])
    model.save(str(path))
    return str(path)


def write_rows(path: str, features: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> str:
    """Parquet with an int64 `id` key, an int64 `label` and one float32 column f0..f{d-1} per feature."""
    table = {"id": pa.array(ids.astype(np.int64)), "label": pa.array(labels.astype(np.int64))}
    table.update({name: pa.array(features[:, j].astype(np.float32)) for j, name in enumerate(columns(features.shape[1]))})
    pq.write_table(pa.table(table), str(path), row_group_size=256)
    return str(path)


def pipeline_run(model: str, data: str, output: str, num_features: int, **extra) -> RunResult:
    """The real pipeline (DirectRunner, in-process) with its default method and settings, the
    quality audit off; returns the loaded run."""
    from pipeline.config import RunConfig
    from pipeline.run import run_attribution

    config = RunConfig.from_mapping({"model": model, "input": data, "output": output, "inputs": {INPUT_NAME: columns(num_features)},
                                     "key_column": "id", "quality_rows": 0, **extra})
    run_attribution(config)
    return load_run(output)


def overall_shares(run: RunResult) -> dict[str, float]:
    """{feature: share of the run's total mean |attribution|} in the overall group."""
    table = run.features.to_pydict()
    overall = {f: m for kind, f, e, m in zip(table["group_kind"], table["feature"], table["element"], table["mean_abs"])
               if kind == "overall" and e < 0}
    total = sum(overall.values()) or 1.0
    return {f: m / total for f, m in overall.items()}


def top_features(run: RunResult, count: int = 2) -> list[int]:
    """Indices of the `count` features with the largest mean |attribution| in the overall group."""
    shares = overall_shares(run)
    return [int(f[1:]) for f in sorted(shares, key=lambda f: -shares[f])[:count]]


def flags(document: dict, thresholds: DriftThresholds) -> dict:
    """From a comparison document (made with `thresholds`): in the overall group, the features
    judged, flagged (what compare does: past the threshold and beyond noise) and past the threshold
    alone; the same counted over the judged per-class groups (kind 'target')."""
    def judged(f):
        return f["share_a"] >= thresholds.min_share and f["relative_change"] is not None

    def past(f):
        return judged(f) and abs(f["relative_change"]) > thresholds.max_relative_change

    overall = next(g for g in document["groups"] if g["kind"] == "overall")
    classes = [g for g in document["groups"] if g["kind"] == "target" and g["checked"]]
    return {
        "judged": {f["feature"] for f in overall["features"] if judged(f)},
        "flagged": {f["feature"] for f in overall["features"] if f.get("drift")},
        "threshold_alone": {f["feature"] for f in overall["features"] if past(f)},
        "class_groups_judged": len(classes),
        "class_judged": sum(judged(f) for g in classes for f in g["features"]),
        "class_flagged": sum(bool(f.get("drift")) for g in classes for f in g["features"]),
        "class_threshold_alone": sum(past(f) for g in classes for f in g["features"]),
        "drift": bool(document["reasons"]),
        "reasons": list(document["reasons"]),
    }


def repetition(rng: np.random.Generator, features: np.ndarray, labels: np.ndarray, model: str, retrained: str,
               changed: tuple[int, int], directory: str, timings: Optional[list] = None, baseline: str = "auto") -> dict:
    """One random split into disjoint halves A and B; three pipeline runs (A and B with the model, B
    with the retrained model); per THRESHOLDS entry, the flags of compare(A, B) ('halves') and of
    compare(A, B retrained) ('retrain', with 'detected': both changed features flagged, and 'others':
    the untouched features flagged); the class-share verdict on the halves. baseline: the runs'
    integrated-gradients baseline ('auto', the default: each run's own median row)."""
    order = rng.permutation(len(features))
    half = len(features) // 2
    runs = {}
    for name, rows, model_path in (("a", order[:half], model), ("b", order[half:], model), ("c", order[half:], retrained)):
        data = write_rows(os.path.join(directory, f"{name}.parquet"), features[rows], rows, labels[rows])
        started = time.perf_counter()
        runs[name] = pipeline_run(model_path, data, os.path.join(directory, name), features.shape[1], baseline=baseline)
        if timings is not None:
            timings.append(time.perf_counter() - started)
    names = {f"f{changed[0]}", f"f{changed[1]}"}
    result = {"changed": sorted(names)}
    for key, thresholds in THRESHOLDS.items():
        halves = compare_runs(runs["a"], runs["b"], thresholds)
        retrain = flags(compare_runs(runs["a"], runs["c"], thresholds), thresholds)
        retrain["detected"] = names <= retrain["flagged"]
        retrain["others"] = retrain["flagged"] - names
        retrain["others_judged"] = retrain["judged"] - names
        result[key] = {"halves": flags(halves, thresholds), "retrain": retrain}
        if key == "default":
            result["class_shares"] = {"beyond_noise": halves["class_shares"]["beyond_noise"],
                                      "total_variation": halves["class_shares"]["total_variation"],
                                      "reason": any(CLASS_SHARE_REASON in r for r in halves["reasons"])}
    return result


def _share(count: float, cells: int) -> Optional[float]:
    return count / cells if cells else None


def _text(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def calibrate(dataset: str, repetitions: int, seed: int, work: str, baselines: Sequence[str] = ("auto",)) -> tuple[dict, list[str]]:
    """Trains the dataset's MLP, picks the changed features from a pilot run on all rows (default
    settings), runs the repetitions once per baseline (the same splits); returns (document, table lines)."""
    load, hidden = DATASETS[dataset]
    features, labels = load()
    model, accuracy = train_mlp(os.path.join(work, f"{dataset}_mlp.keras"), features, labels, hidden)
    reference = write_rows(os.path.join(work, f"{dataset}.parquet"), features, np.arange(len(features)), labels)  # the "training data"
    pilot = pipeline_run(model, reference, os.path.join(work, f"{dataset}_pilot"), features.shape[1])
    shares = overall_shares(pilot)
    doubled, removed = top_features(pilot)
    retrained = retrained_copy(model, os.path.join(work, f"{dataset}_retrained.keras"), doubled, removed)
    rng = np.random.default_rng(seed)
    results, timings = {b: [] for b in baselines}, []
    for rep in range(repetitions):
        state = rng.bit_generator.state  # every baseline gets the same split
        for baseline in baselines:
            rng.bit_generator.state = state
            directory = os.path.join(work, f"{dataset}_rep{rep}_{baseline}")
            os.makedirs(directory)
            setting = f"median:{reference}" if baseline == "reference" else baseline
            results[baseline].append(repetition(rng, features, labels, model, retrained, (doubled, removed), directory, timings, setting))
            shutil.rmtree(directory)
            r = results[baseline][-1]
            print(f"{dataset} rep {rep} baseline {baseline}: halves flagged default {sorted(r['default']['halves']['flagged'])}, tight "
                  f"{len(r['tight']['halves']['flagged'])} (threshold alone {len(r['tight']['halves']['threshold_alone'])}); "
                  f"class shares beyond noise {r['class_shares']['beyond_noise']}; retrain flagged default "
                  f"{sorted(r['default']['retrain']['flagged'])} ({np.mean(timings[-3:]):.1f} s per run)", flush=True)

    n = repetitions
    rows = []
    for baseline, key in ((b, k) for b in baselines for k in THRESHOLDS):
        thresholds = THRESHOLDS[key]
        halves = [r[key]["halves"] for r in results[baseline]]
        retrain = [r[key]["retrain"] for r in results[baseline]]
        judged = sum(len(h["judged"]) for h in halves)
        class_judged = sum(h["class_judged"] for h in halves)
        rows.append({
            "baseline": baseline, "thresholds": key, "max_relative_change": thresholds.max_relative_change, "min_share": thresholds.min_share,
            "min_group_rows": thresholds.min_group_rows,
            "features_judged_per_comparison": judged / n,
            "false_positive": _share(sum(len(h["flagged"]) for h in halves), judged),
            "false_positive_threshold_alone": _share(sum(len(h["threshold_alone"]) for h in halves), judged),
            "repetitions_with_a_feature_flagged": sum(bool(h["flagged"]) for h in halves) / n,
            "class_groups_judged_per_comparison": sum(h["class_groups_judged"] for h in halves) / n,
            "class_false_positive": _share(sum(h["class_flagged"] for h in halves), class_judged),
            "class_false_positive_threshold_alone": _share(sum(h["class_threshold_alone"] for h in halves), class_judged),
            "halves_said_drift": sum(h["drift"] for h in halves) / n,
            "detection": sum(r["detected"] for r in retrain) / n,
            "others_flagged": _share(sum(len(r["others"]) for r in retrain), sum(len(r["others_judged"]) for r in retrain)),
        })
    first = results[baselines[0]]  # the explained classes (predicted) and their shares do not depend on the baseline
    class_shares = {"beyond_noise": sum(bool(r["class_shares"]["beyond_noise"]) for r in first) / n,
                    "reason_given": sum(r["class_shares"]["reason"] for r in first) / n,
                    "mean_total_variation": float(np.mean([r["class_shares"]["total_variation"] for r in first]))}
    per_run = float(np.mean(timings))
    changed = {"doubled": f"f{doubled}", "removed": f"f{removed}", "share_doubled": shares[f"f{doubled}"],
               "share_removed": shares[f"f{removed}"], "largest_share": max(shares.values())}
    sizes = [len(features) // 2, len(features) - len(features) // 2]
    lines = [
        f"**{dataset}** ({len(features):,} rows, {features.shape[1]} features, {int(labels.max()) + 1} classes; MLP train accuracy "
        f"{accuracy:.3f}): {n} repetitions of two disjoint halves ({sizes[0]} / {sizes[1]} rows); retrain: {changed['doubled']} "
        f"(share {changed['share_doubled']:.3f}) doubled, {changed['removed']} (share {changed['share_removed']:.3f}) removed; "
        f"{per_run:.1f} s per pipeline run ({len(timings)} runs); baselines {', '.join(baselines)} on the same splits.",
        "",
        "| baseline | thresholds | features judged | false positive (intervals) | false positive (threshold alone) | reps with a flag | "
        "class groups judged | per-class false positive (intervals / threshold alone) | halves said DRIFT | detection | others flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['baseline']} | {LABELS[row['thresholds']]} | {row['features_judged_per_comparison']:.1f} | {_text(row['false_positive'])} | "
                     f"{_text(row['false_positive_threshold_alone'])} | {row['repetitions_with_a_feature_flagged']:.2f} | "
                     f"{row['class_groups_judged_per_comparison']:.1f} | {_text(row['class_false_positive'])} / "
                     f"{_text(row['class_false_positive_threshold_alone'])} | {row['halves_said_drift']:.2f} | "
                     f"{row['detection']:.2f} | {_text(row['others_flagged'])} |")
    lines += ["", f"Class shares on the halves: beyond noise in {class_shares['beyond_noise']:.2f} of repetitions, "
                  f"\"{CLASS_SHARE_REASON}\" a reason in {class_shares['reason_given']:.2f} (mean total variation "
                  f"{class_shares['mean_total_variation']:.3f}).", ""]
    document = {
        "dataset": dataset, "rows": len(features), "features": features.shape[1], "classes": int(labels.max()) + 1,
        "rows_per_half": sizes, "train_accuracy": accuracy, "changed": changed, "seconds_per_pipeline_run": per_run,
        "pipeline_runs": len(timings), "table": rows, "class_shares": class_shares,
        "baselines": list(baselines),
        "per_repetition": {baseline: [{"halves_flagged_default": sorted(r["default"]["halves"]["flagged"]),
                            "halves_flagged_tight": sorted(r["tight"]["halves"]["flagged"]),
                            "halves_threshold_alone_tight": len(r["tight"]["halves"]["threshold_alone"]),
                            "retrain_flagged_default": sorted(r["default"]["retrain"]["flagged"]),
                            "halves_reasons_default": r["default"]["halves"]["reasons"],
                            "class_shares": r["class_shares"]} for r in results[baseline]] for baseline in baselines},
    }
    return document, lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repetitions", type=int, default=20)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["digits", "breast_cancer"])
    parser.add_argument("--baselines", nargs="+", default=["auto", "reference", "zeros"],
                        help="integrated-gradients baselines to calibrate (auto, the default, is each run's own median row; "
                             "reference is --baseline median:ALL_ROWS.parquet, the median of one fixed file, the same for every run; "
                             "zeros is fixed too)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="drift_calibration_pipeline_")
    documents, lines = [], []
    try:
        for dataset in args.datasets:
            document, table = calibrate(dataset, args.repetitions, args.seed, work, args.baselines)
            documents.append(document)
            lines += table
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save_results(args.results, "drift_calibration_pipeline", {"repetitions": args.repetitions, "seed": args.seed,
                                                              "datasets": documents}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
