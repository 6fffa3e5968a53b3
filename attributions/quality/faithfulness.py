"""Deletion and insertion curves (Petsiuk et al. 2018, "RISE"; Samek et al. 2017): the explained
score as the units an attribution ranks first are replaced by the baseline (deletion: the score
should fall fast) or, starting from the baseline, restored to the input's values (insertion: it
should rise fast); the same for a random order, the yardstick. A faithful attribution has a
smaller deletion area and a larger insertion area than a random order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from attributions.quality.units import Units

__all__ = ["FaithfulnessCurves", "deletion_insertion", "area_under"]


@dataclass(frozen=True)
class FaithfulnessCurves:
    """fractions: float64 (K+1,), the share of units replaced at each point (0 .. 1); each curve
    float64 (R, K+1): the explained score of each row at those points."""

    fractions: np.ndarray
    deletion: np.ndarray
    deletion_random: np.ndarray
    insertion: np.ndarray
    insertion_random: np.ndarray

    def deletion_gap(self) -> np.ndarray:
        """(R,) area under the random order's deletion curve minus the attribution order's: > 0
        when removing what the attribution ranks first lowers the score faster than chance."""
        return area_under(self.fractions, self.deletion_random) - area_under(self.fractions, self.deletion)

    def insertion_gap(self) -> np.ndarray:
        """(R,) area under the attribution order's insertion curve minus the random order's."""
        return area_under(self.fractions, self.insertion) - area_under(self.fractions, self.insertion_random)


def area_under(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """(R,) trapezoid area of each row of `curves` (R, K+1) over `fractions` (K+1,) in [0, 1]."""
    widths = np.diff(fractions)  # (K,)
    return ((curves[:, 1:] + curves[:, :-1]) / 2.0 * widths).sum(axis=1)


def deletion_insertion(
    score: Callable[[tuple], np.ndarray],
    inputs: Sequence[np.ndarray],
    baselines: Sequence[np.ndarray],
    unit_attributions: np.ndarray,
    units: Units,
    steps: int,
    seed: int,
    points_per_call: int = 1,
) -> FaithfulnessCurves:
    """Deletion and insertion curves of R rows.

    score: inputs (one (R, *shape) array per input) -> float (R,) explained scores (the caller
      fixes each row's target). inputs: (R, *shape) per input; baselines: (R or 1, *shape) per input.
    unit_attributions: (R, units.count) signed attribution of each unit; units ranked highest first.
    steps: points after the start (K); at point k, round(k x units / K) units are replaced.
    seed: the random order's (one permutation per row, the same for a given seed).
    points_per_call: curve points scored in one call (score then takes R x that many rows).
    """
    inputs = tuple(np.asarray(x, dtype=np.float32) for x in inputs)
    baselines = tuple(np.broadcast_to(np.asarray(b, dtype=np.float32), x.shape) for b, x in zip(baselines, inputs))
    rows, count = unit_attributions.shape
    steps = max(1, min(int(steps), count))
    replaced = np.round(np.arange(steps + 1) * count / steps).astype(np.int64)  # (K+1,)
    fractions = replaced / count
    by_attribution = _positions(np.argsort(-unit_attributions, axis=1, kind="stable"))  # (R, U)
    rng = np.random.default_rng(seed)
    by_chance = _positions(np.stack([rng.permutation(count) for _ in range(rows)]) if rows else np.zeros((0, count), np.int64))
    curves = {}
    step = max(1, points_per_call)
    for name, positions in (("", by_attribution), ("_random", by_chance)):
        deletion, insertion = np.empty((rows, steps + 1)), np.empty((rows, steps + 1))
        for first in range(0, steps + 1, step):
            points = range(first, min(first + step, steps + 1))
            masks = [units.expand(positions < replaced[k]) for k in points]  # True: replaced by the baseline (deletion)
            for curve, deleting in ((deletion, True), (insertion, False)):
                # deletion: the masked units take the baseline's values; insertion: the input's
                values = tuple(np.concatenate([np.where(m[i], b, x) if deleting else np.where(m[i], x, b) for m in masks])
                               for i, (b, x) in enumerate(zip(baselines, inputs)))
                curve[:, first:first + len(points)] = np.asarray(score(values)).reshape(len(points), rows).T
        curves["deletion" + name], curves["insertion" + name] = deletion, insertion
    return FaithfulnessCurves(fractions, **curves)


def _positions(order: np.ndarray) -> np.ndarray:
    """(R, U) order (unit ids, first first) -> (R, U) each unit's place in it."""
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(order.shape[1])[np.newaxis, :].repeat(len(order), axis=0), axis=1)
    return positions
