"""Choosing which output each example's attribution explains.

Modes (see `TargetSpec`):
* ``predicted``: the argmax class of the output at x (for a scalar output, index 0);
* ``index``: one fixed output index for every example;
* ``label``: a per-example index read from a label column;
* ``top_k``: the k highest-scoring classes, one output row per (example, class), best first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

__all__ = ["TargetSpec", "expand_targets", "requested_targets", "TARGET_MODES"]

TARGET_MODES = ("predicted", "index", "label", "top_k")


@dataclass(frozen=True)
class TargetSpec:
    """mode: one of TARGET_MODES; index: the output index (mode 'index'); column: the label column
    (mode 'label'); k: classes per example (mode 'top_k')."""

    mode: str = "predicted"
    index: Optional[int] = None
    column: Optional[str] = None
    k: Optional[int] = None

    @property
    def rows_per_example(self) -> int:
        return self.k if self.mode == "top_k" else 1

    def describe(self) -> str:
        return {
            "predicted": "predicted",
            "index": f"index:{self.index}",
            "label": f"label:{self.column}",
            "top_k": f"top_k:{self.k}",
        }[self.mode]


def expand_targets(
    spec: TargetSpec, outputs: np.ndarray, labels: Optional[np.ndarray] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Which example and output index each output row explains.

    Args:
      outputs: float (B, C), the model's explained output at each example.
      labels: int (B,), required for mode 'label' (already checked to be in [0, C)).
    Returns:
      example_index: int64 (R,), the example of each output row (R = B, or B * k for top_k);
      targets: int32 (R,), the output index explained.
    """
    num_examples, num_classes = outputs.shape
    rows = np.arange(num_examples)
    if spec.mode == "predicted":
        return rows, np.argmax(outputs, axis=1).astype(np.int32)
    if spec.mode == "index":
        return rows, np.full(num_examples, spec.index, dtype=np.int32)
    if spec.mode == "label":
        if labels is None:
            raise ValueError("target mode 'label' needs the label values; got none.")
        return rows, np.asarray(labels, dtype=np.int32)
    if spec.mode == "top_k":
        # Stable sort of -outputs: ties keep the lower index first, as argmax does.
        order = np.argsort(-outputs, axis=1, kind="stable")[:, : spec.k]  # (B, k)
        return np.repeat(rows, spec.k), order.reshape(-1).astype(np.int32)
    raise ValueError(f"unknown target mode {spec.mode!r}; expected one of {list(TARGET_MODES)}.")


def requested_targets(spec: TargetSpec, num_examples: int, labels: Optional[np.ndarray] = None) -> np.ndarray:
    """int32 (B,) targets known without running the model: -1 ("the argmax", resolved inside the
    gradient function) for 'predicted', the index, or the labels. Not defined for top_k."""
    if spec.mode == "predicted":
        return np.full(num_examples, -1, dtype=np.int32)
    if spec.mode == "index":
        return np.full(num_examples, spec.index, dtype=np.int32)
    if spec.mode == "label" and labels is not None:
        return np.asarray(labels, dtype=np.int32)
    raise ValueError(f"target mode {spec.describe()!r} needs the model outputs (use expand_targets).")
