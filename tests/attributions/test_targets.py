import numpy as np
import pytest

from attributions.targets import TargetSpec, expand_targets

OUTPUTS = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]], dtype=np.float32)


def test_predicted_is_the_argmax():
    rows, targets = expand_targets(TargetSpec("predicted"), OUTPUTS)
    np.testing.assert_array_equal(rows, [0, 1])
    np.testing.assert_array_equal(targets, [1, 0])


def test_fixed_index_and_label():
    _, fixed = expand_targets(TargetSpec("index", index=2), OUTPUTS)
    np.testing.assert_array_equal(fixed, [2, 2])
    _, labelled = expand_targets(TargetSpec("label", column="y"), OUTPUTS, np.array([2, 1]))
    np.testing.assert_array_equal(labelled, [2, 1])
    with pytest.raises(ValueError, match="needs the label values"):
        expand_targets(TargetSpec("label", column="y"), OUTPUTS)


def test_top_k_gives_k_rows_per_example_best_first():
    rows, targets = expand_targets(TargetSpec("top_k", k=2), OUTPUTS)
    np.testing.assert_array_equal(rows, [0, 0, 1, 1])
    np.testing.assert_array_equal(targets, [1, 2, 0, 2])
    assert TargetSpec("top_k", k=2).rows_per_example == 2


def test_scalar_output_is_index_zero():
    _, targets = expand_targets(TargetSpec("predicted"), np.array([[3.0], [-1.0]]))
    np.testing.assert_array_equal(targets, [0, 0])


def test_requested_targets_need_no_model_run_except_for_top_k():
    from attributions.targets import requested_targets

    np.testing.assert_array_equal(requested_targets(TargetSpec("predicted"), 3), [-1, -1, -1])
    np.testing.assert_array_equal(requested_targets(TargetSpec("index", index=4), 2), [4, 4])
    np.testing.assert_array_equal(requested_targets(TargetSpec("label", column="y"), 2, np.array([1, 0])), [1, 0])
    with pytest.raises(ValueError, match="needs the model outputs"):
        requested_targets(TargetSpec("top_k", k=2), 2)
