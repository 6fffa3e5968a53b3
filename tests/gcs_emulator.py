"""fake-gcs-server, a GCS emulator (Go; .ci/build_fake_gcs builds it), for the object-store tests.

The emulator skips the parts of a batch request that carry no Content-ID header, and
google-cloud-storage sends none, so Beam's batched rename and delete fail against it ("Bad
response: not multi-part"). Real GCS does not need the header; `add_content_ids` adds it in this
process only (the emulator's limit, patched in tests, never in the product).
"""

from __future__ import annotations

import itertools
import os
import shutil
from typing import Optional

__all__ = ["fake_gcs_binary", "add_content_ids", "server_command"]


def fake_gcs_binary() -> Optional[str]:
    """$ATTRIBUTION_FAKE_GCS_BIN (set by .ci/run), else fake-gcs-server on PATH or in ~/go/bin."""
    candidates = [os.environ.get("ATTRIBUTION_FAKE_GCS_BIN"), shutil.which("fake-gcs-server"),
                  os.path.expanduser("~/go/bin/fake-gcs-server")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def server_command(binary: str, port: int) -> list[str]:
    return [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-public-host", f"localhost:{port}",
            "-backend", "memory", "-log-level", "error"]


def add_content_ids() -> None:
    from google.cloud.storage import batch

    original = batch.MIMEApplicationHTTP.__init__
    if getattr(original, "adds_content_id", False):
        return
    numbers = itertools.count(1)

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self["Content-ID"] = f"<item{next(numbers)}>"

    init.adds_content_id = True
    batch.MIMEApplicationHTTP.__init__ = init
