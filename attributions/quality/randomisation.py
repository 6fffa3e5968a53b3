"""Model-parameter randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): the
model's trained weights shuffled, so that what an attribution still shows afterwards cannot come
from what the model learned. Each weight tensor's values are permuted at random (as Quantus does for
Keras models): the same distribution of values, none of the learned structure. Works on any model
whose variables can be assigned (Keras models, SavedModels).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np

__all__ = ["shuffled_weights"]


@contextlib.contextmanager
def shuffled_weights(variables: Sequence, seed: int) -> Iterator[int]:
    """Within the block, each variable (with .numpy() and .assign()) holds its values permuted;
    afterwards its own values again, also when the block raises. Yields the count shuffled
    (variables of one value or fewer are left as they are)."""
    rng = np.random.default_rng(seed)
    saved = [np.array(v.numpy()) for v in variables]
    shuffled = 0
    try:
        for variable, values in zip(variables, saved):
            if values.size > 1:
                variable.assign(rng.permutation(values.reshape(-1)).reshape(values.shape))
                shuffled += 1
        yield shuffled
    finally:
        for variable, values in zip(variables, saved):
            variable.assign(values)
