import numpy as np
import pytest

from attributions.integration_rules import RULES, integration_rule


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("steps", [2, 5, 64])
def test_weights_sum_to_one_and_alphas_in_unit_interval(rule, steps):
    alphas, weights = integration_rule(rule, steps)
    assert alphas.shape == weights.shape == (steps,)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all((alphas >= 0) & (alphas <= 1))
    assert np.all(weights > 0)


@pytest.mark.parametrize("steps", [1, 3, 8])
def test_gauss_legendre_is_exact_up_to_degree_2n_minus_1(steps):
    alphas, weights = integration_rule("gausslegendre", steps)
    for degree in range(2 * steps):
        assert weights @ alphas**degree == pytest.approx(1.0 / (degree + 1), rel=1e-12)
    # ...and not beyond: degree 2n is integrated with an error.
    assert abs(weights @ alphas ** (2 * steps) - 1.0 / (2 * steps + 1)) > 1e-13


@pytest.mark.parametrize("rule", ["riemann_middle", "riemann_trapezoid"])
def test_midpoint_and_trapezoid_integrate_linear_functions_exactly(rule):
    alphas, weights = integration_rule(rule, 7)
    assert weights @ (3 * alphas + 2) == pytest.approx(3.5, rel=1e-12)


def test_trapezoid_weights_sum_to_one_not_captum_bias():
    _, weights = integration_rule("riemann_trapezoid", 50)
    # Captum/alibi's trapezoid weights sum to (n-1)/n = 0.98 at n = 50.
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert weights[0] == pytest.approx(weights[1] / 2)


def test_left_and_right_riemann_points():
    left, _ = integration_rule("riemann_left", 4)
    right, _ = integration_rule("riemann_right", 4)
    np.testing.assert_allclose(left, [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(right, [0.25, 0.5, 0.75, 1.0])


def test_bad_rule_and_steps_are_rejected_with_the_choices():
    with pytest.raises(ValueError, match="unknown integration rule 'simpson'.*gausslegendre"):
        integration_rule("simpson", 4)
    with pytest.raises(ValueError, match="steps must be a positive integer; got 0"):
        integration_rule("gausslegendre", 0)
    with pytest.raises(ValueError, match="needs steps >= 2"):
        integration_rule("riemann_trapezoid", 1)


def test_rules_are_computed_once_per_rule_and_steps_and_shared_read_only():
    from attributions.integration_rules import _cached_rule

    _cached_rule.cache_clear()
    first = integration_rule("gausslegendre", 256)
    again = integration_rule("gausslegendre", 256)
    assert again[0] is first[0] and again[1] is first[1]  # the second call is a lookup, not a solve
    assert _cached_rule.cache_info().misses == 1
    assert abs(first[1].sum() - 1.0) < 1e-12 and not first[0].flags.writeable
    with pytest.raises(ValueError):
        first[0][0] = 0.5
