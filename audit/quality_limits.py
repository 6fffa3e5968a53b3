"""Limits on the quality audit's numbers that turn a result into the run's exit status (scheduled
audits): `--quality-limit randomisation<=0.5` fails the run's exit status (6) when the median
Spearman between the trained and the shuffled model's attributions is above 0.5. Off by default.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Optional

__all__ = ["QUALITY_NUMBERS", "parse_quality_limits", "breached_limits", "headline"]

# name -> (where the audit keeps it in summary.json's `quality`, what it is, a limit users set)
QUALITY_NUMBERS = {
    "randomisation": (("randomisation", "spearman", "median"), "median Spearman of |attr|, trained vs shuffled weights", "<=0.5"),
    "input_dominance": (("input_dominance", "spearman", "median"), "median Spearman of |attr| with |x - baseline|", "<=0.9"),
    "deletion_gap": (("deletion", "gap"), "deletion area of a random order minus the attribution order's, as a share of |F(x) - F(baseline)|", ">=0.05"),
    "insertion_gap": (("insertion", "gap"), "insertion area of the attribution order minus a random order's, as a share of |F(x) - F(baseline)|", ">=0.05"),
    "infidelity": (("infidelity", "share", "median"), "median share of the perturbations' effect the attributions leave unexplained", "<=0.5"),
    "sensitivity": (("sensitivity_max", "median"), "median sensitivity-max (relative change of the attributions)", "<=0.2"),
    "baseline_sensitivity": (("baseline_sensitivity", "spearman"), "Spearman of mean |attr| per unit under two baselines", ">=0.7"),
}
_LIMIT = re.compile(r"\s*(<=|>=)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\Z")


def parse_quality_limits(values: Any) -> dict[str, str]:
    """{name: '<=X' | '>=X'} from a mapping (YAML) or 'name<=X' strings (flags); canonical form.
    Raises ValueError naming the known numbers for anything else."""
    if isinstance(values, (list, tuple)):
        pairs = {}
        for item in values:
            match = re.match(r"\s*([a-z_]+)\s*((?:<=|>=).*)\Z", item) if isinstance(item, str) else None
            if not match:
                raise ValueError(f"quality limit {item!r}: expected NAME<=VALUE or NAME>=VALUE, e.g. randomisation<=0.5.")
            pairs[match.group(1)] = match.group(2)
        values = pairs
    if not isinstance(values, Mapping):
        raise ValueError(f"quality_limits must map a quality number to a limit, e.g. {{randomisation: '<=0.5'}}; got {values!r}.")
    limits = {}
    for name, text in values.items():
        if name not in QUALITY_NUMBERS:
            raise ValueError(f"quality limit on {name!r}: not a quality number; known: {sorted(QUALITY_NUMBERS)}.")
        match = _LIMIT.match(str(text))
        if not match:
            raise ValueError(f"quality limit {name}{text}: expected <=VALUE or >=VALUE with a number, e.g. "
                             f"{name}{QUALITY_NUMBERS[name][2]}.")
        limits[name] = f"{match.group(1)}{float(match.group(2)):g}"
    return limits


def headline(quality: Mapping[str, Any], name: str) -> Optional[float]:
    """The audit's number for a limit name (None where the audit did not compute it)."""
    value: Any = quality
    for part in QUALITY_NUMBERS[name][0]:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, (int, float)) and value == value else None


def breached_limits(quality: Mapping[str, Any], limits: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """{name: {limit, value, passed}} per limit; a number the audit could not compute (e.g. no
    baseline to vary) fails its limit: a scheduled audit should not pass on a check it skipped."""
    results = {}
    for name, limit in limits.items():
        value = headline(quality, name)
        bound = float(limit[2:])
        passed = value is not None and (value <= bound if limit.startswith("<=") else value >= bound)
        results[name] = {"limit": limit, "value": value, "passed": passed}
    return results
