"""Completeness-driven integrated gradients (attributions.adaptive_ig) and the completeness measure,
against independent truth: closed-form kinked and linear models, and the fixed-step code at the
commit before the feature (run from git, not hard-coded numbers)."""

import importlib.util
import os
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from attributions.integrated_gradients import integrated_gradients
from attributions.model_functions import build_model_functions
from attributions.adaptive_ig import PANEL_POINTS, adaptive_integrated_gradients
from attributions.integration_rules import check_adaptive_settings
from attributions.result import completeness_error, relative_delta

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# main's HEAD before completeness-driven IG: the fixed-step path must stay bit-for-bit what it was.
BEFORE_FEATURE = "56fad52"

RNG = np.random.default_rng(11)
W = np.array([0.7, -0.4, 1.1], dtype=np.float32)
# Inputs with w.x > 0 and kink points alpha* = C / (w.x) spread over (0, 1), off the 16-point nodes.
X = np.array([[1.0, 0.5, 0.8], [0.3, -1.0, 1.2], [2.0, 0.1, -0.2], [0.9, 0.9, 0.9], [1.5, -0.3, 0.4]], dtype=np.float32)
C = 0.37


@pytest.fixture(scope="module")
def kinked():
    """F(x) = relu(w.x - C): with a zero baseline the path has one kink, at alpha* = C / (w.x), and
    IG_i = w_i x_i (1 - alpha*) exactly (the gradient is w past the kink, 0 before)."""
    return build_model_functions(lambda inputs: tf.nn.relu(tf.linalg.matvec(inputs[0], W) - C), [(3,)], 1)


def kink_truth(x):
    s = x.astype(np.float64) @ W.astype(np.float64)  # (B,)
    return W * x * (1.0 - C / s)[:, None]  # (B, 3)


def test_fixed_16_points_miss_the_kink_and_the_adaptive_rule_meets_the_target(kinked):
    zeros, targets = [np.zeros(3, np.float32)], np.zeros(len(X), np.int32)
    fixed = integrated_gradients(kinked, [X], zeros, targets, steps=16)
    assert (fixed.completeness_error > 0.01).sum() >= 3, fixed.completeness_error  # the step is between nodes
    adaptive = adaptive_integrated_gradients(kinked, [X], zeros, targets, target=0.01, steps=16, max_steps=1024)
    assert adaptive.completeness_met.all(), adaptive.completeness_error
    assert (adaptive.completeness_error <= 0.01).all()
    truth = kink_truth(X)
    error = np.abs(adaptive.attributions[0] - truth).sum(axis=1) / np.abs(truth).sum(axis=1)
    assert (error <= 0.01).all(), error  # the attributions themselves, not only their sum
    # Rows that needed more points spent them: 16 + 2 x panel points per bisection, within max_steps.
    refined = fixed.completeness_error > 0.01
    assert (adaptive.steps_used[refined] > 16).all() and (adaptive.steps_used[~refined] == 16).all()
    assert ((adaptive.steps_used - 16) % (2 * PANEL_POINTS) == 0).all() and (adaptive.steps_used <= 1024).all()


def test_max_steps_caps_refinement_and_completeness_met_says_so(kinked):
    zeros, targets = [np.zeros(3, np.float32)], np.zeros(len(X), np.int32)
    capped = adaptive_integrated_gradients(kinked, [X], zeros, targets, target=1e-9, steps=16, max_steps=16 + 2 * PANEL_POINTS)
    assert (capped.steps_used <= 16 + 2 * PANEL_POINTS).all()
    assert not capped.completeness_met.all()
    np.testing.assert_array_equal(capped.completeness_met, capped.completeness_error <= 1e-9)


def test_linear_model_is_exact_with_one_point_and_never_refined():
    w = RNG.normal(size=(4, 2)).astype(np.float32)
    fns = build_model_functions(lambda inputs: tf.matmul(inputs[0], w), [(4,)], 2)
    x = RNG.normal(size=(6, 4)).astype(np.float32)
    targets = np.array([0, 1, 0, 1, 0, 1], np.int32)
    result = adaptive_integrated_gradients(fns, [x], [np.zeros(4, np.float32)], targets, target=1e-4, steps=1, max_steps=64)
    np.testing.assert_allclose(result.attributions[0], x * w[:, targets].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(result.steps_used, 1)
    assert result.completeness_met.all()


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
def test_adaptive_rows_do_not_depend_on_their_batch_or_the_chunk_size(kinked, chunk_size):
    zeros, targets = [np.zeros(3, np.float32)], np.zeros(len(X), np.int32)
    run = lambda x, t, c: adaptive_integrated_gradients(kinked, [x], zeros, t, target=0.002, steps=16, max_steps=512, chunk_size=c)
    alone = [run(X[i : i + 1], targets[i : i + 1], 1024) for i in range(len(X))]
    batch = run(X, targets, chunk_size)
    np.testing.assert_array_equal(batch.steps_used, [a.steps_used[0] for a in alone])
    np.testing.assert_allclose(batch.attributions[0], np.concatenate([a.attributions[0] for a in alone]), rtol=1e-6, atol=1e-7)
    # Shuffled: each row keeps its own panels.
    order = np.array([3, 0, 4, 2, 1])
    shuffled = run(X[order], targets[order], chunk_size)
    np.testing.assert_array_equal(shuffled.steps_used, batch.steps_used[order])


def test_rows_meeting_the_target_at_first_are_the_fixed_step_result_exactly(kinked):
    zeros, targets = [np.zeros(3, np.float32)], np.zeros(len(X), np.int32)
    fixed = integrated_gradients(kinked, [X], zeros, targets, steps=16)
    adaptive = adaptive_integrated_gradients(kinked, [X], zeros, targets, target=0.01, steps=16, max_steps=1024)
    kept = fixed.completeness_error <= 0.01
    assert kept.any()
    np.testing.assert_array_equal(adaptive.attributions[0][kept], fixed.attributions[0][kept])
    np.testing.assert_array_equal(adaptive.convergence_delta[kept], fixed.convergence_delta[kept])


def _fixed_ig_before_the_feature():
    """integrated_gradients as it was at BEFORE_FEATURE, loaded from git into a module of its own."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE_FEATURE}:attributions/integrated_gradients.py"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"git history not available: {error}")
    spec = importlib.util.spec_from_loader("integrated_gradients_before_feature", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "integrated_gradients_before_feature.py", "exec"), module.__dict__)
    return module.integrated_gradients


@pytest.mark.parametrize("rule,steps,chunk", [("gausslegendre", 64, 1024), ("gausslegendre", 16, 5), ("riemann_trapezoid", 20, 64)])
def test_fixed_step_path_is_bit_for_bit_what_it_was_before_the_feature(rule, steps, chunk):
    import keras

    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(3, activation="softmax")])
    fns = build_model_functions(lambda inputs: model(inputs[0], training=False), [(6,)], 3)
    x = RNG.normal(size=(9, 6)).astype(np.float32)
    targets = np.array([0, 1, 2] * 3, np.int32)
    baseline = [RNG.normal(size=6).astype(np.float32)]
    before = _fixed_ig_before_the_feature()(fns, [x], baseline, targets, steps, rule, chunk)
    now = integrated_gradients(fns, [x], baseline, targets, steps, rule, chunk)
    np.testing.assert_array_equal(now.attributions[0], before.attributions[0])
    np.testing.assert_array_equal(now.convergence_delta, before.convergence_delta)
    np.testing.assert_array_equal(now.output_change, before.output_change)


# ------------------------------------------------------------------------------------------------
# The completeness measure


def test_completeness_error_stays_meaningful_as_the_output_change_goes_to_zero():
    # Attributions that cancel (+1, -1): dF -> 0 while the attributions stay sensible.
    delta = np.full(4, 1e-3)
    output_change = np.array([1e-2, 1e-4, 5e-6, 0.0])
    mass = np.full(4, 2.0)  # sum |attr|
    error = completeness_error(delta, output_change, mass)
    np.testing.assert_allclose(error, 1e-3 / 2.0, rtol=1e-6)  # the unexplained share of the attributions
    assert relative_delta(delta, output_change)[2] > 100  # the old measure explodes on the same rows
    # An input equal to its baseline: nothing moved, nothing attributed: 0, not 0/0.
    assert completeness_error(np.zeros(1), np.zeros(1), np.zeros(1))[0] == 0.0


def test_completeness_error_is_the_relative_error_without_cancellation_and_bounded_by_2():
    # Attributions all of one sign: sum|attr| = |dF + delta|, so the measure is |delta| / |dF| when
    # the sum falls short and |delta| / |dF + delta| (the relative error / (1 + itself)) past it.
    output_change, delta = np.array([0.5, 0.5, -0.2]), np.array([-0.01, 0.01, -0.01])
    mass = np.abs(output_change + delta)
    relative = np.abs(delta) / np.abs(output_change)
    np.testing.assert_allclose(completeness_error(delta, output_change, mass), [relative[0], *(relative[1:] / (1 + relative[1:]))], rtol=1e-6)
    worst = completeness_error(np.array([-2.0]), np.array([1.0]), np.array([1.0]))  # sum attr = -1, dF = 1
    assert worst[0] == 2.0


def test_monte_carlo_rows_are_flagged_only_beyond_their_standard_error():
    delta, output_change, mass = np.array([0.05, 0.05]), np.array([0.5, 0.5]), np.array([0.5, 0.5])
    noisy = completeness_error(delta, output_change, mass, delta_stderr=np.array([0.02, 0.005]))
    assert noisy[0] == 0.0  # 0.05 < 3 x 0.02: sampling explains it
    np.testing.assert_allclose(noisy[1], (0.05 - 0.015) / 0.5, rtol=1e-6)


@pytest.mark.parametrize("target,max_steps,message", [
    (0.0, 128, "completeness_target must be a finite number > 0"),
    (float("nan"), 128, "completeness_target must be a finite number > 0"),
    (0.01, 32, "max_steps must be an integer >= steps (64)"),
])
def test_bad_adaptive_settings_are_refused_with_the_fix(target, max_steps, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_adaptive_settings(target, 64, max_steps)


def test_expected_gradients_delta_is_judged_against_its_own_monte_carlo_error():
    from attributions.expected_gradients import expected_gradients

    # A smooth model: EG's delta is pure sampling noise, so almost no row should be flagged, while
    # the plain relative error flags many at few samples.
    w = RNG.normal(size=(5, 3)).astype(np.float32)
    fns = build_model_functions(lambda inputs: tf.nn.softmax(tf.tanh(inputs[0]) @ w), [(5,)], 3)
    x = RNG.normal(size=(200, 5)).astype(np.float32)
    background = RNG.normal(size=(30, 5)).astype(np.float32)
    targets = np.zeros(200, np.int32)
    result = expected_gradients(fns, [x], [background], targets, np.arange(200, dtype=np.uint64), samples=20)
    sums = result.attributions[0].astype(np.float64).sum(axis=1)
    assert np.mean(np.abs(result.convergence_delta) > result.delta_stderr) > 0.15  # the noise is there
    assert np.mean(relative_delta(result.convergence_delta, result.output_change) > 0.05) > 0.2
    assert np.mean(result.completeness_error > 0) < 0.03  # beyond 3 standard errors: ~0.3 % expected
    # The standard error is the spread of the sum's estimate: a second seed moves the sum by about it.
    other = expected_gradients(fns, [x], [background], targets, np.arange(200, dtype=np.uint64), samples=20, seed=1)
    moved = np.abs(other.attributions[0].astype(np.float64).sum(axis=1) - sums) / (np.sqrt(2) * result.delta_stderr)
    assert 0.5 < np.median(moved) < 1.0  # |N(0, 1)| has median 0.67


def test_refining_rows_in_memory_bounded_groups_changes_nothing(kinked, monkeypatch):
    import attributions.adaptive_ig as adaptive_ig

    zeros, targets = [np.zeros(3, np.float32)], np.zeros(len(X), np.int32)
    whole = adaptive_integrated_gradients(kinked, [X], zeros, targets, target=0.002, steps=16, max_steps=512)
    monkeypatch.setattr(adaptive_ig, "PANEL_MEMORY_MIB", 0)  # one row per group
    grouped = adaptive_integrated_gradients(kinked, [X], zeros, targets, target=0.002, steps=16, max_steps=512)
    np.testing.assert_array_equal(grouped.steps_used, whole.steps_used)
    np.testing.assert_allclose(grouped.attributions[0], whole.attributions[0], rtol=1e-6, atol=1e-7)


def test_per_example_baselines_are_each_rows_own(kinked):
    # A baseline per row, shifted along w so each row's kink moves: the same closed form holds
    # with x - b in place of x, alpha* = (C - w.b) / (w.(x - b)).
    shift = np.linspace(-0.1, 0.1, len(X))[:, None].astype(np.float32) * W / np.dot(W, W)  # (B, 3), w.b = shift
    targets = np.zeros(len(X), np.int32)
    result = adaptive_integrated_gradients(kinked, [X], [shift], targets, target=0.001, steps=16, max_steps=1024)
    s_x, s_b = X.astype(np.float64) @ W, shift.astype(np.float64) @ W
    kink = (C - s_b) / (s_x - s_b)
    truth = W * (X - shift) * (1 - kink)[:, None]
    assert result.completeness_met.all()
    np.testing.assert_allclose(result.attributions[0], truth, rtol=0, atol=2e-3 * np.abs(truth).sum(axis=1).max())
