"""Drift beyond noise on whole pipeline runs (issue 27): a Keras MLP trained on scikit-learn's
breast cancer data, two disjoint random halves of the data each run through the real pipeline
(integrated gradients, default settings, bootstrap of 200 replicates) and compared at the default
thresholds: no feature of the overall group is flagged, and a tight threshold (10 %) flags several
by itself but few once the change must also be beyond noise; half B explained by a "retrained" copy of the model
(one important feature's first-layer weights doubled, another's zeroed) flags both, and no
untouched feature. Two repetitions of bench/drift_calibration_pipeline.py's own runs."""

import os
import sys

import numpy as np
import pytest

from audit.compare import DriftThresholds

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench"))
from drift_calibration_pipeline import (  # noqa: E402  (the bench's own builders)
    breast_cancer_rows, overall_shares, pipeline_run, repetition, retrained_copy, top_features, train_mlp, write_rows,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(features, labels, model, retrained model, (doubled, removed) feature indices, pilot shares)."""
    work = tmp_path_factory.mktemp("calibration")
    features, labels = breast_cancer_rows()
    model, accuracy = train_mlp(str(work / "mlp.keras"), features, labels, hidden=16)
    assert accuracy > 0.95  # the model learned the data: its attributions mean something
    pilot = pipeline_run(model, write_rows(str(work / "all.parquet"), features, np.arange(len(features)), labels),
                         str(work / "pilot"), features.shape[1])
    doubled, removed = top_features(pilot)
    retrained = retrained_copy(model, str(work / "retrained.keras"), doubled, removed)
    return features, labels, model, retrained, (doubled, removed), overall_shares(pilot)


def test_halves_are_not_flagged_and_a_retrained_feature_pair_is(trained, tmp_path):
    features, labels, model, retrained, changed, shares = trained
    names = {f"f{changed[0]}", f"f{changed[1]}"}
    assert min(shares[n] for n in names) >= DriftThresholds().min_share  # both changed features are judged by default
    rng = np.random.default_rng(0)
    for rep in range(2):
        directory = tmp_path / f"rep{rep}"
        directory.mkdir()
        result = repetition(rng, features, labels, model, retrained, changed, str(directory))
        halves, retrain = result["default"]["halves"], result["default"]["retrain"]
        assert names <= halves["judged"] and len(halves["judged"]) >= 5, halves["judged"]
        assert halves["flagged"] == set(), (rep, halves["flagged"])
        # the halves are not the same numbers: a tight threshold alone flags sampling noise, which
        # the intervals mostly tell apart
        tight = result["tight"]["halves"]
        assert len(tight["threshold_alone"]) >= 5 and 3 * len(tight["flagged"]) <= len(tight["threshold_alone"]), (rep, tight)
        assert retrain["detected"] and names <= retrain["flagged"], (rep, retrain["flagged"], names)
        assert retrain["others"] == set(), (rep, retrain["others"])
        assert result["class_shares"]["beyond_noise"] is False and not result["class_shares"]["reason"]
