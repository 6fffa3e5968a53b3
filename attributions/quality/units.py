"""The units attributions are ranked in and deleted by, over the inputs a method attributes.

kind per input, for values of shape (*shape) per row:
  'features'   every value is a unit (tabular features, flat vectors);
  'pixels'     (height, width, channels): a pixel's channels form one unit;
  'patches'    (height, width, channels): square patches of `patch` pixels a side (the last ones
               smaller) form one unit: deletion curves on images remove regions, not single pixels;
  'positions'  (*positions, width): a position's vector is one unit (a token's embedding, a
               feature map's cell): what a layer's written per-position sums hold.
Units are numbered across the inputs, the first input's first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["Units", "build_units", "UNIT_KINDS"]

UNIT_KINDS = ("features", "pixels", "patches", "positions")


@dataclass(frozen=True)
class Units:
    """index: per input, int64 (*shape) (the unit of each value); count: units in all;
    kinds: per input, its kind (see the module)."""

    index: tuple[np.ndarray, ...]
    count: int
    kinds: tuple[str, ...]

    def totals(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """float64 (R, count): each unit's sum of `arrays` (per input (R, *shape))."""
        parts = []
        for values, index in zip(arrays, self.index):
            flat_index = index.reshape(-1)
            order = np.argsort(flat_index, kind="stable")
            flat = np.asarray(values, dtype=np.float64).reshape(len(values), -1)[:, order]
            sorted_index = flat_index[order]
            starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
            parts.append(np.add.reduceat(flat, starts, axis=1))
        return np.concatenate(parts, axis=1)

    def expand(self, unit_mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """bool (R, count) per unit -> one bool (R, *shape) per input, True where its unit is."""
        return tuple(unit_mask[:, index] for index in self.index)


def build_units(kinds: Sequence[str], shapes: Sequence[tuple[int, ...]], patch: Optional[int] = None) -> Units:
    """Units over inputs of these kinds and per-row shapes; patch: the side of 'patches' in pixels."""
    index, offset = [], 0
    for kind, shape in zip(kinds, shapes):
        local = _local_index(kind, tuple(shape), patch)
        index.append(local + offset)
        offset += int(local.max()) + 1 if local.size else 0
    return Units(tuple(index), offset, tuple(kinds))


def _local_index(kind: str, shape: tuple[int, ...], patch: Optional[int]) -> np.ndarray:
    if kind == "features":
        return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if kind == "positions":
        cells = np.arange(int(np.prod(shape[:-1])), dtype=np.int64).reshape(shape[:-1])
        return np.broadcast_to(cells[..., np.newaxis], shape).copy()
    if kind not in ("pixels", "patches") or len(shape) != 3:
        raise ValueError(f"unit kind {kind!r} for values of shape {shape}: expected one of {UNIT_KINDS}, "
                         f"'pixels'/'patches' for (height, width, channels).")
    height, width, _ = shape
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    if kind == "pixels":
        cells = rows * width + cols
    else:
        if not patch or patch < 1:
            raise ValueError(f"'patches' need a patch side of at least 1 pixel; got {patch!r}.")
        cells = (rows // patch) * (-(-width // patch)) + cols // patch
    return np.broadcast_to(cells[..., np.newaxis].astype(np.int64), shape).copy()
