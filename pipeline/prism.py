"""Prism (Beam's portable runner, written in Go): where its binary is, and stopping the one we start.

Beam 2.77's `--runner=PrismRunner` downloads a Prism binary from GitHub unless `--prism_location`
names one. This project builds it instead, from the Go module proxy at the Beam version it pins:

    GOBIN=~/.cache/attribution-pipeline/prism/v2.77.0 go install github.com/apache/beam/sdks/v2/go/cmd/prism@v2.77.0

`find_prism` looks for it there (or at $ATTRIBUTION_PRISM_BIN), and `make_pipeline` passes it to
PrismRunner when the run names none.

PrismRunner starts one Prism job server per process and stops it only in an interpreter exit
handler, which the CLI's `os._exit` skips: `stop_prism_job_server` stops it when the run is done.
"""

from __future__ import annotations

import os
from typing import Optional

__all__ = ["PRISM_BIN_ENV", "find_prism", "prism_cache_dir", "install_command", "stop_prism_job_server"]

PRISM_BIN_ENV = "ATTRIBUTION_PRISM_BIN"
_PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


def _beam_version() -> str:
    from apache_beam.version import __version__

    return __version__


def prism_cache_dir() -> str:
    """The folder the documented install step builds into: $XDG_CACHE_HOME (default ~/.cache)
    /attribution-pipeline/prism/v<Beam version>, one folder per Beam version (the binary and the
    SDK must be the same release)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "attribution-pipeline", "prism", f"v{_beam_version()}")


def install_command() -> str:
    """The one-line build of the Prism binary into `prism_cache_dir()` (needs Go >= 1.26)."""
    return f"GOBIN={prism_cache_dir()} go install {_PACKAGE}@v{_beam_version()}"


def find_prism() -> Optional[str]:
    """The Prism binary to use: $ATTRIBUTION_PRISM_BIN when set (a ValueError if it is not an
    executable file), else `prism_cache_dir()/prism` when it exists, else None."""
    given = os.environ.get(PRISM_BIN_ENV)
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise ValueError(f"${PRISM_BIN_ENV} is {given!r}, which is not an executable file; "
                             f"build Prism with: {install_command()} (or unset it).")
        return given
    built = os.path.join(prism_cache_dir(), "prism")
    return built if os.path.isfile(built) and os.access(built, os.X_OK) else None


def stop_prism_job_server() -> None:
    """Stops the Prism job server PrismRunner keeps for this process, if one is running.

    PrismRunner shares one job server per process (`PrismRunner.shared_handle`) and registers its
    stop with `atexit`; acquiring the handle with a constructor that builds nothing returns the
    live server, or None. A later PrismRunner run in the same process starts a new one."""
    from apache_beam.runners.portability.prism_runner import PrismRunner

    server = PrismRunner.shared_handle.acquire(lambda: None)
    if server is not None:
        server.stop()
