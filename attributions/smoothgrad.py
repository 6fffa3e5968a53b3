"""SmoothGrad (Smilkov et al. 2017, arXiv:1706.03825) and its variants.

For each example, gradients g_1..g_N at x + noise_n, noise_n ~ Normal(0, sigma^2), with
sigma = noise_fraction * (max(x) - min(x)) taken over each input tensor of the example (PAIR's
convention, "stdev_spread"; the paper recommends 10-20% of the range). Variants:

* ``smoothgrad``:    mean_n g_n
* ``smoothgrad_sq``: mean_n g_n^2
* ``vargrad``:       mean_n g_n^2 - (mean_n g_n)^2 (population variance)

Noise is drawn from a generator seeded by (seed, example seed), so an example's result does not
depend on its batch or on the chunk size.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attributions.model_functions import ModelFunctions
from attributions.result import Attributions
from attributions.sampling import example_rng, gradients_at_points, per_example_points, sample_moments

__all__ = ["smoothgrad", "VARIANTS", "DEFAULT_SAMPLES", "DEFAULT_NOISE_FRACTION"]

VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")
DEFAULT_SAMPLES = 50
DEFAULT_NOISE_FRACTION = 0.15


def smoothgrad(
    fns: ModelFunctions,
    inputs: Sequence[np.ndarray],
    targets: np.ndarray,
    example_seeds: np.ndarray,
    variant: str = "smoothgrad",
    samples: int = DEFAULT_SAMPLES,
    noise_fraction: float = DEFAULT_NOISE_FRACTION,
    seed: int = 0,
    chunk_size: int = 1024,
) -> Attributions:
    """SmoothGrad of B examples.

    Args:
      inputs: one float32 array per model input, (B, *shape_i).
      targets: int32 (B,) output index explained (>= 0).
      example_seeds: uint64 (B,), one per example (e.g. a hash of its key).
      variant: 'smoothgrad' (default), 'smoothgrad_sq' or 'vargrad'.
      samples: noisy copies per example (default 50).
      noise_fraction: noise standard deviation as a fraction of each input's value range (0.15).
      seed: run seed, combined with each example seed.
    Returns: attributions (B, *shape_i) per input.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown SmoothGrad variant {variant!r}; expected one of {list(VARIANTS)}.")
    if samples < 1:
        raise ValueError(f"samples must be >= 1; got {samples}.")
    if noise_fraction < 0:
        raise ValueError(f"noise_fraction must be >= 0; got {noise_fraction}.")
    inputs = tuple(np.asarray(x, dtype=np.float32) for x in inputs)
    targets = np.asarray(targets, dtype=np.int32)
    sigmas = tuple(
        noise_fraction * (x.reshape(len(x), -1).max(axis=1) - x.reshape(len(x), -1).min(axis=1))
        for x in inputs
    )  # each (B,)

    def sample_one(b: int) -> tuple:
        rng = example_rng(seed, example_seeds[b])
        return tuple(
            x[b] + sigma[b] * rng.standard_normal((samples, *x.shape[1:]), dtype=np.float32)
            for x, sigma in zip(inputs, sigmas)
        )  # each (samples, *shape)

    build_points = per_example_points(inputs, samples, sample_one)
    blocks = gradients_at_points(fns, build_points, targets, samples, chunk_size)
    means, mean_squares = sample_moments(blocks, inputs, samples)  # each (B, *shape)
    if variant == "smoothgrad":
        result = means
    elif variant == "smoothgrad_sq":
        result = mean_squares
    else:
        result = [np.maximum(sq - m * m, 0.0) for sq, m in zip(mean_squares, means)]
    return Attributions(attributions=tuple(r.astype(np.float32) for r in result))
