"""Was a failed run's failure the storage's? Asked on the launcher once a pipeline on buckets failed.

A bucket that goes away mid-run fails the pipeline the way its runner reports it: an exception
chain in process, a text from a job service. Beam's S3 and GCS layers retry each request for
minutes first (S3 reads: 7 retries from 5 s, doubling: a run whose store went down ended 14 min
later, measured). The answer here does not read those texts alone: the run's buckets are listed
again with the launcher's short time-outs (pipeline.storage_check).

- still unreachable: a storage fault, and nothing more can be cleaned up now (each attempt would
  wait through the same retries); the lock's lease lapses and the next run takes the folder over;
- reachable, and the failure names a storage error (connection, time-out, a 5xx): a storage
  fault that has passed; the caller cleans up as after any failed run;
- otherwise: not the storage's fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from pipeline.errors import RunFailedError, StorageUnavailableError
from pipeline.storage_check import check_storage_reachable

__all__ = ["StorageFault", "storage_fault", "STORAGE_WORDS"]

# Words of storage failures in error texts (a job service passes its workers' errors as text):
# botocore's connection errors, Beam's S3 client error, requests' and google-api-core's.
STORAGE_WORDS = (
    "Could not connect to the endpoint URL", "Connection was closed before we received a valid response",
    "Read timeout on endpoint URL", "Connect timeout on endpoint URL", "S3ClientError", "ServiceUnavailable",
    "InternalServerError", "Max retries exceeded with url", "Connection aborted", "Connection refused",
)


@dataclass(frozen=True)
class StorageFault:
    """reachable: whether the storage answers again now. error: what the launcher raises."""

    reachable: bool
    error: StorageUnavailableError


def storage_fault(failure: BaseException, paths: Sequence[str], pipeline_args: Sequence[str], output: str,
                  lease_seconds: Optional[float]) -> Optional[StorageFault]:
    """The StorageFault behind `failure` of a run over `paths`, or None (see the module).
    lease_seconds: the lease of the lock the run holds; None: it failed before taking the lock
    (while the launcher read the model and the input), so nothing was written."""
    if not isinstance(failure, Exception) or isinstance(failure, (ValueError, RunFailedError)):
        return None  # an interrupt, a setting to fix, a run that failed its own checks
    if not any(isinstance(p, str) and p.startswith(("s3://", "gs://")) for p in paths):
        return None
    left = ("The storage went away while the launcher read the run's model and input; nothing was written." if lease_seconds is None else
            f"The storage went away during the run, which did not commit (the previous result is as it was). Its lock and "
            f"staging folder stay in {output!r} until the storage is back: the next run takes them over once the lock's "
            f"lease has run out ({lease_seconds:g} s after its last renewal, lock_lease_seconds).")
    try:
        check_storage_reachable(paths, pipeline_args, consequence=left)
    except StorageUnavailableError as down:
        return StorageFault(reachable=False, error=down)
    except ValueError as refused:  # the storage answers, but refuses this run's credentials or bucket now
        return StorageFault(reachable=True, error=StorageUnavailableError(
            f"the storage failed the run ({_storage_words(failure) or type(failure).__name__}) and now refuses it: {refused}"))
    words = _storage_words(failure)
    if words is None:
        return None
    after = ("Nothing was written" if lease_seconds is None else
             f"The run did not commit: its staging folder was removed and the previous result in {output!r} is as it was")
    return StorageFault(reachable=True, error=StorageUnavailableError(
        f"the storage failed during the run ({words}); it answers again now. {after}. Run again."
    ))


def _storage_words(failure: BaseException) -> Optional[str]:
    """The first line of `failure` (or of an error in its chain) that names a storage error."""
    seen = set()
    while failure is not None and id(failure) not in seen:
        seen.add(id(failure))
        for line in str(failure).splitlines():
            if any(word in line for word in STORAGE_WORDS):
                return line.split(" [while running", 1)[0].strip()[:300]
        failure = failure.__cause__ or failure.__context__
    return None
