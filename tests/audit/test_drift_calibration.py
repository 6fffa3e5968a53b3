"""Drift beyond noise (issue 27): compare flags a feature only when its change exceeds the threshold
AND the bootstrap interval of the change excludes 0. Calibrated on summaries of synthetic
attribution rows (a linear model's gradient x input, a_j = w_j x_j, x ~ N(0, 1)): two disjoint
halves of one dataset are flagged rarely even at a tight threshold that flags noise without the
intervals, and a doubled or removed feature is flagged every time."""

import numpy as np
import pyarrow as pa

from audit.compare import DriftThresholds, compare_runs
from audit.runs import RunResult
from audit.summary import FeatureSpec, SummarySpec
from audit.summary_accumulator import SummaryAccumulator
from audit.summary_output import exemplars_table, features_table, summary_document

WEIGHTS = np.array([3.0, 2.5, 2.0, 1.6, 1.3, 1.0, 0.8, 0.6, 0.5, 0.4])
NAMES = [f"f{j}" for j in range(len(WEIGHTS))]
SPEC = SummarySpec(features=tuple(FeatureSpec(n, 1) for n in NAMES), path_method=False, bootstrap_replicates=200)
TIGHT = DriftThresholds(max_relative_change=0.02, min_share=0.0)  # flags sampling noise without the intervals


def _run(name: str, keys: np.ndarray, x: np.ndarray, weights: np.ndarray) -> RunResult:
    """A run's summaries of rows with attributions w_j x_j, added in batches of 1,000."""
    accumulator = SummaryAccumulator(SPEC)
    for start in range(0, len(keys), 1000):
        part = slice(start, start + 1000)
        attributions = x[part] * weights  # (n, F)
        columns = {"key": pa.array([f"{name}:{k}" for k in keys[part]]), "target": pa.array(np.zeros(len(attributions), np.int32)),
                   "target_score": pa.array(attributions.sum(axis=1).astype(np.float32))}
        columns.update({f"attr_{n}": pa.array(attributions[:, j].astype(np.float32)) for j, n in enumerate(NAMES)})
        columns["attributions_finite"] = pa.array(np.ones(len(attributions), bool))
        accumulator.add(pa.table(columns), (x[part].astype(np.float32),), np.arange(len(attributions)))
    summary = accumulator.result()
    settings = {"method": "gradient_x_input", "target": "predicted", "output_name": None, "explain_logits": False}
    manifest = {"status": "complete", "settings": settings, "model": {"sha256": "0" * 64, "path": "m.keras"}}
    return RunResult(name, manifest, summary_document(summary, 0, settings), features_table(summary), exemplars_table(summary))


def _flagged(a: RunResult, b: RunResult, thresholds: DriftThresholds) -> tuple[set, set]:
    """(features flagged with the intervals, features past the threshold without them) overall."""
    overall = next(g for g in compare_runs(a, b, thresholds)["groups"] if g["kind"] == "overall")
    with_noise = {f["feature"] for f in overall["features"] if f["drift"]}
    past = {f["feature"] for f in overall["features"] if abs(f["relative_change"]) > thresholds.max_relative_change}
    return with_noise, past


def test_two_halves_of_one_dataset_are_rarely_flagged_and_a_planted_change_always_is():
    rng = np.random.default_rng(0)
    false_alarms, past_threshold, detected, others = 0, 0, 0, 0
    repetitions = 20
    for rep in range(repetitions):
        x = rng.normal(size=(4000, len(WEIGHTS)))
        order = rng.permutation(4000)
        first, second = order[:2000], order[2000:]
        run_a = _run(f"a{rep}", first, x[first], WEIGHTS)
        flagged, past = _flagged(run_a, _run(f"b{rep}", second, x[second], WEIGHTS), TIGHT)
        false_alarms += len(flagged)
        past_threshold += len(past)
        changed = WEIGHTS.copy()
        changed[2] *= 2.0  # f2's influence doubled in the retrained model
        changed[6] = 0.0  # f6's removed
        flagged, _ = _flagged(run_a, _run(f"c{rep}", second, x[second], changed), TIGHT)
        detected += {"f2", "f6"} <= flagged
        others += len(flagged - {"f2", "f6"})
    cells = repetitions * len(WEIGHTS)
    assert false_alarms / cells <= 0.05, (false_alarms, cells)
    assert past_threshold / cells >= 0.3, past_threshold  # the threshold alone flags noise
    assert detected == repetitions
    assert others / (repetitions * (len(WEIGHTS) - 2)) <= 0.05, others
