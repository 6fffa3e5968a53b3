"""The output folder: whose it is, staging, completion marker, commit.

A run writes only inside a folder it owns. The files of ours in a folder are those our ownership
record (`.attribution-pipeline.json`) names, or, for folders written before the record existed,
those a manifest of ours lists; and only plain files (not links, not folders) with names our runs
give their results (attributions-*, dead_letter-*, record_counts.json, summary files,
manifest.json): a forged or copied record naming notes.txt or photos/ claims nothing. A folder
holds a run of ours when it has a manifest of ours, or a record with a file or a staging folder of
ours beside it; a staging folder is ours only when it is a real folder named .staging-<12 hex>
holding our marker with that run id (`.attribution-pipeline-run.json`). A non-empty folder that
holds no run of ours is refused; so is a folder holding a complete run, unless `--overwrite`.
Replacing a run removes exactly the files of ours: anything else in the folder (a report.html, a
user's notes or .staging-photos folder, a file that merely looks like ours) is never touched, and
a staged file whose name is taken by such a file stops the run instead of replacing it.

Bookkeeping never follows a link: the record, its temporary file, the lock and staging markers
are opened with O_NOFOLLOW, and a link where one of them belongs is refused with one line (it
would make the run write where the link points).

Life cycle (one run at a time: pipeline.output_lock): `check_output` (read-only, on the launcher)
-> `claim` (the record, written before anything else) -> `open_staging` (the staging folder and
its marker, held with a lock of its own while the run lives, so that a second run never takes a
live run's staging for a dead one's) -> the pipeline writes into `OUTPUT/.staging-<id>/`
(`launch.json` first, `pipeline_done.json` as its very last step) ->
`commit`: the record grows to the old and the new names, the previous manifest and then the
previous files are deleted, the staged files are renamed into place, the record shrinks to the new
names and the staging folder is removed; the manifest is written after that (pipeline.manifest).
So a manifest with status 'complete' vouches for its own files, and a run killed at any point
leaves the previous result untouched, or files that the record still claims and the next run
replaces.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from audit import json_safe
from audit.runs import COUNTS_FILE, MANIFEST_NAME
from audit.summary_output import SUMMARY_FILES
from pipeline.output_lock import LOCK_FILE

__all__ = [
    "ATTRIBUTIONS_PREFIX", "DEAD_LETTER_PREFIX", "STAGING_PREFIX", "LAUNCH_FILE", "DONE_MARKER", "OWNER_FILE",
    "STAGING_MARKER", "OutputState", "StagingFolder", "inspect_output", "check_output", "check_output_outside_inputs",
    "check_inputs_outside_output", "claim",
    "open_staging", "staging_in_use", "staged_outputs", "stale_staging_dirs", "launched_staging_dirs", "remove_staging", "commit",
    "read_launch", "done_marker", "write_json", "read_json",
]

ATTRIBUTIONS_PREFIX = "attributions"
DEAD_LETTER_PREFIX = "dead_letter"
STAGING_PREFIX = ".staging-"
LAUNCH_FILE = "launch.json"
DONE_MARKER = "pipeline_done.json"
OWNER_FILE = ".attribution-pipeline.json"
_OWNER_TEMP = OWNER_FILE + ".tmp"
STAGING_MARKER = ".attribution-pipeline-run.json"
_STAGING_NAME = re.compile(r"\.staging-([0-9a-f]{12})\Z")
_BOOKKEEPING_FILES = (OWNER_FILE, _OWNER_TEMP, LOCK_FILE)
_TOOL = "attribution-pipeline"
# Result file names a run writes (staging holds nothing else of interest).
_RESULT_NAMES = (f"{ATTRIBUTIONS_PREFIX}-*", f"{DEAD_LETTER_PREFIX}-*", COUNTS_FILE, *SUMMARY_FILES)


def _filesystems():
    """Beam's FileSystems, imported when first needed: the launcher checks a local output folder
    before Beam (1-1.5 s) and TensorFlow are imported (pipeline.quick_checks)."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def write_json(path: str, document: Any) -> None:
    """Strict JSON: non-finite floats are written as null (see audit.json_safe)."""
    with _filesystems().create(path) as handle:
        handle.write(json_safe.dumps(document, indent=2).encode())


def read_json(path: str) -> Any:
    with _filesystems().open(path, compression_type="uncompressed") as handle:
        return json.loads(handle.read())


def _join(directory: str, name: str) -> str:
    return os.path.join(directory, name) if "://" not in directory else _filesystems().join(directory, name)


def _entries(directory: str) -> dict[str, str]:
    """{name: 'file' | 'dir' | 'link' | 'other'} for the entries directly inside `directory`
    ({} if absent). Links are not followed. On object stores a name that prefixes other objects
    is a 'dir'."""
    if "://" not in directory:
        if not os.path.isdir(directory):
            return {}
        with os.scandir(directory) as scan:
            return {entry.name: _kind(entry) for entry in scan}
    root = directory.rstrip("/") + "/"
    entries: dict[str, str] = {}
    for metadata in _filesystems().match([root + "**"])[0].metadata_list:
        if metadata.path.startswith(root):
            name, _, rest = metadata.path[len(root):].partition("/")
            entries[name] = "dir" if rest or entries.get(name) == "dir" else "file"
    return entries


def _kind(entry: os.DirEntry) -> str:
    if entry.is_symlink():
        return "link"
    if entry.is_dir(follow_symlinks=False):
        return "dir"
    return "file" if entry.is_file(follow_symlinks=False) else "other"


def _is_result_name(name: str) -> bool:
    return name == MANIFEST_NAME or any(fnmatch.fnmatchcase(name, pattern) for pattern in _RESULT_NAMES)


def _read_no_follow(path: str) -> Any:
    """JSON from a plain file, never through a link (local paths: O_NOFOLLOW, and not a FIFO or
    device, which could block or never end); object stores have no links."""
    if "://" in path:
        return read_json(path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path!r} is not a plain file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return json.loads(handle.read())
    finally:
        os.close(fd)


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
        return _read_no_follow(path)
    except (OSError, ValueError):  # absent, a link, or cut short by a kill
        return None


def _is_our_staging(output: str, name: str, kind: str) -> bool:
    """A real folder named .staging-<id> holding our marker with that id (see the module)."""
    match = _STAGING_NAME.match(name)
    if not match or kind != "dir":
        return False
    marker = _read_or_none(_join(_join(output, name), STAGING_MARKER))
    return isinstance(marker, dict) and marker.get("tool") == _TOOL and marker.get("run_id") == match.group(1)


@dataclass(frozen=True)
class OutputState:
    """What an output folder holds. entries: {name: kind} (see _entries); owned: names of result
    files of ours (record or manifest; see the module); staging: names of staging folders of
    ours; manifest: our manifest there, if any; ours: the folder holds a run of ours (or only our
    bookkeeping, or nothing)."""

    path: str
    entries: dict
    owned: frozenset
    staging: frozenset
    manifest: Optional[dict]
    ours: bool

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.entries))

    @property
    def complete(self) -> bool:
        return bool(self.manifest) and self.manifest.get("status") == "complete"

    @property
    def staging_paths(self) -> list[str]:
        """The paths of the staging folders of ours (runs killed before committing, not finalized, or live)."""
        return [_join(self.path, n) for n in sorted(self.staging)]

    def is_bookkeeping(self, name: str) -> bool:
        """Our own entries beside the results: ownership record, lock, staging folders of ours."""
        return name in _BOOKKEEPING_FILES or name in self.staging

    @property
    def foreign(self) -> list[str]:
        """Entries that are neither our result files nor our own bookkeeping."""
        return [n for n in self.names if n not in self.owned and not self.is_bookkeeping(n)]


def inspect_output(output: str) -> OutputState:
    """Reads what `output` holds. Raises ValueError when it is a file, or when a link stands where
    this program keeps its bookkeeping (the run would write where it points)."""
    if "://" not in output and os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output!r} is a file; it must be a folder (a new one, or a previous run's).")
    entries = _entries(output)
    linked = [n for n in _BOOKKEEPING_FILES if entries.get(n) == "link"]
    if linked:
        raise ValueError(
            f"output folder {output!r} holds {linked[0]!r} as a symbolic link, where this program keeps its own "
            f"bookkeeping; it never writes through a link. Remove the link ({_join(output, linked[0])}) and run again."
        )
    plain = {name for name, kind in entries.items() if kind == "file"}
    manifest = _read_or_none(_join(output, MANIFEST_NAME)) if MANIFEST_NAME in plain else None
    manifest = manifest if _is_our_manifest(manifest) else None
    record = _read_or_none(_join(output, OWNER_FILE)) if OWNER_FILE in plain else None
    record = record if isinstance(record, dict) and record.get("tool") == _TOOL else None
    if record is not None:
        claimed = {n for n in record.get("files") or () if isinstance(n, str)}
    elif manifest is not None:
        claimed = _manifest_file_names(manifest)
    else:
        claimed = set()
    owned = frozenset(n for n in claimed if _is_result_name(n) and n in plain)
    staging = frozenset(n for n, kind in entries.items() if _is_our_staging(output, n, kind))
    ours = manifest is not None or (record is not None and bool(owned | staging)) or all(
        n in _BOOKKEEPING_FILES or n in staging for n in entries)
    return OutputState(output, entries, owned, staging, manifest, ours)


def check_output(output: str, overwrite: bool) -> OutputState:
    """Refuses a folder that is not ours (not empty, no run of ours in it) and, unless
    `overwrite`, one that holds a complete run. Files of a run that did not complete are not a
    result anyone may rely on: they are replaced when the next run commits."""
    state = inspect_output(output)
    if not state.ours:
        shown = ", ".join(repr(n) for n in state.foreign[:3]) + (" ..." if len(state.foreign) > 3 else "")
        raise ValueError(
            f"output folder {output!r} is not empty and holds no run of this program ({len(state.foreign)} "
            f"entr{'ies' if len(state.foreign) != 1 else 'y'}: "
            f"{shown}); a run writes only into a new or empty folder or a previous run's. Choose another --output."
        )
    lookalikes = [n for n in state.foreign if _is_result_name(n)]
    if lookalikes:
        raise ValueError(
            f"output folder {output!r} holds {lookalikes[:3]}, which are not files of this program's runs but have the "
            f"names its results take; move them away or choose another --output."
        )
    if state.complete and not overwrite:
        raise ValueError(
            f"output {output!r} already holds a complete run ({len(state.owned)} files, e.g. {min(state.owned, default=MANIFEST_NAME)!r}); "
            f"choose a new --output or pass --overwrite to replace it."
        )
    return state


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def _real(path: str) -> str:
    """A local path with every symbolic link resolved (as far as it exists); others as given."""
    return path if "://" in path else os.path.realpath(path)


def _translate_pattern(pattern: str) -> str:
    from apache_beam.io.filesystem import FileSystem

    return FileSystem.translate_pattern(pattern)


def check_inputs_outside_output(output: str, input_files: Sequence[str]) -> None:
    """Refuses an output folder that holds input files (compared as written and with local links
    resolved): the run would replace or read its own results. No Beam needed."""
    root = _absolute(output).rstrip("/") + "/"
    real_root = _real(output).rstrip("/") + "/"
    inside = [f for f in input_files if _absolute(f).startswith(root) or _real(f).startswith(real_root)]
    if inside:
        raise ValueError(
            f"input file {inside[0]!r} is inside the output folder {output!r}: the run would replace or read its own "
            f"results. Write the output to a folder outside the input."
        )


def check_output_outside_inputs(output: str, patterns: Sequence[str], input_files: Sequence[str]) -> None:
    """Refuses an output folder that holds input files or that an input glob reaches into: the run
    (or the next one) would read its own results as input. Local paths are compared as written
    and with their links resolved (an output spelled through a link to the input folder)."""
    check_inputs_outside_output(output, input_files)
    root = _absolute(output).rstrip("/") + "/"
    real_root = _real(output).rstrip("/") + "/"
    names = [name.replace("*", "00000-of-00001.parquet") for name in (*_RESULT_NAMES, MANIFEST_NAME)]
    names += [STAGING_PREFIX + "0123456789ab/" + name for name in names]
    for pattern in patterns:
        spellings = {(_absolute(pattern), root), (_real(pattern), real_root)}
        reached = [name for spelled, base in spellings for name in names
                   if re.match(_translate_pattern(spelled), base + name)]
        if reached:
            raise ValueError(
                f"input pattern {pattern!r} would match files the run writes into --output {output!r} (e.g. "
                f"{reached[0]!r}), so runs would read their own results. Choose an output outside the input glob."
            )


def _write_record(output: str, names: set) -> None:
    """The ownership record, replaced whole (written aside, then renamed over the old one)."""
    temp = _join(output, _OWNER_TEMP)
    document = {"tool": _TOOL, "files": sorted(names)}
    if "://" not in output:
        os.close(_write_no_follow(temp, document))
        os.replace(temp, _join(output, OWNER_FILE))  # replaces a link itself, never its target
    else:
        write_json(temp, document)
        _filesystems().rename([temp], [_join(output, OWNER_FILE)])


def _write_no_follow(path: str, document: Any, exclusive: bool = False) -> int:
    """Writes JSON to a local plain file, refusing to open it through a link; returns the open
    descriptor (the caller closes it)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ValueError(f"{path!r} is a symbolic link; this program never writes its bookkeeping through a link. "
                             f"Remove the link and run again.") from None
        raise
    os.write(fd, json_safe.dumps(document, indent=2).encode())
    return fd


def claim(state: OutputState) -> None:
    """Writes the ownership record (keeping the names it already claims) before anything else."""
    _write_record(state.path, set(state.owned))


def staged_outputs(staging: str) -> list[str]:
    """The result files in a staging folder."""
    patterns = [_join(staging, name) for name in _RESULT_NAMES]
    return [m.path for result in _filesystems().match(patterns) for m in result.metadata_list]


@dataclass
class StagingFolder:
    """A run's staging folder. fd: its marker, held with an exclusive flock while the run lives
    (local folders; None on object stores, which have no locks)."""

    path: str
    fd: Optional[int] = None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_staging(output: str, run_id: str) -> StagingFolder:
    """Creates `OUTPUT/.staging-<run_id>/` with our marker, before anything else goes in."""
    if not re.fullmatch(r"[0-9a-f]{12}", run_id):
        raise ValueError(f"run id {run_id!r} is not 12 hex digits")
    path = _join(output, STAGING_PREFIX + run_id)
    marker = {"tool": _TOOL, "run_id": run_id, "pid": os.getpid()}
    if "://" in output:
        write_json(_join(path, STAGING_MARKER), marker)
        return StagingFolder(path)
    import fcntl

    os.mkdir(path)
    fd = _write_no_follow(_join(path, STAGING_MARKER), marker, exclusive=True)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return StagingFolder(path, fd)


def staging_in_use(staging: str) -> bool:
    """Whether a live run holds this staging folder's marker (local folders; False elsewhere)."""
    if "://" in staging:
        return False
    import fcntl

    try:
        fd = os.open(_join(staging, STAGING_MARKER), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def stale_staging_dirs(output: str) -> list[str]:
    """Staging folders of ours in `output` (runs killed before committing, not finalized, or live)."""
    return inspect_output(output).staging_paths


def launched_staging_dirs(output: str) -> list[str]:
    """Staging folders of ours holding a launch.json: runs that can be finalized."""
    return [d for d in stale_staging_dirs(output) if _filesystems().exists(_join(d, LAUNCH_FILE))]


def remove_staging(staging: str) -> None:
    """Deletes a staging folder if it is there (a failed run cleans up after itself)."""
    if "://" not in staging:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
        return
    # Object stores have no folders: delete every object under the prefix (a delete of the bare
    # path deleted nothing on S3, and Beam's directory delete differs per store).
    objects = [m.path for m in _filesystems().match([staging.rstrip("/") + "/**"])[0].metadata_list]
    if objects:
        _filesystems().delete(objects)


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
    present = sorted(state.owned)
    if MANIFEST_NAME in present:  # the previous result stops being vouched for first
        _filesystems().delete([_join(output, MANIFEST_NAME)])
    others = [_join(output, n) for n in present if n != MANIFEST_NAME]
    if others:
        _filesystems().delete(others)
    if staged:
        _filesystems().rename(staged, [_join(output, path.rstrip("/").rsplit("/", 1)[-1]) for path in staged])
    _write_record(output, new_names)
    remove_staging(staging)


def read_launch(staging: str) -> dict:
    """A staging folder's launch.json; {} when it is absent or unreadable (a local run killed
    while writing it: remote runs write theirs whole before the job is submitted)."""
    launch = _read_or_none(_join(staging, LAUNCH_FILE))
    return launch if isinstance(launch, dict) else {}


def done_marker(staging: str) -> Optional[dict]:
    path = _join(staging, DONE_MARKER)
    return read_json(path) if _filesystems().exists(path) else None
