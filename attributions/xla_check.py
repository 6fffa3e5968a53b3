"""Does the XLA-compiled path give the same attributions as TensorFlow's kernels? (issue 29)

XLA compiles a method's gradient calls whole, model included (`build_model_functions(xla=True)`),
which measured 1.28x faster per integrated-gradients call on the default job's MLP (1,024 rows x 64
points, one thread) -- and 0.6x, slower, on a small CNN's gradients (XLA's CPU convolutions against
oneDNN's), 1.04x on a 64-256-256-10 MLP's. Its dots round differently in the last bits, so a row
whose path crosses a ReLU kink can move: 5e-3 of the row's largest attribution on 1 row in 200k of
that model. A run keeps XLA only when it compiles the model, when it is faster (`is_faster`), and
when, on the rows it checks, every row's attributions agree with the kernels' within the
completeness bound the run asked for (the error each row's completeness already allows):

    difference(row) = sum_i |a_xla[row, i] - a_kernel[row, i]| / sum_i |a_kernel[row, i]|

over every attributed value of the row (all inputs); a row whose kernel attributions are all 0
compares its absolute sum against the bound. Rows whose kernel attributions are not finite must
be exactly as not finite under XLA; they take no part in the difference otherwise.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

__all__ = ["XLA_MODES", "XLA_METRICS", "XLA_DIFFERENCE_METRIC", "RETIME_BELOW_SECONDS", "XlaDecision", "is_faster", "compare_attributions", "compile_failure", "describe_engines"]

# auto: XLA where it compiles and agrees on the first rows; on: XLA without a check; off: never.
XLA_MODES = ("auto", "on", "off")
# Beam counters of worker engines by their decision, and the distribution of each engine's largest
# checked-row difference in parts per billion (Beam distributions are integers): the manifest's xla.
XLA_METRICS = {"xla": "engines_on_xla", "kernels": "engines_on_kernels", "failed": "engines_xla_failed",
               "disagreed": "engines_xla_disagreed", "slower": "engines_xla_slower"}
# First passes (trace, compile and compute) cheaper than this, together, are timed once more each,
# warm: XLA's compile time would otherwise decide. Dearer ones are compared as they ran, XLA's compile
# counted against it (a conservative choice where compute dominates anyway).
RETIME_BELOW_SECONDS = 1.0
XLA_DIFFERENCE_METRIC = "xla_check_difference_ppb"


@dataclass(frozen=True)
class XlaDecision:
    """What a run's engine chose. used: XLA computes its gradients; reason: one line, why."""

    used: bool
    reason: str
    rows_checked: int = 0
    largest_difference: Optional[float] = None  # of the checked rows, as in the module docstring
    bound: Optional[float] = None
    # 'setting' (xla on/off, or a method without gradient calls), 'agreed', 'disagreed', 'failed', 'slower'
    outcome: str = "setting"
    seconds: Optional[dict] = None  # the timed passes, {'kernels': s, 'xla': s} (is_faster)

    def to_dict(self) -> dict:
        return {"used": self.used, "reason": self.reason, "outcome": self.outcome, "rows_checked": self.rows_checked,
                "largest_difference": self.largest_difference, "bound": self.bound, "seconds": self.seconds}

    def slower(self, kernel_seconds: float, xla_seconds: float) -> "XlaDecision":
        """This agreeing decision turned down because XLA's pass took longer than the kernels'."""
        return XlaDecision(False, f"XLA agreed with TensorFlow's kernels but was slower ({xla_seconds:.3g} s against "
                                  f"{kernel_seconds:.3g} s on the first batch); the run uses the kernels",
                           self.rows_checked, self.largest_difference, self.bound, "slower",
                           {"kernels": kernel_seconds, "xla": xla_seconds})

    def timed(self, kernel_seconds: float, xla_seconds: float) -> "XlaDecision":
        """This decision with the passes' times."""
        return dataclasses.replace(self, seconds={"kernels": kernel_seconds, "xla": xla_seconds})


def row_differences(kernel: Sequence[np.ndarray], xla: Sequence[np.ndarray]) -> tuple[np.ndarray, int]:
    """(R,) relative L1 difference per row (module docstring; NaN where the kernel's row is not
    finite) and the number of rows that are finite under one path and not under the other."""
    rows = len(kernel[0])
    k = np.concatenate([np.asarray(a, np.float64).reshape(rows, -1) for a in kernel], axis=1)  # (R, V)
    x = np.concatenate([np.asarray(a, np.float64).reshape(rows, -1) for a in xla], axis=1)  # (R, V)
    finite_k, finite_x = np.isfinite(k).all(axis=1), np.isfinite(x).all(axis=1)  # (R,)
    mismatched = int(np.sum(finite_k != finite_x))
    with np.errstate(invalid="ignore", over="ignore"):
        mass = np.abs(k).sum(axis=1)  # (R,)
        difference = np.abs(x - k).sum(axis=1) / np.where(mass > 0, mass, 1.0)  # (R,)
    return np.where(finite_k & finite_x, difference, np.nan), mismatched


def compare_attributions(kernel: Sequence[np.ndarray], xla: Sequence[np.ndarray], bound: float) -> XlaDecision:
    """XLA's attributions of some rows against the kernels' of the same rows (one (R, ...) array
    per attributed input each) -> the decision: used when every row is within `bound`."""
    rows = len(kernel[0])
    differences, mismatched = row_differences(kernel, xla)
    finite = differences[np.isfinite(differences)]
    largest = float(finite.max()) if finite.size else 0.0
    if mismatched:
        return XlaDecision(False, f"XLA made {mismatched} of {rows} checked rows finite where TensorFlow's kernels did "
                                  f"not, or the reverse; the run uses the kernels", rows, largest, bound, "disagreed")
    if largest > bound:
        worst = int(np.nanargmax(differences))
        return XlaDecision(False, f"XLA's attributions differ from TensorFlow's kernels' by {largest:.3g} of the row's "
                                  f"attribution mass on checked row {worst} (bound {bound:g}, the run's completeness "
                                  f"bound); the run uses the kernels", rows, largest, bound, "disagreed")
    return XlaDecision(True, f"XLA agrees with TensorFlow's kernels on {rows} rows within {bound:g} (largest "
                             f"difference {largest:.3g})", rows, largest, bound, "agreed")


def is_faster(xla_seconds: float, kernel_seconds: float) -> bool:
    """XLA is kept only when its pass took less time than the kernels' on the same rows."""
    return xla_seconds < kernel_seconds


def compile_failure(error: BaseException) -> XlaDecision:
    """The decision when XLA cannot compile (or run) the model: the kernels, and XLA's first line."""
    message = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return XlaDecision(False, f"XLA could not compile the model ({type(error).__name__}: {message}); the run uses "
                              f"TensorFlow's kernels", outcome="failed")


def describe_engines(mode: str, method_compiles: bool, bound: float, on_xla: int, failed: int, disagreed: int,
                     largest_difference: Optional[float], slower: int = 0) -> str:
    """The manifest's one line on XLA from the workers' counts: engines (one per worker process)
    that kept it, could not compile the model, found their first batch beyond `bound`, or found
    XLA slower (largest_difference: the largest checked-row difference any engine saw, None if none)."""
    if not method_compiles:
        return "the method does not run the gradient calls XLA compiles: TensorFlow's kernels"
    if mode == "off":
        return "xla is 'off': TensorFlow's kernels"
    if mode == "on":
        return "xla is 'on': compiled without a check"
    parts = []
    largest = "" if largest_difference is None else f" (largest difference {largest_difference:.3g})"
    if on_xla:
        parts.append(f"{on_xla} engine(s) kept XLA: their first batch agreed with TensorFlow's kernels within {bound:g}"
                     + ("" if disagreed else largest))
    if failed:
        parts.append(f"{failed} engine(s) could not compile the model with XLA and used TensorFlow's kernels "
                     f"(XLA's message is in the worker log)")
    if disagreed:
        parts.append(f"{disagreed} engine(s) found XLA's attributions beyond {bound:g} of a row's mass from the kernels'"
                     f"{largest} and used the kernels")
    if slower:
        parts.append(f"{slower} engine(s) found XLA agreeing but slower than TensorFlow's kernels on their first batch "
                     f"and used the kernels")
    return "; ".join(parts) or "no batch was attributed: nothing was checked"
