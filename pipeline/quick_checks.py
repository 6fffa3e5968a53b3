"""Checks the command line runs before TensorFlow and Beam are imported (3-6 s of every start): a
missing local model, a local output folder that is not ours or holds a complete run
(pipeline.output_dir.check_output), and for local Parquet input the columns named as key,
pass-through, slice or label. Answered in about a second, in the words the full checks (pipeline.plan) use; anything
these cannot see (buckets, TFRecord features) is left to those.
"""

from __future__ import annotations

import difflib
import glob
import os
from typing import Optional

from pipeline.config import RunConfig

__all__ = ["check_quickly", "did_you_mean"]


def check_quickly(config: RunConfig) -> None:
    """Raises ValueError for a local model path that does not exist, a local output folder the run
    may not write into, or a named column that the first local Parquet input file does not have."""
    if "://" not in config.model and not os.path.exists(config.model):
        raise ValueError(f"model path {config.model!r} does not exist; pass a .keras/.h5 file or a SavedModel directory.")
    if "://" not in config.output:
        from pipeline.output_dir import check_inputs_outside_output, check_output

        local_inputs = [f for pattern in config.input if "://" not in pattern for f in sorted(glob.glob(os.path.abspath(pattern)))]
        check_inputs_outside_output(config.output, local_inputs)  # the sharper message for an input inside the output
        check_output(config.output, config.overwrite)
    first = _first_local_parquet(config)
    if first is None:
        return
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(first).names
    except Exception:  # noqa: BLE001 - an unreadable footer is reported by the full checks, with their words
        return
    target = config.target_spec()
    roles = [("key column", config.key_column), *(("pass-through column", c) for c in config.passthrough_columns),
             *(("slice column", c) for c in config.slice_columns), ("label column", target.column if target.mode == "label" else None)]
    for role, column in roles:
        if column is not None and column not in names:
            shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
            raise ValueError(f"{role} {column!r} is not a column of the input{did_you_mean(column, names)}. "
                             f"Input columns ({os.path.basename(first)}): {shown}")


def did_you_mean(column: str, names) -> str:
    """' (did you mean 'ID'?)' for a column of another case or a near spelling; '' otherwise."""
    same_case = [c for c in names if c.lower() == column.lower()]
    close = same_case or difflib.get_close_matches(column, list(names), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _first_local_parquet(config: RunConfig) -> Optional[str]:
    """The first file the full checks read the columns from, when it is a local Parquet file."""
    pattern = config.input[0]
    if "://" in pattern or config.input_format == "tfrecord":
        return None
    matched = sorted(glob.glob(os.path.abspath(pattern)))
    if not matched or not os.path.isfile(matched[0]):
        return None
    if config.input_format == "auto" and not matched[0].lower().endswith((".parquet", ".pq")):
        return None
    return matched[0]
