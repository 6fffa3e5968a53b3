"""Players of the model-agnostic methods (sampled Shapley, KernelSHAP, occlusion): which input
elements move together. Pure numpy, no Beam.

A player is a set of input elements switched between the row's value and a reference value as
one. `players` gives, per method input, an int32 array of that input's shape (no batch axis)
whose entries are player indices 0..P-1: every element belongs to exactly one player. One column
per player is the default (a scalar column, or a whole (k,) column); `--groups` joins columns, and
images are cut into patches (`patch_players`).

A coalition is a bool (P,) vector: True = the player takes the row's value, False = the reference.
A method's per-player values (B, P) become per-element attributions by `spread`: each element
gets its player's value divided by the player's size, so the elements of a player add up to the
player's value and the efficiency axiom (sum of attributions = F(x) - F(reference)) holds over
the written columns as over the players.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["element_players", "patch_players", "player_count", "player_sizes", "spread", "blend"]


def element_players(shapes: Sequence[tuple[int, ...]]) -> tuple[np.ndarray, ...]:
    """One player per input element: int32 arrays of `shapes`, numbered across inputs in order."""
    players, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        players.append(np.arange(start, start + size, dtype=np.int32).reshape(shape))
        start += size
    return tuple(players)


def patch_players(shape: tuple[int, ...], patch: int, first: int = 0) -> np.ndarray:
    """(H, W[, C]) int32: square patches of `patch` x `patch` pixels (all channels together), row
    by row, numbered from `first`; edge patches are smaller when patch does not divide H or W."""
    if patch < 1:
        raise ValueError(f"patch size must be >= 1 pixel; got {patch}.")
    height, width = shape[0], shape[1]
    across = -(-width // patch)
    rows = np.arange(height)[:, None] // patch  # (H, 1)
    cols = np.arange(width)[None, :] // patch  # (1, W)
    grid = (first + rows * across + cols).astype(np.int32)  # (H, W)
    return np.broadcast_to(grid.reshape(height, width, *([1] * (len(shape) - 2))), shape).copy()


def player_count(players: Sequence[np.ndarray]) -> int:
    """P, after checking that the players are numbered 0..P-1 with none missing."""
    values = np.unique(np.concatenate([np.asarray(p).reshape(-1) for p in players]))
    if len(values) == 0 or values[0] != 0 or values[-1] != len(values) - 1:
        raise ValueError(
            f"players must be numbered 0..P-1 with every number used; got {len(values)} distinct numbers "
            f"from {values[:1].tolist()} to {values[-1:].tolist()}: renumber them (np.unique(..., return_inverse=True))."
        )
    return int(len(values))


def player_sizes(players: Sequence[np.ndarray], count: int) -> np.ndarray:
    """(P,) int64: how many input elements each player holds."""
    return sum(np.bincount(np.asarray(p).reshape(-1), minlength=count) for p in players)


def spread(values: np.ndarray, players: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
    """values (B, P) per player -> one float32 (B, *shape_i) array per input: each element gets
    its player's value / the player's size."""
    sizes = player_sizes(players, values.shape[1])
    per_element = values / sizes  # (B, P)
    return tuple(per_element[:, np.asarray(p)].astype(np.float32) for p in players)


def blend(inputs: Sequence[np.ndarray], references: Sequence[np.ndarray], players: Sequence[np.ndarray],
          coalitions: np.ndarray) -> tuple[np.ndarray, ...]:
    """The model inputs of coalitions: where a coalition holds an element's player the row's
    value, else the reference's.

    inputs: (B, *shape_i) per input; references: (B, *shape_i) or (1, *shape_i) per input (a row's
    own baseline, or one shared); coalitions: bool (B, M, P). Returns (B * M, *shape_i) per input,
    row b's M points together (index b * M + m)."""
    rows, per_row = coalitions.shape[:2]
    points = []
    for x, r, p in zip(inputs, references, players):
        take = coalitions[:, :, np.asarray(p)]  # (B, M, *shape)
        point = np.where(take, np.asarray(x)[:, None], np.asarray(r)[:, None])  # (B, M, *shape)
        points.append(point.reshape(rows * per_row, *x.shape[1:]).astype(np.float32, copy=False))
    return tuple(points)
