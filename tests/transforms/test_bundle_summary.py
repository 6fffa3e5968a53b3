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
from transforms.attribute import _BundleSummary  # noqa: E402


def test_a_bundle_summary_equals_the_merge_of_its_batch_summaries():
    batches = [_rows(seed) for seed in range(4)]
    bundle = _BundleSummary(SPEC)
    for table, inputs in batches:
        bundle.add(table, inputs, np.arange(table.num_rows))
    merged = bundle.result()
    expected = RunSummary.empty(SPEC)
    for table, inputs in batches:
        expected = expected.merge(summarize_batch(SPEC, table, inputs, np.arange(table.num_rows)))
    assert merged.rows == expected.rows == 48 and merged.rows_not_finite == 4
    assert features_table(merged).to_pydict() == features_table(expected).to_pydict()
    assert bundle.result() is None  # the next bundle starts empty
    bundle.close()


def test_a_failed_batch_raises_in_its_bundle_and_reset_drops_the_partial_summary():
    bundle = _BundleSummary(SPEC)
    table, inputs = _rows(0)
    bundle.add(table, inputs, np.arange(table.num_rows))
    bundle.add(table.drop(["attr_a"]), inputs, np.arange(table.num_rows))  # no attribution column
    with pytest.raises(KeyError):
        bundle.result()
    bundle.add(table, inputs, np.arange(table.num_rows))
    bundle.add(table.drop(["attr_a"]), inputs, np.arange(table.num_rows))
    bundle.reset()
    assert bundle.result() is None
    bundle.close()
