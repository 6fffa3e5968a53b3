"""The output folder: whose it is, staging, completion marker, commit.

A run writes only inside a folder it owns. A folder is ours when it holds our ownership record
(`.attribution-pipeline.json`: the names of the result files that runs of this program placed
there), or, for folders written before the record existed, a manifest of ours (its file lists name
the files). A non-empty folder that is neither is refused; so is a folder holding a complete run,
unless `--overwrite`. Replacing a run removes exactly the files the record names: anything else in
the folder (a report.html, a user's notes, a file that merely looks like ours) is never touched,
and a staged file whose name is taken by such a file stops the commit instead of replacing it.

Life cycle (one run at a time: pipeline.output_lock): `check_output` (read-only, on the launcher)
-> `claim` (the record, written before anything else) -> the pipeline writes into
`OUTPUT/.staging-<id>/` (`launch.json` first, `pipeline_done.json` as its very last step) ->
`commit`: the record grows to the old and the new names, the previous manifest and then the
previous files are deleted, the staged files are renamed into place, the record shrinks to the new
names and the staging folder is removed; the manifest is written after that (pipeline.manifest).
So a manifest with status 'complete' vouches for its own files, and a run killed at any point
leaves the previous result untouched, or files that the record still claims and the next run
replaces.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from audit import json_safe
from audit.runs import MANIFEST_NAME
from audit.summary_output import SUMMARY_FILES
from pipeline.output_lock import LOCK_FILE
from transforms.count import COUNTS_FILE

__all__ = [
    "ATTRIBUTIONS_PREFIX", "DEAD_LETTER_PREFIX", "STAGING_PREFIX", "LAUNCH_FILE", "DONE_MARKER", "OWNER_FILE",
    "OutputState", "is_bookkeeping", "inspect_output", "check_output", "check_output_outside_inputs", "claim", "staged_outputs",
    "stale_staging_dirs", "launched_staging_dirs", "remove_staging", "commit", "done_marker", "write_json", "read_json",
]

ATTRIBUTIONS_PREFIX = "attributions"
DEAD_LETTER_PREFIX = "dead_letter"
STAGING_PREFIX = ".staging-"
LAUNCH_FILE = "launch.json"
DONE_MARKER = "pipeline_done.json"
OWNER_FILE = ".attribution-pipeline.json"
_OWNER_TEMP = OWNER_FILE + ".tmp"
_TOOL = "attribution-pipeline"
# Result file names a run writes (staging holds nothing else of interest).
_RESULT_NAMES = (f"{ATTRIBUTIONS_PREFIX}-*", f"{DEAD_LETTER_PREFIX}-*", COUNTS_FILE, *SUMMARY_FILES)


def write_json(path: str, document: Any) -> None:
    """Strict JSON: non-finite floats are written as null (see audit.json_safe)."""
    with FileSystems.create(path) as handle:
        handle.write(json_safe.dumps(document, indent=2).encode())


def read_json(path: str) -> Any:
    with FileSystems.open(path, compression_type="uncompressed") as handle:
        return json.loads(handle.read())


def _join(directory: str, name: str) -> str:
    return FileSystems.join(directory, name)


def _names(directory: str) -> list[str]:
    """The names of the entries directly inside `directory` (files and folders); [] if absent."""
    if "://" not in directory:
        return sorted(os.listdir(directory)) if os.path.isdir(directory) else []
    root = directory.rstrip("/") + "/"
    matched = FileSystems.match([root + "**"])[0].metadata_list
    return sorted({m.path[len(root):].split("/", 1)[0] for m in matched if m.path.startswith(root)})


def is_bookkeeping(name: str) -> bool:
    """Our own files beside the results: ownership record, lock, staging folders."""
    return name in (OWNER_FILE, _OWNER_TEMP, LOCK_FILE) or name.startswith(STAGING_PREFIX)


def _manifest_file_names(manifest: dict) -> set[str]:
    """The names of the files a manifest of ours vouches for (and its own)."""
    output = manifest.get("output") or {}
    paths = [f.get("path", "") for key in ("attributions", "dead_letters", "summary") for f in output.get(key) or []]
    paths.append(output.get("record_counts") or "")
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in paths if p} | {MANIFEST_NAME}


def _is_our_manifest(document: Any) -> bool:
    return isinstance(document, dict) and "attribution_pipeline" in (document.get("versions") or {})


def _read_or_none(path: str) -> Any:
    try:
        return read_json(path)
    except (OSError, ValueError):  # absent, or cut short by a kill
        return None


@dataclass(frozen=True)
class OutputState:
    """What an output folder holds. owned: names of result files of ours (record or manifest);
    manifest: our manifest there, if any; ours: the folder holds a run of ours (or nothing)."""

    path: str
    names: tuple[str, ...]
    owned: frozenset
    manifest: Optional[dict]
    ours: bool

    @property
    def complete(self) -> bool:
        return bool(self.manifest) and self.manifest.get("status") == "complete"

    @property
    def foreign(self) -> list[str]:
        """Entries that are neither our result files nor our own bookkeeping."""
        return [n for n in self.names if n not in self.owned and not is_bookkeeping(n)]


def inspect_output(output: str) -> OutputState:
    """Reads what `output` holds; raises ValueError when it is a file."""
    if "://" not in output and os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r} is a file; it must be a folder (a new one, or a previous run's).")
    names = tuple(_names(output))
    manifest = _read_or_none(_join(output, MANIFEST_NAME)) if MANIFEST_NAME in names else None
    manifest = manifest if _is_our_manifest(manifest) else None
    record = _read_or_none(_join(output, OWNER_FILE)) if OWNER_FILE in names else None
    if isinstance(record, dict) and record.get("tool") == _TOOL:
        owned = frozenset(record.get("files") or ())
    elif manifest is not None:
        owned = frozenset(_manifest_file_names(manifest))
    else:
        owned = frozenset()
    ours = record is not None or manifest is not None or all(is_bookkeeping(n) for n in names)
    return OutputState(output, names, owned, manifest, ours)


def check_output(output: str, overwrite: bool) -> OutputState:
    """Refuses a folder that is not ours (not empty, no run of ours in it) and, unless
    `overwrite`, one that holds a complete run. Files of a run that did not complete are not a
    result anyone may rely on: they are replaced when the next run commits."""
    state = inspect_output(output)
    if not state.ours:
        shown = ", ".join(repr(n) for n in state.foreign[:3]) + (" ..." if len(state.foreign) > 3 else "")
        raise ValueError(
            f"output folder {output!r} is not empty and holds no run of this program ({len(state.foreign)} entries: "
            f"{shown}); a run writes only into a new or empty folder or a previous run's. Choose another --output."
        )
    lookalikes = [n for n in state.foreign if any(fnmatch.fnmatchcase(n, p) for p in (*_RESULT_NAMES, MANIFEST_NAME))]
    if lookalikes:
        raise ValueError(
            f"output folder {output!r} holds {lookalikes[:3]}, which are not files of this program's runs but have the "
            f"names its results take; move them away or choose another --output."
        )
    if state.complete and not overwrite:
        raise ValueError(
            f"output {output!r} already holds a complete run ({len(state.owned)} files, e.g. {sorted(state.owned)[0]!r}); "
            f"choose a new --output or pass --overwrite to replace it."
        )
    return state


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def check_output_outside_inputs(output: str, patterns: Sequence[str], input_files: Sequence[str]) -> None:
    """Refuses an output folder that holds input files or that an input glob reaches into: the run
    (or the next one) would read its own results as input."""
    root = _absolute(output).rstrip("/") + "/"
    inside = [f for f in input_files if _absolute(f).startswith(root)]
    if inside:
        raise ValueError(
            f"input file {inside[0]!r} is inside the output folder {output!r}: the run would replace or read its own "
            f"results. Write the output to a folder outside the input."
        )
    written = [root + name.replace("*", "00000-of-00001.parquet") for name in (*_RESULT_NAMES, MANIFEST_NAME)]
    written += [root + STAGING_PREFIX + "0123456789ab/" + name.rsplit("/", 1)[-1] for name in written]
    for pattern in patterns:
        regex = re.compile(FileSystem.translate_pattern(_absolute(pattern)))
        reached = [path for path in written if regex.match(path)]
        if reached:
            raise ValueError(
                f"input pattern {pattern!r} would match files the run writes into --output {output!r} (e.g. "
                f"{reached[0][len(root):]!r}), so runs would read their own results. Choose an output outside the input glob."
            )


def _write_record(output: str, names: set) -> None:
    """The ownership record, replaced whole (written aside, then renamed over the old one)."""
    temp = _join(output, _OWNER_TEMP)
    write_json(temp, {"tool": _TOOL, "files": sorted(names)})
    if "://" not in output:
        os.replace(temp, _join(output, OWNER_FILE))
    else:
        FileSystems.rename([temp], [_join(output, OWNER_FILE)])


def claim(state: OutputState) -> None:
    """Writes the ownership record (keeping the names it already claims) before anything else."""
    _write_record(state.path, set(state.owned))


def staged_outputs(staging: str) -> list[str]:
    """The result files in a staging folder."""
    patterns = [_join(staging, name) for name in _RESULT_NAMES]
    return [m.path for result in FileSystems.match(patterns) for m in result.metadata_list]


def _staging_dirs(output: str, marker: Optional[str] = None) -> list[str]:
    dirs = [_join(output, n) for n in _names(output) if n.startswith(STAGING_PREFIX)]
    return [d for d in dirs if marker is None or FileSystems.exists(_join(d, marker))]


def stale_staging_dirs(output: str) -> list[str]:
    """Staging folders in `output` (runs killed before committing, or not finalized)."""
    return _staging_dirs(output)


def launched_staging_dirs(output: str) -> list[str]:
    """Staging folders holding a launch.json: runs that can be finalized."""
    return _staging_dirs(output, LAUNCH_FILE)


def remove_staging(staging: str) -> None:
    """Deletes a staging folder if it is there (a failed run cleans up after itself)."""
    if "://" not in staging:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    elif FileSystems.exists(staging):
        FileSystems.delete([staging])


def commit(output: str, staging: str) -> None:
    """Moves the staged files into `output`, replacing the previous run's files (see the module)."""
    state = inspect_output(output)
    staged = staged_outputs(staging)
    new_names = {path.rstrip("/").rsplit("/", 1)[-1] for path in staged} | {MANIFEST_NAME}
    taken = sorted(n for n in new_names if n in state.names and n not in state.owned)
    if taken:
        raise ValueError(
            f"cannot commit the run into {output!r}: {taken} there are not files of this program's runs and would be "
            f"replaced; nothing was changed. Move them away and run again."
        )
    _write_record(output, set(state.owned) | new_names)
    present = [n for n in state.owned if n in state.names]
    if MANIFEST_NAME in present:  # the previous result stops being vouched for first
        FileSystems.delete([_join(output, MANIFEST_NAME)])
    others = [_join(output, n) for n in present if n != MANIFEST_NAME]
    if others:
        FileSystems.delete(others)
    if staged:
        FileSystems.rename(staged, [_join(output, path.rstrip("/").rsplit("/", 1)[-1]) for path in staged])
    _write_record(output, new_names)
    remove_staging(staging)


def done_marker(staging: str) -> Optional[dict]:
    path = _join(staging, DONE_MARKER)
    return read_json(path) if FileSystems.exists(path) else None
