"""Infidelity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations"), defined as
captum.metrics.infidelity defines it: for perturbations I of an input x (perturbed input x - I),

    infidelity(x) = mean_s ( I_s . A(x)  -  (f(x) - f(x - I_s)) )^2

and with normalize=True the attributions are first scaled by the beta that minimises it,
beta = sum_s (I_s . A)(f(x) - f(x - I_s)) / sum_s (I_s . A)^2 (0 when the denominator is 0).
`share` divides the normalised value by mean_s (f(x) - f(x - I_s))^2: the part of the
perturbations' effect on the score that the attributions leave unexplained, in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

__all__ = ["InfidelityResult", "infidelity"]


@dataclass(frozen=True)
class InfidelityResult:
    """Each float64 (R,): infidelity (captum, normalize=False), normalized (normalize=True),
    effect (mean_s of the squared score change), share (normalized / effect; NaN where the
    perturbations did not move the score)."""

    infidelity: np.ndarray
    normalized: np.ndarray
    effect: np.ndarray

    @property
    def share(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.effect > 0, self.normalized / self.effect, np.nan)


def infidelity(
    score: Callable[[tuple], np.ndarray],
    inputs: Sequence[np.ndarray],
    attributions: Sequence[np.ndarray],
    perturbation: Callable[[int], tuple],
    samples: int,
    samples_per_call: int = 1,
) -> InfidelityResult:
    """inputs/attributions: (R, *shape) per input; perturbation(s): the s-th draw I_s, (R, *shape)
    per input (drawn samples_per_call at a time: an image batch's S copies need not fit in memory
    at once); score: inputs (N, *shape) -> float (N,) (each row's explained score; the caller
    fixes targets, N is R x the samples in the call, sample-major)."""
    inputs = tuple(np.asarray(x, dtype=np.float32) for x in inputs)
    rows = len(inputs[0])
    at_inputs = np.asarray(score(inputs), dtype=np.float64)  # (R,)
    explained, changes = [], []
    step = max(1, samples_per_call)
    for first in range(0, samples, step):
        draws = [tuple(np.asarray(n, dtype=np.float32) for n in perturbation(s)) for s in range(first, min(first + step, samples))]
        moved = tuple(np.concatenate([x - d[i] for d in draws]) for i, x in enumerate(inputs))
        changes += list(at_inputs - np.asarray(score(moved), dtype=np.float64).reshape(len(draws), rows))
        explained += [sum((n.astype(np.float64) * np.asarray(a, np.float64)).reshape(rows, -1).sum(axis=1)
                          for n, a in zip(noise, attributions)) for noise in draws]
    explained, changes = np.stack(explained), np.stack(changes)  # (S, R)
    s_aa, s_af, s_ff = (explained ** 2).sum(axis=0), (explained * changes).sum(axis=0), (changes ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        beta = np.where(s_aa != 0, s_af / s_aa, 0.0)
    return InfidelityResult(
        infidelity=((explained - changes) ** 2).mean(axis=0),
        normalized=(beta ** 2 * s_aa - 2 * beta * s_af + s_ff) / samples,
        effect=s_ff / samples,
    )
