"""Integrated gradients (Sundararajan et al. 2017, arXiv:1703.01365).

    IG_i(x) = (x_i - b_i) * integral_0^1 dF(b + alpha (x - b)) / dx_i d alpha

approximated with a quadrature rule (`integration_rules`). Completeness: sum_i IG_i = F(x) - F(b),
reported per example as the convergence delta.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from attributions.integration_rules import DEFAULT_RULE, integration_rule
from attributions.model_functions import ModelFunctions
from attributions.result import Attributions, attribution_mass, attribution_sums, completeness_error
from attributions.sampling import validate_chunk_size

__all__ = ["integrated_gradients", "DEFAULT_STEPS"]

DEFAULT_STEPS = 64


def integrated_gradients(
    fns: ModelFunctions,
    inputs: Sequence[np.ndarray],
    baselines: Sequence[np.ndarray],
    targets: np.ndarray,
    steps: int = DEFAULT_STEPS,
    rule: str = DEFAULT_RULE,
    chunk_size: int = 1024,
    outputs_at_inputs: Optional[np.ndarray] = None,
    mass: Callable[[tuple], np.ndarray] = attribution_mass,
) -> Attributions:
    """Integrated gradients of B examples.

    Args:
      inputs: one float32 array per model input, (B, *shape_i).
      baselines: one array per model input, (B, *shape_i) or (*shape_i) (broadcast to every example).
      targets: int32 (B,), output index explained for each example (must be >= 0).
      steps: number of points on the path (default 64).
      rule: quadrature rule name (default 'gausslegendre').
      chunk_size: most (examples x steps) rows evaluated in one gradient call.
      outputs_at_inputs: the model's outputs (B, C) at `inputs` when the caller has them already
        (saves one forward pass); None: computed here.
      mass: attributions -> (B,) L1 mass in completeness_error's scale (default: Σ|attr| over every
        value; at a layer, the caller's mass of what it writes, e.g. per-position sums).
    Returns: attributions (B, *shape_i) per input, convergence_delta, output_change and
      completeness_error (B,) (`attributions.result.completeness_error`).
    """
    alphas, weights = integration_rule(rule, steps)  # (S,), (S,)
    inputs = tuple(np.asarray(x, dtype=np.float32) for x in inputs)
    # One baseline row for every example (the usual case): its output is computed once.
    shared_baseline = all(np.shape(b) in (x.shape[1:], (1, *x.shape[1:])) for b, x in zip(baselines, inputs))
    baseline_rows = (
        tuple(np.asarray(b, dtype=np.float32).reshape(1, *x.shape[1:]) for b, x in zip(baselines, inputs))
        if shared_baseline else None
    )  # each (1, *shape)
    baselines = tuple(
        np.broadcast_to(np.asarray(b, dtype=np.float32), x.shape) for b, x in zip(baselines, inputs)
    )
    targets = np.asarray(targets, dtype=np.int32)
    diffs = tuple(x - b for x, b in zip(inputs, baselines))  # each (B, *shape)

    # Blocks of e examples x s points, e * s <= chunk_size (an example's points split over
    # several blocks when steps > chunk_size), at least one block per concurrent call when the
    # batch allows; points built and weighted inside the compiled call.
    chunk_size = validate_chunk_size(chunk_size)
    num_points = len(alphas)
    examples_per_block = fns.rows_per_call(len(targets), max(1, chunk_size // num_points))
    points_per_block = min(num_points, chunk_size)
    blocks = [
        (slice(e0, e0 + examples_per_block), slice(s0, s0 + points_per_block))
        for e0 in range(0, len(targets), examples_per_block) for s0 in range(0, num_points, points_per_block)
    ]

    def path_block(block: tuple[slice, slice]) -> tuple:
        ex, pts = block
        block_baselines = baseline_rows if shared_baseline else [b[ex] for b in baselines]  # (1 or e, *shape)
        return fns.path_gradients(
            block_baselines, [d[ex] for d in diffs], alphas[pts], weights[pts], targets[ex],
            pad_to=examples_per_block,
        )  # each (e, *shape) float64

    sums = [np.zeros(x.shape, dtype=np.float64) for x in inputs]  # weighted gradient sums
    for (ex, _), parts in zip(blocks, fns.map(path_block, blocks)):
        for total, part in zip(sums, parts):
            total[ex] += part
    # A model that overflows makes rows non-finite: they are flagged per row (attributions_finite)
    # and counted in the manifest, so numpy's overflow/invalid warnings would only repeat that.
    with np.errstate(over="ignore", invalid="ignore"):
        attributions = tuple((d * s).astype(np.float32) for d, s in zip(diffs, sums))

    at_inputs = fns.predict(inputs, chunk_size) if outputs_at_inputs is None else outputs_at_inputs  # (B, C)
    if shared_baseline:
        at_baselines = np.broadcast_to(fns.predict(baseline_rows), at_inputs.shape)  # (B, C)
    else:
        at_baselines = fns.predict(baselines, chunk_size)  # (B, C)
    rows = np.arange(len(targets))
    output_change = at_inputs[rows, targets].astype(np.float64) - at_baselines[rows, targets]
    with np.errstate(invalid="ignore"):  # inf - inf on those rows: NaN, flagged as above
        delta = attribution_sums(attributions) - output_change
    return Attributions(
        attributions=attributions,
        convergence_delta=delta.astype(np.float32),
        output_change=output_change.astype(np.float32),
        completeness_error=completeness_error(delta, output_change, mass(attributions)),
    )
