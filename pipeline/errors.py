"""Errors of a run that finished but must not be trusted (importable without TensorFlow)."""

__all__ = ["RunFailedError"]


class RunFailedError(RuntimeError):
    """The pipeline finished but its result must not be trusted: counts that do not reconcile, or
    more dead letters than allowed. The manifest is written with status 'failed' and the reason."""
