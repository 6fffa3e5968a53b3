"""AttributeBatches' background summaries: a bundle's summary is the merge of its batches'."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "audit"))
from test_summary import SPEC, _rows  # noqa: E402

from audit.summary import RunSummary  # noqa: E402
from audit.summary_accumulator import summarize_batch  # noqa: E402
from audit.summary_output import features_table  # noqa: E402
from transforms import attribute  # noqa: E402
from transforms.attribute import _BundleSummary  # noqa: E402


def _assert_same_features(a, b):
    """Equal features tables, moments to 1e-6 of the values (~N(0, 1)): batches added together are summed in float32 per
    cell of the joined batch, not of each batch. (Quantiles are exact here: every group has fewer
    rows than its sample holds.)"""
    a, b = features_table(a).to_pydict(), features_table(b).to_pydict()
    assert a.keys() == b.keys()
    for column in a:
        if column in ("mean", "mean_abs", "std"):
            np.testing.assert_allclose(a[column], b[column], rtol=1e-6, atol=1e-6)  # values ~N(0, 1)
        else:
            assert a[column] == b[column], column


def _merged(batches, example_index):
    expected = RunSummary.empty(SPEC)
    for table, inputs in batches:
        expected = expected.merge(summarize_batch(SPEC, table, inputs, example_index))
    return expected


def test_a_bundle_summary_equals_the_merge_of_its_batch_summaries():
    batches = [_rows(seed) for seed in range(4)]
    bundle = _BundleSummary(SPEC)
    for table, inputs in batches:
        bundle.add(table, inputs, np.arange(table.num_rows))
    merged = bundle.result()
    expected = _merged(batches, np.arange(12))
    assert merged.rows == expected.rows == 48 and merged.rows_not_finite == 4
    _assert_same_features(merged, expected)
    assert bundle.result() is None  # the next bundle starts empty
    bundle.close()


def test_batches_added_together_keep_each_rows_record(monkeypatch):
    # top_k: 2 rows per record; 30 rows a group, so 24 rows (2 batches) are added at once, then
    # the last one at the end. Exemplars carry their record's inputs: the joined example_index
    # must point past the records of the batches before.
    monkeypatch.setattr(attribute, "SUMMARY_ROWS", 20)
    example_index = np.repeat(np.arange(6), 2)
    batches = [(table, (inputs[0][:6], inputs[1][:6])) for table, inputs in (_rows(seed) for seed in range(3))]
    bundle = _BundleSummary(SPEC)
    for table, inputs in batches:
        bundle.add(table, inputs, example_index)
    joined, expected = bundle.result(), _merged(batches, example_index)
    assert {key: g.rows for key, g in joined.groups.items()} == {key: g.rows for key, g in expected.groups.items()}
    _assert_same_features(joined, expected)
    assert joined.exemplars.keys() == expected.exemplars.keys()
    for name, chosen in joined.exemplars.items():
        assert chosen.keys == expected.exemplars[name].keys
        np.testing.assert_array_equal(chosen.inputs, expected.exemplars[name].inputs)
        np.testing.assert_array_equal(chosen.attributions, expected.exemplars[name].attributions)
    bundle.close()


def test_a_failed_batch_raises_in_its_bundle_and_reset_drops_the_partial_summary():
    bundle = _BundleSummary(SPEC)
    table, inputs = _rows(0)
    bundle.add(table.drop(["attr_a"]), inputs, np.arange(table.num_rows))  # no attribution column
    with pytest.raises(KeyError):
        bundle.result()
    bundle.add(table, inputs, np.arange(table.num_rows))
    bundle.add(table.drop(["attr_a"]), inputs, np.arange(table.num_rows))
    bundle.reset()
    assert bundle.result() is None
    bundle.add(table, inputs, np.arange(table.num_rows))
    assert bundle.result().rows == 12  # the bundle after a reset: its own batch only
    bundle.close()
