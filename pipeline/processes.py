"""The processes this program started, listed and stopped by PID.

Runners start job servers and workers as child processes (PrismRunner its `prism` binary, a Flink
or Spark runner a Java job server, the DirectRunner's multi_processing mode its SDK workers). Beam
stops them in interpreter exit handlers; the CLI ends with `os._exit`, which skips those, so it
stops whatever is still running itself (`stop_child_processes`) before it exits.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Optional

__all__ = ["descendants", "stop_child_processes", "free_port", "wait_for_port", "stop_session"]


def _parents() -> dict[int, int]:
    """pid -> parent pid of every running process visible in /proc (Linux; zombies left out)."""
    parents = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:  # exited meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
        fields = stat[stat.rfind(b")") + 2:].split()
        if fields[0] != b"Z":
            parents[int(name)] = int(fields[1])
    return parents


def descendants(pid: Optional[int] = None) -> list[int]:
    """PIDs of the running children of `pid` (default: this process), their children, and so on
    (zombies, ended but not yet reaped, left out). psutil when installed, else /proc; [] where
    neither is available."""
    pid = os.getpid() if pid is None else pid
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            children = psutil.Process(pid).children(recursive=True)
            return [child.pid for child in children if _alive(child.pid)]
        except psutil.NoSuchProcess:
            return []
    if not os.path.isdir("/proc"):
        return []
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie is not: it has ended and waits for its parent, e.g. Beam's Popen, to reap it)."""
    if os.path.isdir("/proc"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            return False
        return stat[stat.rfind(b")") + 2:].split()[0] != b"Z"
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def stop_child_processes(timeout: float = 5.0) -> list[int]:
    """Stops every process this one started that is still running (and what they started):
    SIGTERM, up to `timeout` seconds for them to end, then SIGKILL. Returns the PIDs stopped."""
    pids = descendants()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + timeout
    left = [pid for pid in pids if _alive(pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if _alive(pid)]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


# Services started for a run (job servers, SDK worker pools): used by the runner tests and the
# runner bench, which start them as docs/runners.md shows.


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process, timeout: float = 60.0) -> None:
    """Returns once something listens on `port`; raises if `process` (a Popen) exits first or
    nothing listens within `timeout` seconds (a hung service fails, it does not hang)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args} exited with {process.returncode} before serving port {port}")
        with socket.socket() as s:
            if s.connect_ex(("localhost", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listened on port {port} within {timeout} s")


def stop_session(process) -> None:
    """Stops a Popen started with start_new_session=True and everything in its session: SIGTERM,
    then SIGKILL after 10 s."""
    import subprocess

    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
