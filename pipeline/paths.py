"""Paths as the user gave them, checked and written one way before any use.

`out//`, `out/./` and `out/` name the folder `out` names; left as given, string comparisons and
globs built from them disagree (a run into `out//` wrote its files, then found none of them when it
committed). Control characters (a trailing newline from a script, an escape sequence) make names
nobody can see or type, so they are refused.
"""

from __future__ import annotations

import os
import unicodedata

__all__ = ["normalized_path", "check_printable_path"]


def check_printable_path(value: str, setting: str) -> None:
    """Raises ValueError when `value` holds a control character (newline, tab, escape, ...)."""
    bad = [c for c in value if unicodedata.category(c) == "Cc"]
    if bad:
        raise ValueError(
            f"{setting} {value!r} contains the control character {bad[0]!r}"
            f"{' at its end' if value.endswith(bad[0]) else ''}; paths cannot hold newlines, tabs or escapes. "
            f"Remove it (a value read from a file or a command often ends with a newline)."
        )


def normalized_path(value: str, setting: str) -> str:
    """`value` with repeated '/', '.' segments and trailing '/' removed (local paths: also 'a/..'
    folded, as os.path.normpath does); 'scheme://bucket/path' keeps its scheme and bucket.
    Raises ValueError for control characters or an empty path."""
    check_printable_path(value, setting)
    if "://" in value:
        scheme, rest = value.split("://", 1)
        parts = [p for p in rest.split("/") if p not in ("", ".")]
        if not parts:
            raise ValueError(f"{setting} {value!r} names no bucket; write it {scheme}://BUCKET/FOLDER.")
        return f"{scheme}://" + "/".join(parts)
    if not value.strip():
        raise ValueError(f"{setting} {value!r} is empty; give a folder path.")
    normal = os.path.normpath(value)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal  # POSIX keeps a leading '//'; one is enough


