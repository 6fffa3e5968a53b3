"""Quadrature rules on [0, 1] for integrated gradients' path integral.

Each rule returns ``(alphas, weights)``, both float64 (steps,): the points along the straight path
from the baseline (alpha = 0) to the input (alpha = 1) and their weights, which sum to 1, so that
``sum_s weights[s] * f(alphas[s])`` approximates ``integral_0^1 f(alpha) d alpha``.

* ``gausslegendre`` (default): exact for polynomials of degree <= 2 * steps - 1; far fewer steps for
  the same completeness error than the Riemann rules on smooth models.
* ``riemann_left`` / ``riemann_right`` / ``riemann_middle``: ``steps`` equal cells, the left end,
  right end or midpoint of each.
* ``riemann_trapezoid``: ``steps`` points including both ends, weights 1/(steps-1) with halves at
  the ends. They sum to 1 (Captum and alibi use weights summing to (steps-1)/steps, a bias we avoid).
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np

__all__ = ["RULES", "DEFAULT_RULE", "integration_rule", "DEFAULT_MAX_STEPS", "check_adaptive_settings"]

# Completeness-driven integrated gradients (attributions.adaptive_ig): most gradient evaluations
# per row by default. Its settings are checked here, with no TensorFlow import, for the launcher.
DEFAULT_MAX_STEPS = 1024

DEFAULT_RULE = "gausslegendre"


def _gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1], weights sum to 2
    return (nodes + 1.0) / 2.0, weights / 2.0


def _riemann(offset: float) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    def rule(steps: int) -> tuple[np.ndarray, np.ndarray]:
        alphas = (np.arange(steps, dtype=np.float64) + offset) / steps
        return alphas, np.full(steps, 1.0 / steps)

    return rule


def _trapezoid(steps: int) -> tuple[np.ndarray, np.ndarray]:
    if steps < 2:
        raise ValueError(
            f"integration rule 'riemann_trapezoid' needs steps >= 2 (it uses both ends of the "
            f"path); got steps={steps}. Use more steps or another rule."
        )
    alphas = np.linspace(0.0, 1.0, steps)
    weights = np.full(steps, 1.0 / (steps - 1))
    weights[[0, -1]] /= 2.0
    return alphas, weights


RULES: dict[str, Callable[[int], tuple[np.ndarray, np.ndarray]]] = {
    "gausslegendre": _gauss_legendre,
    "riemann_left": _riemann(0.0),
    "riemann_right": _riemann(1.0),
    "riemann_middle": _riemann(0.5),
    "riemann_trapezoid": _trapezoid,
}


def integration_rule(name: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (alphas, weights), float64 (steps,), for rule `name` (see module docstring)."""
    if name not in RULES:
        raise ValueError(
            f"unknown integration rule {name!r}; expected one of {sorted(RULES)}."
        )
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}.")
    return _cached_rule(name, int(steps))


@functools.lru_cache(maxsize=32)
def _cached_rule(name: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Computed once per (rule, steps) and process: Gauss-Legendre solves an eigenproblem of size
    steps (O(steps^3): ~0.7 s at 2,000 steps), which every batch would otherwise repeat. The
    arrays are read-only because every caller shares them."""
    alphas, weights = RULES[name](steps)
    alphas.setflags(write=False)
    weights.setflags(write=False)
    return alphas, weights


def check_adaptive_settings(target: float, steps: int, max_steps: int, panel_points: int = 8) -> None:
    """ValueError naming the setting when the completeness target or max_steps cannot work."""
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not np.isfinite(target) or target <= 0:
        raise ValueError(
            f"completeness_target must be a finite number > 0 (e.g. 0.01 for 1 % of the attribution mass); got {target!r}."
        )
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < steps:
        raise ValueError(
            f"max_steps must be an integer >= steps ({steps}): the gradient evaluations a row may use in all; "
            f"got {max_steps!r}. Raise max_steps or lower steps."
        )
