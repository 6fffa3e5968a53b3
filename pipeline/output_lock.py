"""One run at a time per output folder.

Local folders: an exclusive `fcntl.flock` on `OUTPUT/.attribution-pipeline.lock`. The kernel
releases it when the process ends, however it ends (a run killed with -9 leaves no stale lock);
the file itself stays, holding who took it last (pid, host, time) for the message a second run
gets. The lock file is opened with O_NOFOLLOW (a link there would make the run write its JSON
where the link points: refused), and a holder checks before it commits that the path still names
the file it locked (`verify`): deleted or replaced, another run may have taken the folder.

Object stores (s3://, gs://, ...) have no such lock: there the lock is an object holding a lease
that the run renews while it lives and the next run takes over once it has expired
(pipeline.lease_lock).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import time
import uuid
from typing import Optional

from pipeline.lease_lock import DEFAULT_LEASE_SECONDS, LeaseLock

__all__ = ["OutputLock", "LOCK_FILE"]

LOCK_FILE = ".attribution-pipeline.lock"


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "token": uuid.uuid4().hex}


def _describe(holder: Optional[dict]) -> str:
    if not holder:
        return "another run"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"another run (pid {holder.get('pid')} on {holder.get('host')}, started {started})"


class OutputLock:
    """`with OutputLock(output):` holds the output folder's lock (creating the folder if needed,
    unless create=False).

    Raises ValueError when another run holds it.
    """

    def __init__(self, output: str, create: bool = True, lease_seconds: float = DEFAULT_LEASE_SECONDS):
        self.output = output
        self.create = create
        self.path = os.path.join(output, LOCK_FILE) if "://" not in output else output.rstrip("/") + "/" + LOCK_FILE
        self.lease_seconds = lease_seconds
        self._fd: Optional[int] = None
        self._lease: Optional[LeaseLock] = None

    def acquire(self) -> "OutputLock":
        if "://" in self.output:
            lease = LeaseLock(self.path, self.lease_seconds, _holder(), self._in_use)
            lease.acquire()
            self._lease = lease
        else:
            self._acquire_flock()
        return self

    def verify(self) -> None:
        """Raises RunFailedError when the lock this run holds is no longer the folder's lock: the
        file was deleted or replaced (local), or the object names another holder (object stores)."""
        from pipeline.errors import RunFailedError

        if self._fd is not None:
            held = os.fstat(self._fd)
            try:
                now = os.lstat(self.path)
                same = (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
            except OSError:
                same = False
        elif self._lease is not None:
            same = self._lease.holds()
        else:
            same = False
        if not same:
            raise RunFailedError(
                f"the lock {self.path} was deleted or replaced while this run held it, so another run may be writing into "
                f"{self.output!r}; this run did not commit its results (the previous result is as it was). Run again once "
                f"no other run uses the folder, and do not delete the lock file of a running job (on an object store: "
                f"keep --lock-lease-seconds well above any pause of the launcher)."
            )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None
        elif self._lease is not None:
            self._lease.release()
            self._lease = None

    def abandon(self) -> None:
        """Gives the lock up without a word to its store, which cannot be reached: an object
        store's lease lapses (the next run takes it over); a local lock is released as usual."""
        if self._lease is not None:
            self._lease.abandon()
            self._lease = None
        self.release()

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _in_use(self, holder: Optional[dict]) -> ValueError:
        lease = ""
        if holder and "renewed" in holder and "lease_seconds" in holder:
            left = float(holder["lease_seconds"]) - (time.time() - float(holder["renewed"]))
            lease = f" If that run is gone, its lock is taken over automatically once its lease runs out (in {max(left, 0):.0f} s)."
        return ValueError(
            f"output {self.output!r} is in use by {_describe(holder)}; wait for it to finish or choose another "
            f"--output (two runs into one folder would replace each other's results).{lease}"
        )

    def _acquire_flock(self) -> None:
        import fcntl

        if self.create:
            os.makedirs(self.output, exist_ok=True)
        elif not os.path.isdir(self.output):
            raise ValueError(f"output folder {self.output!r} does not exist.")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise ValueError(
                    f"{self.path} is a symbolic link; the output's lock is a file of this program's own and it never "
                    f"writes through a link. Remove the link and run again."
                ) from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ValueError(f"{self.path} is not a plain file; remove it (it is where this program keeps its lock) and run again.")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"null")
            except ValueError:
                holder = None
            os.close(fd)
            raise self._in_use(holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_holder()).encode(), 0)
        self._fd = fd
