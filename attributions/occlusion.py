"""Occlusion (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks",
arXiv:1311.2901): how much the target score drops when a part of the input is replaced by the
baseline.

* ``occlusion`` over players (attributions.players; Captum's FeatureAblation with a feature mask):

      value_p = F(x) - F(x with player p set to the baseline)

  spread evenly over the player's elements. Patches that tile an image (stride == window) are
  this with `attributions.players.patch_players`.

* ``sliding_occlusion`` over images (B, H, W[, C]) (Captum's Occlusion): a window x window square
  (all channels) slides over H and W with step `stride`, from the top-left corner; windows start at
  0, stride, 2 stride, ... while they fit, so floor((H - window) / stride) + 1 positions down and
  likewise across. Each pixel's attribution is the mean, over the windows that cover it, of
  F(x) - F(x with the window set to the baseline); a pixel no window covers (the right or bottom
  edge when the stride does not reach it) gets 0. Windows are placed on each image input in turn,
  one occluded point per window (Captum ablates each input of a tuple separately too).
  Unlike `occlusion`, a window's value is not divided among its elements: every covered value
  gets it whole (Captum's convention), so with stride == window the attributions are those of
  `occlusion` with patch_players times the window's size (window^2 x C values); they do not add
  up to the windows' values.

Occlusion has no completeness axiom: the values need not add up to F(x) - F(baseline) (a player
that matters only together with another reads 0), so convergence_delta and completeness_error are
None. Each row costs 1 + P (or 1 + windows) model evaluations, all rows' points evaluated in blocks
of at most `chunk_size` points, one predict call each (`attributions.coalition_scores`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from attributions.coalition_scores import check_inputs, check_players, coalition_points, target_scores_at_points
from attributions.model_functions import ModelFunctions
from attributions.players import spread
from attributions.result import Attributions

__all__ = ["occlusion", "sliding_occlusion", "window_starts"]


def occlusion(
    fns: ModelFunctions,
    inputs: Sequence[np.ndarray],
    baselines: Sequence[np.ndarray],
    targets: np.ndarray,
    players: Sequence[np.ndarray],
    chunk_size: int = 1024,
) -> Attributions:
    """Occlusion of each player of B rows (module docstring).

    Args:
      inputs: one float32 array per model input, (B, *shape_i).
      baselines: one array per model input, (B, *shape_i), (1, *shape_i) or (*shape_i) (one for all).
      targets: int32 (B,), the output index explained (>= 0).
      players: one int32 array per input, (*shape_i), players 0..P-1 (attributions.players).
      chunk_size: most points per predict call; a row costs 1 + P points.
    Returns: attributions (B, *shape_i) per input, targets and target_scores = F(x) (B,).
    """
    inputs, baselines, targets = check_inputs(fns, inputs, baselines, targets, "occlusion")
    players, count = check_players(players, inputs, "occlusion")

    def coalitions_of(rows: np.ndarray, ms: np.ndarray) -> np.ndarray:
        # m = 0: x itself; m = 1 + p: every player but p.
        return np.arange(count)[None, :] != (ms - 1)[:, None]  # (n, P)

    build = coalition_points(inputs, baselines, players, coalitions_of)
    scores = target_scores_at_points(fns, targets, 1 + count, build, chunk_size)  # (B, 1 + P)
    values = scores[:, :1].astype(np.float64) - scores[:, 1:]  # (B, P)
    return Attributions(attributions=spread(values, players), targets=targets, target_scores=scores[:, 0])


def window_starts(size: int, window: int, stride: int) -> np.ndarray:
    """int64 (k,): the start of each window position along an axis of `size` (Captum's Occlusion)."""
    return np.arange(0, size - window + 1, stride, dtype=np.int64)


def sliding_occlusion(
    fns: ModelFunctions,
    image_inputs: Sequence[np.ndarray],
    baselines: Sequence[np.ndarray],
    targets: np.ndarray,
    window: int,
    stride: int,
    chunk_size: int = 1024,
) -> Attributions:
    """Sliding-window occlusion of B images (module docstring).

    Args:
      image_inputs: one float32 array per model input, each an image (B, H, W) or (B, H, W, C).
      baselines: one array per model input, (B, *shape_i), (1, *shape_i) or (*shape_i).
      targets: int32 (B,), the output index explained (>= 0).
      window: the side of the square window in pixels (<= H and <= W of every input).
      stride: pixels between window positions (>= 1; < window: overlapping windows).
      chunk_size: most points per predict call; a row costs 1 + (number of windows) points.
    Returns: attributions (B, *shape_i) per input, targets and target_scores = F(x) (B,).
    """
    inputs, baselines, targets = check_inputs(fns, image_inputs, baselines, targets, "sliding occlusion")
    windows = _windows(inputs, window, stride)  # (K, 3): input, top, left

    def build(rows: np.ndarray, ms: np.ndarray) -> tuple:
        points = []
        for i, (x, r) in enumerate(zip(inputs, baselines)):
            covered = _window_masks(windows, ms - 1, i, x.shape[1:3], window)  # (n, H, W); m = 0: none
            covered = covered.reshape(*covered.shape, *([1] * (x.ndim - 3)))  # (n, H, W[, 1])
            refs = r if len(r) == 1 else r[rows]  # (1 or n, *shape)
            points.append(np.where(covered, refs, x[rows]).astype(np.float32, copy=False))  # (n, *shape)
        return tuple(points)

    scores = target_scores_at_points(fns, targets, 1 + len(windows), build, chunk_size)  # (B, 1 + K)
    values = scores[:, :1].astype(np.float64) - scores[:, 1:]  # (B, K)
    attributions = tuple(
        _mean_over_windows(values, windows, i, x.shape, window) for i, x in enumerate(inputs)
    )
    return Attributions(attributions=attributions, targets=targets, target_scores=scores[:, 0])


def _windows(inputs: tuple, window: int, stride: int) -> np.ndarray:
    """int64 (K, 3): (input index, top, left) of every window, input by input, row by row."""
    for name, value in (("window", window), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"sliding occlusion: {name} must be a positive integer (pixels); got {value!r}.")
    found = []
    for i, x in enumerate(inputs):
        if x.ndim not in (3, 4):
            raise ValueError(
                f"sliding occlusion: input {i} has shape {x.shape}; expected images (B, H, W) or (B, H, W, C). "
                "Use occlusion() with players for other inputs."
            )
        height, width = x.shape[1:3]
        if window > height or window > width:
            raise ValueError(
                f"sliding occlusion: window {window} is larger than input {i}'s image, {height} x {width} pixels: "
                f"use a window of at most {min(height, width)}."
            )
        tops, lefts = window_starts(height, window, stride), window_starts(width, window, stride)
        grid = np.stack(np.meshgrid(tops, lefts, indexing="ij"), axis=-1).reshape(-1, 2)  # (k, 2)
        found.append(np.concatenate([np.full((len(grid), 1), i), grid], axis=1))
    return np.concatenate(found).astype(np.int64)


def _window_masks(windows: np.ndarray, which: np.ndarray, input_index: int, size: tuple, window: int) -> np.ndarray:
    """bool (n, H, W): True inside window which[j] when it lies on this input (which < 0: none)."""
    height, width = size
    chosen = windows[np.maximum(which, 0)]  # (n, 3)
    here = (which >= 0) & (chosen[:, 0] == input_index)  # (n,)
    rows = np.arange(height)[None, :] - chosen[:, 1:2]  # (n, H)
    cols = np.arange(width)[None, :] - chosen[:, 2:3]  # (n, W)
    inside_rows = (rows >= 0) & (rows < window)  # (n, H)
    inside_cols = (cols >= 0) & (cols < window)  # (n, W)
    return here[:, None, None] & inside_rows[:, :, None] & inside_cols[:, None, :]


def _mean_over_windows(values: np.ndarray, windows: np.ndarray, input_index: int, shape: tuple, window: int) -> np.ndarray:
    """float32 (B, H, W[, C]): each pixel's mean value over the windows of this input covering it
    (0 where none does), the same for every channel."""
    rows, height, width = shape[0], shape[1], shape[2]
    total = np.zeros((rows, height, width))  # (B, H, W)
    covers = np.zeros((height, width))  # (H, W)
    for k in np.flatnonzero(windows[:, 0] == input_index):
        top, left = windows[k, 1], windows[k, 2]
        total[:, top : top + window, left : left + window] += values[:, k, None, None]
        covers[top : top + window, left : left + window] += 1
    mean = np.divide(total, covers, out=np.zeros_like(total), where=covers > 0)  # (B, H, W)
    mean = mean.reshape(rows, height, width, *([1] * (len(shape) - 3)))
    return np.broadcast_to(mean, shape).astype(np.float32)
