"""Completeness-driven integrated gradients: more points only for the rows that need them.

Every row is first integrated exactly as `integrated_gradients` does, at the configured `steps`.
A row whose `completeness_error` (attributions.result) is over `target` is then re-integrated on a
composite rule: the path [0, 1] is split into panels, each integrated with a fixed
`panel_points`-point Gauss-Legendre rule, and each round bisects the row's panel with the largest
error indicator, until the row meets the target or one more bisection would pass `max_steps`
gradient evaluations. A ReLU network's integrand is piecewise smooth with kinks (a unit switching
on or off along the path), where any fixed global rule converges slowly; bisection puts points
where the kinks are and leaves the smooth stretches alone.

Per-panel error indicator. Along the path gamma(alpha) = b + alpha d (d = x - b), the fundamental
theorem of calculus holds on every panel [a, c]:

    sum_i d_i integral_a^c dF/dx_i(gamma(alpha)) d alpha = F(gamma(c)) - F(gamma(a)),

so each panel has its own exact completeness residual r_p = d . est_p - (F(gamma(c)) - F(gamma(a)))
at the cost of one forward pass per new panel end (the midpoint of a bisected panel); the
residuals sum to the row's convergence delta. The panel with the largest |r_p| is bisected.
(|r_p| can be small by cancellation inside a panel, like the global delta; it is a measure of the
quadrature error of the scalar the target is stated on, not a bound on every feature's error.)

Cost: `steps_used` counts the gradient evaluations spent on the row: `steps` for the first pass,
plus 2 x panel_points per bisection (the bisected panel's own points are discarded; the initial
`steps` points are the first panel). Forward passes at panel midpoints (one per bisection, about a
third of a gradient evaluation each) are not counted in it.

Batch invariance: every decision (which rows refine, which panel, when to stop) depends only on the
row's own values, and ties go to the lower panel, so a row gets the same panels in any batch, at
any chunk size, on any runner.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

from attributions.integrated_gradients import DEFAULT_STEPS, integrated_gradients
from attributions.integration_rules import DEFAULT_MAX_STEPS, DEFAULT_RULE, check_adaptive_settings, integration_rule
from attributions.model_functions import ModelFunctions
from attributions.result import Attributions, attribution_mass, attribution_sums, completeness_error
from attributions.sampling import validate_chunk_size

__all__ = ["adaptive_integrated_gradients", "DEFAULT_MAX_STEPS", "PANEL_POINTS", "check_adaptive_settings"]

# Gauss-Legendre points per panel: exact on polynomials of degree 15 between kinks.
PANEL_POINTS = 8
# Memory for the refining rows' per-panel estimates (float64, rows x panels x input values).
PANEL_MEMORY_MIB = 256


def adaptive_integrated_gradients(
    fns: ModelFunctions,
    inputs: Sequence[np.ndarray],
    baselines: Sequence[np.ndarray],
    targets: np.ndarray,
    target: float,
    steps: int = DEFAULT_STEPS,
    max_steps: int = DEFAULT_MAX_STEPS,
    rule: str = DEFAULT_RULE,
    chunk_size: int = 1024,
    outputs_at_inputs: Optional[np.ndarray] = None,
    panel_points: int = PANEL_POINTS,
    mass: Callable[[tuple], np.ndarray] = attribution_mass,
) -> Attributions:
    """Integrated gradients of B examples, refined per row until completeness_error <= target.

    Args:
      inputs, baselines, targets, steps, rule, chunk_size, outputs_at_inputs: as
        `integrated_gradients` (the first pass, bit-for-bit the fixed-step result).
      target: completeness_error a row must reach (e.g. 0.01).
      max_steps: most gradient evaluations per row (first pass included).
      panel_points: Gauss-Legendre points per panel of the refinement.
      mass: as `integrated_gradients`: the scale of completeness_error, in the first pass and in
        the refinement alike, so `completeness_met` means what the written rows show.
    Returns: as `integrated_gradients`, plus steps_used int32 (B,) and completeness_met bool (B,).
    """
    check_adaptive_settings(target, steps, max_steps, panel_points)
    first = integrated_gradients(fns, inputs, baselines, targets, steps, rule, chunk_size, outputs_at_inputs, mass)
    error = first.completeness_error.astype(np.float64)  # (B,)
    steps_used = np.full(len(error), steps, dtype=np.int32)
    refine = np.flatnonzero((error > target) & (steps + 2 * panel_points <= max_steps))  # (R,)
    if not refine.size:
        return dataclasses.replace(first, steps_used=steps_used, completeness_met=error <= target)

    attributions = tuple(a.copy() for a in first.attributions)
    delta, output_change, error = first.convergence_delta.copy(), first.output_change.copy(), first.completeness_error.copy()
    # Rows are refined in groups whose panel estimates fit PANEL_MEMORY_MIB (rows are independent,
    # so the grouping changes nothing but memory).
    full_baselines = tuple(
        np.broadcast_to(np.asarray(b, dtype=np.float32), np.shape(x)) for b, x in zip(baselines, inputs)
    )  # each (B, *shape): a view, shared or per-example baselines alike
    values_per_row = sum(int(np.prod(np.shape(x)[1:])) for x in inputs) * (1 + (max_steps - steps) // (2 * panel_points))
    group = max(1, (PANEL_MEMORY_MIB << 20) // (8 * values_per_row))
    for g0 in range(0, len(refine), group):
        rows = refine[g0 : g0 + group]  # (R,)
        part_inputs = tuple(np.asarray(x, dtype=np.float32)[rows] for x in inputs)  # each (R, *shape)
        part_baselines = tuple(b[rows] for b in full_baselines)  # each (R, *shape)
        row_targets = np.asarray(targets, dtype=np.int32)[rows]
        at_inputs = fns.predict(part_inputs, chunk_size) if outputs_at_inputs is None else np.asarray(outputs_at_inputs)[rows]
        panels = _Panels(fns, part_inputs, part_baselines, row_targets, at_inputs, steps, max_steps, panel_points, chunk_size, mass)
        panels.run(first.convergence_delta.astype(np.float64)[rows], target)
        for whole, part in zip(attributions, panels.attributions()):
            whole[rows] = part
        delta[rows], output_change[rows] = panels.delta.astype(np.float32), panels.output_change.astype(np.float32)
        error[rows] = panels.error.astype(np.float32)
        steps_used[rows] = panels.steps_used
    return Attributions(
        attributions=attributions,
        convergence_delta=delta,
        output_change=output_change,
        completeness_error=error,
        steps_used=steps_used,
        completeness_met=error <= target,
    )


class _Panels:
    """The composite rule of R rows: up to P panels each, bisected in rounds (module docstring).

    lo, hi, f_lo, f_hi, residual: float64 (R, P), panel ends, F at them, the panel's residual;
    est: one float64 (R, P, K_i) per input, integral over the panel of dF/dx (K_i = prod(shape_i)).
    """

    def __init__(self, fns, inputs, baselines, targets, at_inputs, steps, max_steps, panel_points, chunk_size, mass=attribution_mass):
        self.fns, self.targets, self.p, self.mass = fns, targets, panel_points, mass
        self.chunk_size = validate_chunk_size(chunk_size)
        self.steps, self.max_steps = steps, max_steps
        self.shapes = tuple(x.shape[1:] for x in inputs)
        self.baselines = baselines
        self.diffs = tuple(x - b for x, b in zip(inputs, baselines))  # each (R, *shape), as integrated_gradients
        rows = np.arange(len(targets))
        at_baselines = fns.predict(baselines, chunk_size)  # (R, C)
        f0 = at_baselines[rows, targets].astype(np.float64)
        f1 = np.asarray(at_inputs)[rows, targets].astype(np.float64)
        self.output_change = f1 - f0  # (R,)
        r, panels = len(targets), 1 + (max_steps - steps) // (2 * panel_points)
        self.lo, self.hi = np.zeros((r, panels)), np.ones((r, panels))
        self.f_lo, self.f_hi = np.repeat(f0[:, None], panels, 1), np.repeat(f1[:, None], panels, 1)
        self.residual = np.zeros((r, panels))
        self.count = np.ones(r, dtype=np.int64)  # panels in use; slot 0 is the first pass's [0, 1]
        self.est = [np.zeros((r, panels, int(np.prod(s))), dtype=np.float64) for s in self.shapes]
        self.steps_used = np.full(r, steps, dtype=np.int32)
        self.error = np.full(r, np.inf)
        self.delta = np.zeros(r)
        self.nodes, self.weights = integration_rule("gausslegendre", panel_points)  # (p,), (p,)

    def run(self, first_delta: np.ndarray, target: float) -> None:
        # The first pass's panel [0, 1] is bisected first; its estimate is never summed again.
        self.residual[:, 0] = first_delta
        while True:
            active = np.flatnonzero((self.error > target) & (self.steps_used + 2 * self.p <= self.max_steps))  # (A,)
            if not active.size:
                return
            self._bisect(active)
            self._update_error()

    def _bisect(self, active: np.ndarray) -> None:
        used = np.arange(self.lo.shape[1])[None, :] < self.count[active, None]  # (A, P)
        worst = np.argmax(np.where(used, np.abs(self.residual[active]), -1.0), axis=1)  # (A,) first of ties
        lo, hi = self.lo[active, worst], self.hi[active, worst]  # (A,)
        mid = 0.5 * (lo + hi)
        f_mid = self._values_at(active, mid)  # (A,)
        left = self._panel_integrals(active, lo, mid)  # each (A, K)
        right = self._panel_integrals(active, mid, hi)
        new = self.count[active]  # (A,) slot of the right half
        for slot, a, c, fa, fc, parts in ((worst, lo, mid, self.f_lo[active, worst], f_mid, left),
                                          (new, mid, hi, f_mid, self.f_hi[active, worst], right)):
            self.lo[active, slot], self.hi[active, slot] = a, c
            self.f_lo[active, slot], self.f_hi[active, slot] = fa, fc
            dot = 0.0
            for est, part, diff in zip(self.est, parts, self.diffs):
                est[active, slot] = part
                dot = dot + (part * diff[active].reshape(len(active), -1)).sum(axis=1)  # (A,)
            self.residual[active, slot] = dot - (fc - fa)
        self.count[active] += 1
        self.steps_used[active] += 2 * self.p

    def _values_at(self, rows: np.ndarray, alphas: np.ndarray) -> np.ndarray:
        """F[target] at float32(b + alpha d) for each row, float64 (A,), as the path builds points."""
        points = tuple(
            (b[rows].astype(np.float64) + alphas.reshape(-1, *[1] * len(s)) * d[rows].astype(np.float64)).astype(np.float32)
            for b, d, s in zip(self.baselines, self.diffs, self.shapes)
        )  # each (A, *shape)
        outputs = self.fns.predict(points, self.chunk_size)  # (A, C)
        return outputs[np.arange(len(rows)), self.targets[rows]].astype(np.float64)

    def _panel_integrals(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> list:
        """integral_lo^hi dF/dx(gamma(alpha)) d alpha per row, one float64 (A, K_i) per input: the
        panel's Gauss-Legendre rule as a path of its own, from gamma(lo) along (hi - lo) d."""
        width = hi - lo  # (A,)
        starts = tuple(
            (b[rows].astype(np.float64) + lo.reshape(-1, *[1] * len(s)) * d[rows].astype(np.float64)).astype(np.float32)
            for b, d, s in zip(self.baselines, self.diffs, self.shapes)
        )  # each (A, *shape)
        spans = tuple(
            (width.reshape(-1, *[1] * len(s)) * d[rows].astype(np.float64)).astype(np.float32)
            for d, s in zip(self.diffs, self.shapes)
        )  # each (A, *shape)
        block = max(1, self.chunk_size // self.p)
        out = [np.zeros((len(rows), int(np.prod(s)))) for s in self.shapes]
        for e0 in range(0, len(rows), block):
            ex = slice(e0, e0 + block)
            sums = self.fns.path_gradients(
                [s[ex] for s in starts], [s[ex] for s in spans], self.nodes, self.weights, self.targets[rows[ex]], pad_to=block,
            )  # each (e, *shape): sum_k w_k dF/dx at the panel's points
            for o, part in zip(out, sums):
                o[ex] = part.reshape(len(part), -1) * width[ex, None]
        return out

    def _totals(self) -> list:
        """Sum over each row's panels in use (slot 0 only once bisected), one (R, K_i) per input."""
        used = (np.arange(self.lo.shape[1])[None, :] < self.count[:, None]) & (self.count[:, None] > 1)  # (R, P)
        return [(est * used[..., None]).sum(axis=1) for est in self.est]

    def attributions(self) -> tuple:
        """float32 (R, *shape) per input: d x the sum of the panels' integrals."""
        return tuple(
            (d.astype(np.float64) * t.reshape(d.shape)).astype(np.float32) for d, t in zip(self.diffs, self._totals())
        )

    def _update_error(self) -> None:
        attributions = self.attributions()
        self.delta = attribution_sums(attributions) - self.output_change  # (R,)
        self.error = completeness_error(self.delta, self.output_change, self.mass(attributions)).astype(np.float64)
