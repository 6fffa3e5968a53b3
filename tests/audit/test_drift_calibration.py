"""Drift beyond noise (issue 27): compare flags a feature only when its change exceeds the threshold
AND the bootstrap interval of the change excludes 0. Calibrated on summaries of synthetic
attribution rows (a linear model's gradient x input, a_j = w_j x_j, x ~ N(0, 1)): two disjoint
halves of one dataset are flagged rarely even at a tight threshold that flags noise without the
intervals, and a doubled or removed feature is flagged every time."""

import os
import sys

import numpy as np

from audit.compare import DriftThresholds

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from drift_calibration import WEIGHTS, flagged as _flagged, summarized_run as _run  # noqa: E402  (the bench's own runs)

TIGHT = DriftThresholds(max_relative_change=0.02, min_share=0.0)  # flags sampling noise without the intervals


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
