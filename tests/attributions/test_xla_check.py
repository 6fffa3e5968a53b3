"""attributions.xla_check: the agreement rule, and XLA-compiled model functions against the kernels'."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from attributions.integrated_gradients import integrated_gradients
from attributions.model_functions import build_model_functions, padded_rows
from attributions.xla_check import compare_attributions, compile_failure, describe_engines, is_faster, row_differences


def test_row_differences_are_relative_l1_over_every_input():
    kernel = (np.array([[1.0, -1.0], [0.0, 0.0]]), np.array([[2.0], [0.0]]))  # masses 4 and 0
    xla = (np.array([[1.1, -1.0], [0.0, 0.0]]), np.array([[2.0], [0.001]]))
    differences, mismatched = row_differences(kernel, xla)
    np.testing.assert_allclose(differences, [0.1 / 4, 0.001])  # an all-zero row: the absolute sum
    assert mismatched == 0


def test_agreement_within_the_bound_keeps_xla():
    kernel = (np.ones((3, 4)),)
    decision = compare_attributions(kernel, (kernel[0] + 1e-7,), bound=0.05)
    assert decision.used and decision.outcome == "agreed" and decision.rows_checked == 3
    assert decision.largest_difference == pytest.approx(1e-7)


def test_one_row_beyond_the_bound_falls_back_and_names_it():
    kernel = np.ones((3, 4))
    moved = kernel.copy()
    moved[2] *= 1.3  # 30 % of row 2's mass
    decision = compare_attributions((kernel,), (moved,), bound=0.05)
    assert not decision.used and decision.outcome == "disagreed"
    assert "row 2" in decision.reason and "0.3" in decision.reason and "bound 0.05" in decision.reason


def test_finite_under_one_path_only_falls_back():
    kernel = np.ones((2, 3))
    xla = kernel.copy()
    xla[1, 0] = np.nan
    decision = compare_attributions((kernel,), (xla,), bound=0.5)
    assert not decision.used and "1 of 2 checked rows" in decision.reason
    # Rows that are not finite under both paths take no part.
    both = (np.array([[np.inf, 1.0], [1.0, 1.0]]),)
    assert compare_attributions(both, both, bound=0.05).used


def test_an_agreeing_xla_that_was_slower_is_turned_down_with_its_times():
    agreed = compare_attributions((np.ones((2, 2)),), (np.ones((2, 2)),), bound=0.05)
    assert is_faster(0.9, 1.0) and not is_faster(1.0, 1.0)
    slower = agreed.slower(kernel_seconds=0.4, xla_seconds=0.9)
    assert not slower.used and slower.outcome == "slower" and slower.seconds == {"kernels": 0.4, "xla": 0.9}
    assert "slower (0.9 s against 0.4 s" in slower.reason
    kept = agreed.timed(0.4, 0.3)
    assert kept.used and kept.outcome == "agreed" and kept.to_dict()["seconds"] == {"kernels": 0.4, "xla": 0.3}
    line = describe_engines("auto", True, 0.05, on_xla=0, failed=0, disagreed=0, largest_difference=1e-7, slower=2)
    assert line.startswith("2 engine(s) found XLA agreeing but slower")


def test_compile_failure_keeps_the_first_line_of_the_message():
    decision = compile_failure(ValueError("Detected unsupported operations: UniqueV2\nstack trace..."))
    assert not decision.used and decision.outcome == "failed"
    assert "ValueError: Detected unsupported operations: UniqueV2" in decision.reason and "stack" not in decision.reason


def test_the_manifest_line_counts_engines():
    line = describe_engines("auto", True, 0.05, on_xla=2, failed=0, disagreed=0, largest_difference=3e-7)
    assert line.startswith("2 engine(s) kept XLA") and "3e-07" in line
    line = describe_engines("auto", True, 0.05, on_xla=0, failed=1, disagreed=1, largest_difference=0.2)
    assert "1 engine(s) could not compile" in line and "1 engine(s) found XLA's attributions beyond 0.05" in line
    assert describe_engines("off", True, 0.05, 0, 0, 0, None).startswith("xla is 'off'")
    assert "does not run the gradient calls" in describe_engines("auto", False, 0.05, 0, 0, 0, None)
    assert describe_engines("auto", True, 0.05, 0, 0, 0, None).startswith("no batch was attributed")


def test_padded_rows_are_powers_of_two_up_to_the_block():
    assert [padded_rows(n, 1024) for n in (1, 3, 320, 1000, 1024, 2000)] == [1, 4, 512, 1024, 1024, 2000]
    assert padded_rows(300, None) == 300


def _mlp():
    tf.keras.utils.set_random_seed(4)
    return tf.keras.Sequential([
        tf.keras.Input((7,)), tf.keras.layers.Dense(16, activation="tanh"), tf.keras.layers.Dense(3, activation="softmax"),
    ])


def _functions(model, xla):
    return build_model_functions(lambda inputs: model(inputs[0], training=False), [(7,)], 3, xla=xla)


def test_xla_gradients_and_integrated_gradients_match_the_kernels():
    model = _mlp()
    kernels, compiled = _functions(model, False), _functions(model, True)
    x = np.random.default_rng(0).normal(size=(37, 7)).astype(np.float32)  # not a power of two: padded
    targets = np.full(37, -1, np.int32)
    _, expected, used = kernels.gradients([x], targets)
    _, grads, used_xla = compiled.gradients([x], targets, pad_to=64)
    np.testing.assert_array_equal(used, used_xla)
    np.testing.assert_allclose(grads[0], expected[0], rtol=1e-5, atol=1e-7)
    baseline = np.zeros(7, np.float32)
    a = integrated_gradients(kernels, [x], [baseline], used, steps=32, chunk_size=256)
    b = integrated_gradients(compiled, [x], [baseline], used, steps=32, chunk_size=256)
    assert compare_attributions(a.attributions, b.attributions, 1e-5).used
    assert np.abs(b.completeness_error).max() < 1e-3  # completeness still holds on the XLA path


def test_xla_padding_does_not_change_a_rows_gradient():
    compiled = _functions(_mlp(), True)
    x = np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32)
    targets = np.zeros(5, np.int32)
    _, alone, _ = compiled.gradients([x], targets)  # (5 rows)
    _, padded, _ = compiled.gradients([x], targets, pad_to=16)  # padded to 8 rows
    np.testing.assert_allclose(padded[0], alone[0], rtol=1e-6, atol=1e-8)


def set_difference_output(inputs):
    """x w plus 0 x the count of x's values missing from a list (ListDiff, whose output size depends
    on the values): TensorFlow's kernels run it; XLA cannot compile it."""
    x = inputs[0]
    kept = tf.raw_ops.ListDiff(x=tf.reshape(x, [-1]), y=tf.constant([1e9]))[0]
    return tf.reduce_sum(x, axis=1, keepdims=True) + 0.0 * tf.stop_gradient(tf.cast(tf.size(kept), tf.float32))


def test_a_graph_xla_cannot_compile_raises_on_the_first_call():
    x = np.ones((4, 3), np.float32)
    _, grads, _ = build_model_functions(set_difference_output, [(3,)], 1, xla=False).gradients([x], np.zeros(4, np.int32))
    np.testing.assert_array_equal(grads[0], 1.0)  # the kernels run it
    with pytest.raises(tf.errors.OpError, match="ListDiff"):
        build_model_functions(set_difference_output, [(3,)], 1, xla=True).gradients([x], np.zeros(4, np.int32))
