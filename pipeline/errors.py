"""Errors of a run that finished but must not be trusted (importable without TensorFlow)."""

__all__ = ["RunFailedError", "StorageUnavailableError"]


class RunFailedError(RuntimeError):
    """The pipeline finished but its result must not be trusted: counts that do not reconcile, or
    more dead letters than allowed. The manifest is written with status 'failed' and the reason."""


class StorageUnavailableError(RuntimeError):
    """A bucket's storage could not be reached (endpoint down, network, time-out) or failed: a
    fault of the storage, not of the run's settings; running again later may work."""
