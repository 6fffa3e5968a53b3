"""The output folder's lock on object stores (s3://, gs://, ...): an object holding a lease.

Object stores have no flock that the kernel drops when a process dies. The lock is an object
(`OUTPUT/.attribution-pipeline.lock`) naming its holder, a token and when the holder last renewed
it; the holder renews it every lease/5 seconds from a background thread while it runs. A lock not
renewed for its lease (the holder's own `lease_seconds`, written in the lock) belongs to a run that
died: the next run takes it over with a one-line warning, so a scheduled run after a crash needs
no person. The holder checks before committing that the lock still carries its token (`verify`).

Default lease, 300 s: renewed every 60 s, a holder survives four missed renewals (a store hiccup,
a long pause) before anyone may take over; and a run that crashed blocks its folder for at most
five minutes, so a scheduler's retry (Airflow's default retry_delay is 300 s) succeeds. Launchers'
clocks must agree to well within the lease (NTP does).

On S3 the lock is created with `IfNoneMatch='*'` and renewed or taken over with `IfMatch=<etag>`,
on GCS with `if_generation_match` (0 to create, the generation read to renew): of two launchers
started at the same instant exactly one gets it. Elsewhere (Beam's filesystems have no
conditional writes) it is created when absent and read back: that narrows the window between two
launchers but cannot close it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Callable, Optional

__all__ = ["LeaseLock", "DEFAULT_LEASE_SECONDS"]

DEFAULT_LEASE_SECONDS = 300
_LOGGER = logging.getLogger(__name__)


class _Taken(Exception):
    """A conditional write found the lock changed since it was read (or present when absent was expected)."""


class _BeamObject:
    """The lock object through Beam's FileSystems: no conditional writes."""

    def __init__(self, path: str):
        self.path = path

    def read(self) -> tuple[Optional[dict], Optional[str]]:
        """(content, version); (None, None) when absent or unreadable."""
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(self.path, compression_type="uncompressed") as handle:
                document = json.loads(handle.read())
        except Exception:  # absent, or cut short: nobody we can name holds it
            return None, None
        return (document, document.get("token")) if isinstance(document, dict) else (None, None)

    def write(self, document: dict, version: Optional[str]) -> None:
        """Writes `document` if the lock is still at `version` (None: absent); raises _Taken otherwise."""
        from apache_beam.io.filesystems import FileSystems

        if self.read()[1] != version:
            raise _Taken
        with FileSystems.create(self.path) as handle:
            handle.write(json.dumps(document).encode())
        if self.read()[0] != document:  # another launcher wrote just after us
            raise _Taken

    def delete(self) -> None:
        from apache_beam.io.filesystems import FileSystems

        FileSystems.delete([self.path])


class _S3Object(_BeamObject):
    """The lock object on S3 with conditional writes (IfNoneMatch / IfMatch on the ETag)."""

    def __init__(self, path: str):
        super().__init__(path)
        from apache_beam.io.aws.clients.s3.boto3_client import Client
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.options.pipeline_options import PipelineOptions

        self._client = Client(FileSystems._pipeline_options or PipelineOptions([])).client  # pylint: disable=protected-access
        self._bucket, _, self._key = path[len("s3://"):].partition("/")

    def read(self) -> tuple[Optional[dict], Optional[str]]:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key)
            document = json.loads(response["Body"].read())
        except Exception:  # absent, or unreadable
            return None, None
        return (document if isinstance(document, dict) else None), response["ETag"]

    def write(self, document: dict, version: Optional[str]) -> None:
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=json.dumps(document).encode(), **condition)
        except Exception as error:
            code = getattr(error, "response", {}).get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                raise _Taken from None
            raise

    def delete(self) -> None:
        self._client.delete_object(Bucket=self._bucket, Key=self._key)


class _GcsObject(_BeamObject):
    """The lock object on GCS with conditional writes (if_generation_match)."""

    def __init__(self, path: str):
        super().__init__(path)
        from apache_beam.io.filesystems import FileSystems
        from apache_beam.io.gcp.gcsio import create_storage_client
        from apache_beam.options.pipeline_options import PipelineOptions

        client = create_storage_client(FileSystems._pipeline_options or PipelineOptions([]))  # pylint: disable=protected-access
        bucket, _, self._key = path[len("gs://"):].partition("/")
        self._bucket = client.bucket(bucket)

    def read(self) -> tuple[Optional[dict], Optional[str]]:
        try:
            blob = self._bucket.get_blob(self._key)
            if blob is None:
                return None, None
            document = json.loads(blob.download_as_bytes(if_generation_match=blob.generation))
        except Exception:  # absent, replaced while read, or unreadable
            return None, None
        return (document if isinstance(document, dict) else None), str(blob.generation)

    def write(self, document: dict, version: Optional[str]) -> None:
        from google.api_core import exceptions

        try:
            self._bucket.blob(self._key).upload_from_string(
                json.dumps(document).encode(), content_type="application/json", if_generation_match=int(version or 0))
        except (exceptions.PreconditionFailed, exceptions.Conflict):
            raise _Taken from None

    def delete(self) -> None:
        self._bucket.blob(self._key).delete()


def _lock_object(path: str) -> _BeamObject:
    if path.startswith("s3://"):
        return _S3Object(path)
    return _GcsObject(path) if path.startswith("gs://") else _BeamObject(path)


class LeaseLock:
    """The lease on `path` (see the module). `in_use(holder)` makes the error for a live holder."""

    def __init__(self, path: str, lease_seconds: float, holder: dict, in_use: Callable[[Optional[dict]], ValueError]):
        if not lease_seconds > 0:
            raise ValueError(f"lock_lease_seconds must be a positive number of seconds; got {lease_seconds!r}.")
        self.path = path
        self.lease_seconds = float(lease_seconds)
        self._object = _lock_object(path)
        self._document = {**holder, "lease_seconds": self.lease_seconds, "renewed": time.time()}
        self._version: Optional[str] = None
        self._in_use = in_use
        self._lost = False
        self._stop = threading.Event()
        self._renewer: Optional[threading.Thread] = None

    def acquire(self) -> None:
        current, version = self._object.read()
        if current is not None:
            age = time.time() - float(current.get("renewed", current.get("started", 0)))
            lease = float(current.get("lease_seconds", self.lease_seconds))
            if age <= lease:
                raise self._in_use(current)
            _LOGGER.warning(
                "taking over the lock %s: its holder (pid %s on %s) last renewed it %.0f s ago, past its %.0f s lease, "
                "so that run is gone; its staging folder is removed as a dead run's", self.path, current.get("pid"),
                current.get("host"), age, lease,
            )
        try:
            self._write(version)
        except _Taken:
            raise self._in_use(self._object.read()[0]) from None
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="lock-lease", daemon=True)
        self._renewer.start()

    def _write(self, version: Optional[str]) -> None:
        self._document["renewed"] = time.time()
        self._object.write(self._document, version)
        self._version = self._object.read()[1]

    def _renew_until_stopped(self) -> None:
        failing_since = None  # a store that is down: said once when it starts and once when it ends
        while not self._stop.wait(self.lease_seconds / 5):
            try:
                try:
                    self._write(self._version)
                except _Taken:
                    # Our own earlier write may have landed without its answer (a connection cut
                    # after the request; a client's retry of it): then the object is still ours.
                    current, version = self._object.read()
                    if (current or {}).get("token") != self._document["token"]:
                        raise
                    self._write(version)
            except _Taken:
                self._lost = True
                _LOGGER.warning("lost the lock %s: another run took it over; this run will not commit", self.path)
                return
            except Exception as error:  # a store hiccup: try again at the next renewal
                if failing_since is None:
                    failing_since = time.time()
                    _LOGGER.warning("could not renew the lock %s (%s); retrying every %.0f s, quietly until it works again",
                                    self.path, error, self.lease_seconds / 5)
                continue
            if failing_since is not None:
                _LOGGER.warning("renewed the lock %s again after %.0f s of failures", self.path, time.time() - failing_since)
                failing_since = None

    def holds(self) -> bool:
        """Whether the lock still carries this holder's token."""
        return not self._lost and (self._object.read()[0] or {}).get("token") == self._document["token"]

    def abandon(self) -> None:
        """Stops renewing without touching the store (it cannot be reached): the lease lapses and
        the next run takes the lock over. The renewing thread is not waited for."""
        self._stop.set()
        self._renewer = None

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        if self.holds():
            self._object.delete()
