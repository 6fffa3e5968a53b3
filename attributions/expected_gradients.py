"""Expected gradients (Erion et al. 2021, arXiv:1906.10670).

    EG_i(x) = E_{r ~ background, alpha ~ U(0, 1)} [ (x_i - r_i) * dF(r + alpha (x - r)) / dx_i ]

estimated with N Monte-Carlo samples per example. Completeness holds in expectation:
sum_i EG_i ~ F(x) - E_r[F(r)]; the convergence delta uses the mean output over the whole background.
The standard error of each feature's estimate is std_n / sqrt(N); each row reports the largest.
The standard error of sum_i EG_i (std over samples of each sample's attribution sum, / sqrt(N))
is the scale of the delta that sampling alone explains; `completeness_error` flags only the part
of |delta| beyond 3 of them.
Samples come from a generator seeded by (seed, example seed): batch invariant and reproducible.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from attributions.model_functions import ModelFunctions
from attributions.result import Attributions, attribution_mass, attribution_sums, completeness_error
from attributions.sampling import example_rng, gradients_at_points, per_example_points, sample_moments

__all__ = ["expected_gradients", "DEFAULT_SAMPLES"]

DEFAULT_SAMPLES = 200


def expected_gradients(
    fns: ModelFunctions,
    inputs: Sequence[np.ndarray],
    background: Sequence[np.ndarray],
    targets: np.ndarray,
    example_seeds: np.ndarray,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    chunk_size: int = 1024,
    background_outputs_mean: Optional[np.ndarray] = None,
    mass: Callable[[tuple], np.ndarray] = attribution_mass,
) -> Attributions:
    """Expected gradients of B examples (mass: as `integrated_gradients`).

    Args:
      inputs: one float32 array per model input, (B, *shape_i).
      background: one float32 array per model input, (R, *shape_i): reference rows.
      targets: int32 (B,) output index explained (>= 0).
      example_seeds: uint64 (B,), one per example (e.g. a hash of its key).
      samples: Monte-Carlo samples per example (default 200).
      background_outputs_mean: float (C,), mean model output over the background; computed here
        when None (pass it to avoid recomputing it for every batch).
    Returns: attributions (B, *shape_i) per input, convergence_delta, output_change, stderr,
      delta_stderr (the standard error of sum(attributions)) and completeness_error, each (B,).
    """
    if samples < 2:
        raise ValueError(f"expected gradients needs samples >= 2 to estimate its error; got {samples}.")
    inputs = tuple(np.asarray(x, dtype=np.float32) for x in inputs)
    background = tuple(np.asarray(r, dtype=np.float32) for r in background)
    num_references = len(background[0])
    if num_references < 1:
        raise ValueError("expected gradients needs at least one background row; got none.")
    targets = np.asarray(targets, dtype=np.int32)
    draws: dict[int, tuple] = {}  # per example: (reference indices (N,), alphas (N,))
    sample_sums = np.zeros((len(targets), samples))  # (B, N) each sample's attribution sum, all inputs

    def sample_one(b: int) -> tuple:
        rng = example_rng(seed, example_seeds[b])
        refs = rng.integers(0, num_references, samples)  # (N,)
        alphas = rng.random(samples, dtype=np.float32)  # (N,)
        draws[b] = (refs, alphas)
        return tuple(
            r[refs] + alphas.reshape(-1, *([1] * (x.ndim - 1))) * (x[b] - r[refs])
            for x, r in zip(inputs, background)
        )  # each (N, *shape)

    def attribution_sample(i: int, ex: slice, pts: slice, g: np.ndarray) -> np.ndarray:
        refs = np.stack([draws[b][0][pts] for b in range(ex.start, ex.stop)])  # (e, s)
        value = (inputs[i][ex, None] - background[i][refs]).astype(np.float64) * g  # (e, s, *shape)
        sample_sums[ex, pts] += value.reshape(*value.shape[:2], -1).sum(axis=2)
        return value

    build_points = per_example_points(inputs, samples, sample_one)
    blocks = gradients_at_points(fns, build_points, targets, samples, chunk_size)
    means, mean_squares = sample_moments(blocks, inputs, samples, attribution_sample)  # each (B, *shape)
    attributions = tuple(m.astype(np.float32) for m in means)
    stderr = np.zeros(len(targets))
    for mean, mean_square in zip(means, mean_squares):
        variance = np.maximum(mean_square - mean * mean, 0.0) * samples / (samples - 1)  # unbiased
        feature_stderr = np.sqrt(variance / samples).reshape(len(targets), -1)  # (B, features)
        stderr = np.maximum(stderr, feature_stderr.max(axis=1))

    if background_outputs_mean is None:
        background_outputs_mean = fns.predict(background, chunk_size).mean(axis=0)  # (C,)
    rows = np.arange(len(targets))
    output_change = fns.predict(inputs, chunk_size)[rows, targets].astype(np.float64) - np.asarray(
        background_outputs_mean, dtype=np.float64
    )[targets]
    delta = attribution_sums(attributions) - output_change
    delta_stderr = sample_sums.std(axis=1, ddof=1) / np.sqrt(samples)  # (B,)
    return Attributions(
        attributions=attributions,
        convergence_delta=delta.astype(np.float32),
        output_change=output_change.astype(np.float32),
        stderr=stderr.astype(np.float32),
        delta_stderr=delta_stderr.astype(np.float32),
        completeness_error=completeness_error(delta, output_change, mass(attributions), delta_stderr),
    )
