"""Reading a finished run's manifest and summaries (local paths or any pyarrow filesystem URI)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import pyarrow as pa
import pyarrow.fs
import pyarrow.parquet as pq

from audit.summary_output import EXEMPLARS_FILE, FEATURES_FILE, POINTS_FILE, SUMMARY_FILE, TOKENS_FILE

__all__ = ["RunResult", "load_run", "MANIFEST_NAME", "COUNTS_FILE"]

MANIFEST_NAME = "manifest.json"
COUNTS_FILE = "record_counts.json"  # written by transforms.count


@dataclass(frozen=True)
class RunResult:
    """A complete run: its manifest, summary.json and the summary tables (tokens: the token totals
    of a run with inputs attributed at a layer, else None)."""

    path: str
    manifest: dict[str, Any]
    summary: dict[str, Any]
    features: pa.Table
    exemplars: pa.Table
    tokens: Optional[pa.Table] = None
    points: Optional[pa.Table] = None  # the beeswarm's sample (summary_points.parquet); None before it existed

    @property
    def groups(self) -> dict[tuple[str, str], dict[str, Any]]:
        return {(g["kind"], g["value"]): g for g in self.summary["groups"]}

    @property
    def class_names(self) -> list[str]:
        """The names the run gave its classes (--class-names), by index; [] when none."""
        return list((self.manifest.get("settings") or {}).get("class_names") or [])

    def class_label(self, value: Any) -> str:
        """'class 3', or 'cat (class 3)' when the run named its classes."""
        names, text = self.class_names, str(value)
        if text.isdigit() and int(text) < len(names):
            return f"{names[int(text)]} (class {text})"
        return f"class {text}"


def _filesystem(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def load_run(path: str, read_file: Optional[Callable[[str], Optional[bytes]]] = None) -> RunResult:
    """Loads a run directory; ValueError when it is not a complete run with summaries.
    read_file: full path -> the file's bytes, None when absent (default: pyarrow's filesystems;
    the command line passes Beam's, which take the run's filesystem options)."""
    if read_file is None:
        filesystem, root = _filesystem(path)
    else:
        root = path
    root = root.rstrip("/")

    def read_bytes(name: str) -> bytes:
        if read_file is not None:
            content = read_file(f"{root}/{name}")
            if content is None:
                raise ValueError(_missing(path, name))
            return content
        try:
            with filesystem.open_input_stream(f"{root}/{name}") as handle:
                return handle.read()
        except FileNotFoundError:
            raise ValueError(_missing(path, name)) from None

    manifest = json.loads(read_bytes(MANIFEST_NAME))
    if manifest.get("status") != "complete":
        raise ValueError(
            f"run {path!r} did not complete (manifest status {manifest.get('status')!r}: {manifest.get('failure')}); "
            f"compare and report only read complete runs."
        )
    summary = json.loads(read_bytes(SUMMARY_FILE))
    features = pq.read_table(pa.BufferReader(read_bytes(FEATURES_FILE)))
    exemplars = pq.read_table(pa.BufferReader(read_bytes(EXEMPLARS_FILE)))
    tokens = pq.read_table(pa.BufferReader(read_bytes(TOKENS_FILE))) if "token_importance" in summary else None
    points = pq.read_table(pa.BufferReader(read_bytes(POINTS_FILE))) if "points" in summary else None
    return RunResult(path, manifest, summary, features, exemplars, tokens, points)


def _missing(path: str, name: str) -> str:
    if name == MANIFEST_NAME:
        return (
            f"run {path!r} has no {MANIFEST_NAME}: it is not a run directory, or the run did not finish "
            f"(the manifest is written last)."
        )
    return f"run {path!r} has no {name}: it was run with summaries off; rerun it with --summaries."
