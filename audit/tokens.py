"""Dataset-level token / category importance for inputs attributed at a layer (no Beam).

For each such input (token ids, category ids, text; see attributions.layers), every non-padding
position of every row adds its attribution to the (explained class, token) it holds: the token is
the model's vocabulary entry at that position (`tokens_<column>`) or, without a vocabulary, the id
itself. Accumulated as exact counts and float64 sums, so batches merge in any order; finalized as
the tokens with the highest (and lowest) mean attribution per class, with their counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["TokenTotals", "token_totals", "token_importance", "MIN_COUNT", "TOP"]

# Tokens seen fewer times than this in a class are left out of its ranking (a mean over one or
# two positions ranks noise); their counts stay in the totals.
MIN_COUNT = 3
TOP = 20
PADDING = ""


@dataclass
class TokenTotals:
    """{feature: {(class, token): [positions, sum of attributions]}}."""

    totals: dict[str, dict[tuple[int, str], list]] = field(default_factory=dict)

    def merge(self, other: "TokenTotals") -> "TokenTotals":
        merged = {name: {k: list(v) for k, v in table.items()} for name, table in self.totals.items()}
        for name, table in other.totals.items():
            into = merged.setdefault(name, {})
            for key, (count, total) in table.items():
                if key in into:
                    into[key][0] += count
                    into[key][1] += total
                else:
                    into[key] = [count, total]
        return TokenTotals(merged)


def token_totals(name: str, tokens: np.ndarray, attributions: np.ndarray, targets: np.ndarray) -> TokenTotals:
    """tokens: object (R, L) str (PADDING at padding positions); attributions: (R, L);
    targets: (R,) the explained class of each row."""
    tokens = np.asarray(tokens, dtype=object)
    keep = tokens != PADDING  # (R, L)
    classes = np.broadcast_to(np.asarray(targets).reshape(-1, 1), tokens.shape)[keep]  # (K,)
    names, codes = np.unique(tokens[keep].astype(str), return_inverse=True)
    class_values, class_codes = np.unique(classes, return_inverse=True)
    combined = class_codes.reshape(-1) * len(names) + codes.reshape(-1)  # (K,)
    size = len(class_values) * len(names)
    counts = np.bincount(combined, minlength=size)
    sums = np.bincount(combined, weights=np.asarray(attributions, dtype=np.float64)[keep], minlength=size)
    table = {
        (int(class_values[i // len(names)]), str(names[i % len(names)])): [int(counts[i]), float(sums[i])]
        for i in np.flatnonzero(counts)
    }
    return TokenTotals({name: table})


def token_importance(totals: TokenTotals, top: int = TOP, min_count: int = MIN_COUNT) -> dict:
    """{feature: {class: {"highest": [...], "lowest": [...], "tokens": distinct tokens}}}, each entry
    {"token", "mean_attribution", "count"}, ranked by mean attribution among tokens seen at least
    `min_count` times in that class."""
    document = {}
    for name, table in sorted(totals.totals.items()):
        by_class: dict[int, list] = {}
        for (cls, token), (count, total) in table.items():
            by_class.setdefault(cls, []).append({"token": token, "mean_attribution": total / count, "count": count})
        document[name] = {}
        for cls in sorted(by_class):
            entries = [e for e in by_class[cls] if e["count"] >= min_count]
            entries.sort(key=lambda e: (-e["mean_attribution"], e["token"]))
            document[name][str(cls)] = {
                "tokens": len(by_class[cls]),
                "highest": entries[:top],
                "lowest": entries[::-1][:top],
            }
    return document
