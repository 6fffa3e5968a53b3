"""JSON that every parser reads: non-finite floats (NaN, ±inf) become null.

Python's `json` writes NaN and Infinity as bare words by default, which is not JSON (RFC 8259):
strict parsers (JavaScript's JSON.parse, jq, BigQuery) reject the whole document. Every JSON file
the pipeline writes (manifest.json, launch.json, summary.json, record_counts.json, compare --json)
goes through `dumps`, which also refuses any value it does not know how to write.
"""

from __future__ import annotations

import json
import math
from typing import Any, Optional

__all__ = ["json_ready", "dumps"]


def json_ready(value: Any) -> Any:
    """`value` with every non-finite float (numpy floats included) replaced by None."""
    if isinstance(value, float) or _is_numpy_float(value):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def dumps(document: Any, indent: Optional[int] = None) -> str:
    """The document as strict JSON text (non-finite floats as null)."""
    return json.dumps(json_ready(document), indent=indent, allow_nan=False)


def _is_numpy_float(value: Any) -> bool:
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and value.dtype.kind == "f"
