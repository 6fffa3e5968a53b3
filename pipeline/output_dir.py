"""The output directory's life cycle: staging, completion marker, commit.

The pipeline writes into `OUTPUT/.staging-<id>/`, beside a `launch.json` (what was launched) and,
as its very last step, `pipeline_done.json`. Committing deletes the previous run's files (its
manifest first), moves the staged files into place and removes the staging directory; the
manifest is written after that. So a manifest with status 'complete' always vouches for its own
files, and a run killed at any point leaves the previous result untouched or files that no
manifest vouches for.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from apache_beam.io.filesystems import FileSystems

from audit import json_safe
from audit.runs import MANIFEST_NAME
from audit.summary_output import SUMMARY_FILES
from transforms.count import COUNTS_FILE

__all__ = [
    "ATTRIBUTIONS_PREFIX", "DEAD_LETTER_PREFIX", "STAGING_PREFIX", "LAUNCH_FILE", "DONE_MARKER",
    "existing_outputs", "has_complete_run", "check_output", "stale_staging_dirs", "commit", "write_json", "read_json",
    "launched_staging_dirs", "done_marker",
]

ATTRIBUTIONS_PREFIX = "attributions"
DEAD_LETTER_PREFIX = "dead_letter"
STAGING_PREFIX = ".staging-"
LAUNCH_FILE = "launch.json"
DONE_MARKER = "pipeline_done.json"


def write_json(path: str, document: Any) -> None:
    """Strict JSON: non-finite floats are written as null (see audit.json_safe)."""
    with FileSystems.create(path) as handle:
        handle.write(json_safe.dumps(document, indent=2).encode())


def read_json(path: str) -> Any:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        return json.loads(handle.read())


def existing_outputs(directory: str) -> list[str]:
    """The result files of a run in `directory` (not the staging directories)."""
    names = (f"{ATTRIBUTIONS_PREFIX}*", f"{DEAD_LETTER_PREFIX}*", MANIFEST_NAME, COUNTS_FILE, *SUMMARY_FILES)
    patterns = [FileSystems.join(directory, name) for name in names]
    return [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]


def has_complete_run(output: str) -> bool:
    path = FileSystems.join(output, MANIFEST_NAME)
    if not FileSystems.exists(path):
        return False
    try:
        return read_json(path).get("status") == "complete"
    except ValueError:  # a manifest cut short is not a completion marker
        return False


def check_output(output: str, overwrite: bool) -> None:
    """Refuses to replace a complete run unless `overwrite`. Files of a run that did not complete
    are not a result anyone may rely on: they are replaced when the next run commits."""
    existing = existing_outputs(output)
    if existing and has_complete_run(output) and not overwrite:
        raise ValueError(
            f"output {output!r} already holds a complete run ({len(existing)} files, e.g. "
            f"{existing[0]!r}); choose a new --output or pass --overwrite to replace it."
        )


def _staging_dirs(output: str, marker: str = "**") -> list[str]:
    pattern = FileSystems.join(output, f"{STAGING_PREFIX}*", marker)
    root = output.rstrip("/") + "/"
    return sorted({root + m.path[len(root):].split("/", 1)[0] for m in FileSystems.match([pattern])[0].metadata_list})


def stale_staging_dirs(output: str) -> list[str]:
    """Staging directories left in `output` (runs killed before committing, or not finalized)."""
    return _staging_dirs(output)


def launched_staging_dirs(output: str) -> list[str]:
    """Staging directories holding a launch.json: runs that can be finalized."""
    return _staging_dirs(output, LAUNCH_FILE)


def commit(output: str, staging: str) -> None:
    """Moves the staged files into `output`, replacing the previous run's files (see the module)."""
    staged = existing_outputs(staging)
    existing = existing_outputs(output)
    manifests = [path for path in existing if path.endswith(MANIFEST_NAME)]
    if manifests:
        FileSystems.delete(manifests)
    others = [path for path in existing if path not in manifests]
    if others:
        FileSystems.delete(others)
    if staged:
        FileSystems.rename(staged, [FileSystems.join(output, path.rsplit("/", 1)[-1]) for path in staged])
    FileSystems.delete([staging])


def done_marker(staging: str) -> Optional[dict]:
    path = FileSystems.join(staging, DONE_MARKER)
    return read_json(path) if FileSystems.exists(path) else None
