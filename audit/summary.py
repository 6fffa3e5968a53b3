"""Dataset-level summaries of attribution rows, accumulated batch by batch and merged (no Beam).

`RunSummary.merge` combines two in any order (`audit.summary_accumulator` builds them from
batches of output rows); `audit.summary_output` gives the tables and the JSON an auditor reads.
Groups: the whole run ('overall'/'all'), each explained class ('target'/'3'), and each value of every
slice column the user names ('slice:country'/'DE'; null values as '__null__', values past
`max_slice_values` distinct ones pooled as '__other__'), and, for a `top_k` run (several rows per
record), each rank ('rank'/'1' = each record's top class, '2' = its runner-up, ...): pooling the
ranks mixes confident top classes with unlikely runners-up (a bimodal score distribution).

Per group and feature (a scalar column's attribution, or a tensor column's per-row total): count,
mean, mean |attribution|, standard deviation (population) exactly, and quantiles estimated from a
uniform sample (see `audit.moments`). Per element of each tensor column: the same moments without
quantiles (the attribution maps). Rows whose attributions are not finite are counted, not summed.
Per group also: the explained score's distribution and, for path methods, the completeness error
(`completeness_error`, attributions.result): its exact histogram on fixed edges and the share of
rows over the threshold; with a completeness target (adaptive integrated gradients), the exact
distribution of `steps_used` (rows per value) and the rows that met the target.
Over the whole run: exemplars (highest/lowest scores, most/least faithful rows) with their inputs,
at most one per explained class and criterion, and for `top_k` runs from rank-1 rows only (see
`Exemplars`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from audit.moments import Moments, RowSample
from audit.token_importance import TokenTotals

__all__ = ["FeatureSpec", "TokenFeatureSpec", "SummarySpec", "GroupSummary", "RunSummary", "Exemplars", "best_per_class", "admit_slice_value", "distinct_class_ids", "QUANTILES", "DELTA_EDGES"]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# Fixed edges of the completeness-error histogram (relative error), so counts merge exactly.
DELTA_EDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.5, 1.0, np.inf)
OTHER_VALUE = "__other__"
# Rows kept for the beeswarm of scalar features (RunSummary.points): about the points a beeswarm
# can show per feature without hiding them under each other.
POINTS_SIZE = 1000
NULL_VALUE = "__null__"


@dataclass(frozen=True)
class FeatureSpec:
    """A source column of the model: its attribution column and, for a tensor column, its shape
    (the model input's shape when the column fills an input alone, else (length,))."""

    name: str
    length: int
    shape: tuple[int, ...] = ()

    @property
    def is_tensor(self) -> bool:
        return self.shape != ()


@dataclass(frozen=True)
class SummarySpec:
    """What to summarize. sample_size: rows kept per group for quantiles; completeness_threshold:
    completeness_error counted as too large (0.05 = 5 %)."""

    features: tuple[FeatureSpec, ...]
    path_method: bool
    slice_columns: tuple[str, ...] = ()
    sample_size: int = 2048
    completeness_threshold: float = 0.05
    max_slice_values: int = 1000
    exemplars_per_criterion: int = 6
    # Integrated gradients with a completeness target: rows carry steps_used and completeness_met.
    adaptive: bool = False
    # Inputs of token/category ids or text attributed at a layer: their per-position attributions
    # are also totalled per (class, token id) (audit.token_importance).
    token_features: tuple["TokenFeatureSpec", ...] = ()
    # Poisson bootstrap replicates of each group's per-feature means (audit.bootstrap); 0: none.
    bootstrap_replicates: int = 0


@dataclass(frozen=True)
class TokenFeatureSpec:
    """An input attributed per position at a layer. input_index: which of the batch's inputs holds
    its token ids, (B, positions) (the engine gives the vocabulary ids for text); vocabulary: id ->
    token when the model holds one; padding_id: the id of padding positions (left out), if any."""

    name: str
    input_index: int
    vocabulary: Optional[tuple[str, ...]] = None
    padding_id: Optional[int] = None



@dataclass
class GroupSummary:
    """One group's accumulators. sample columns: the F feature values, then score, then the
    completeness error. steps_counts {steps_used: rows} and rows_met: adaptive runs only."""

    features: Moments
    elements: dict[str, Moments]
    score: Moments
    score_min: float
    score_max: float
    rows_with_delta: int
    rows_over_threshold: int
    delta_histogram: np.ndarray  # (len(DELTA_EDGES) - 1,) int64
    sample: RowSample
    steps_counts: dict = field(default_factory=dict)
    rows_met: int = 0
    # (BUCKETS, 2F + 1) per-bucket sums for the Poisson bootstrap: sum |a_j|, sum a_j, rows
    # (audit.bootstrap); None: off.
    bootstrap: Optional[np.ndarray] = None

    @property
    def rows(self) -> int:
        return self.features.count

    def merge(self, other: "GroupSummary") -> "GroupSummary":
        return GroupSummary(
            self.features.merge(other.features),
            {name: m.merge(other.elements[name]) for name, m in self.elements.items()},
            self.score.merge(other.score),
            min(self.score_min, other.score_min),
            max(self.score_max, other.score_max),
            self.rows_with_delta + other.rows_with_delta,
            self.rows_over_threshold + other.rows_over_threshold,
            self.delta_histogram + other.delta_histogram,
            self.sample.merge(other.sample),
            {k: self.steps_counts.get(k, 0) + other.steps_counts.get(k, 0) for k in sorted({*self.steps_counts, *other.steps_counts})},
            self.rows_met + other.rows_met,
            None if self.bootstrap is None else self.bootstrap + other.bootstrap,
        )


def best_per_class(order: np.ndarray, targets: np.ndarray, capacity: int) -> np.ndarray:
    """Indices of the best row (smallest `order`; NaN after every number) of each class, best
    classes first, at most `capacity` of them. order, targets: (n,). Ties keep the earlier row.

    The same as ranking every row with a stable sort and keeping each class's first, in O(n): the
    per-class minima come from unbuffered ufunc reductions, and only the classes are sorted."""
    rows = len(order)
    if rows == 0:
        return np.zeros(0, dtype=np.int64)
    _, codes = distinct_class_ids(targets)  # (n,) class of each row, 0..G-1
    groups = int(codes.max()) + 1
    index = np.arange(rows)
    nan = np.isnan(order)
    best = np.full(groups, np.inf)  # (G,) each class's smallest number
    np.minimum.at(best, codes[~nan], order[~nan])
    tied = ~nan & (order == best[codes])
    first = np.full(groups, rows)  # (G,) each class's earliest row holding its best number
    np.minimum.at(first, codes[tied], index[tied])
    only_nan = first == rows  # classes whose rows are all NaN: their earliest row
    if only_nan.any():
        fallback = nan & only_nan[codes]
        np.minimum.at(first, codes[fallback], index[fallback])
    ranking = np.lexsort((first, best, only_nan))  # (G,) classes, best first
    return first[ranking][:capacity]


@dataclass
class Exemplars:
    """The extreme row of each explained class, for the `capacity` classes whose extreme row is
    best by `order` (smaller first), with what a report shows of them.

    Why one per class: the rows nearest an extreme are mostly near copies of one pattern (six
    equally confident images of the same digit, all scored 1.00), which teach nothing the first
    did not; the extreme of each class shows how the model's evidence differs between classes.
    The rule is exact under merging in any order: a class among the best `capacity` overall is
    among the best `capacity` in the part that holds its best row (every class ranked above it
    there is ranked above it overall too), so keeping that many per part loses nothing. A model
    with one explained class (a scalar output) therefore has one exemplar per criterion.
    """

    capacity: int
    order: np.ndarray  # (n,)
    keys: list
    targets: np.ndarray  # (n,) int
    scores: np.ndarray  # (n,)
    deltas: np.ndarray  # (n,) NaN without a delta
    inputs: np.ndarray  # (n, sum of feature lengths) float32, source columns concatenated row-major
    attributions: np.ndarray  # (n, sum of feature lengths) float32

    def entry_bounds(self, targets: np.ndarray) -> np.ndarray:
        """(n,) for rows of classes `targets` (n,): a row whose order is at or above its bound
        cannot be kept by `self.merge(part holding it)` (callers keep `~(order >= bound)`). A kept
        class's bound is its row's order (ties keep the earlier, kept row); another class's is the
        worst kept order once `capacity` classes are kept (it must rank above one of them), else
        NaN: no bound. NaN orders are never at or above a bound, so they always stay."""
        worst = np.max(self.order) if len(self.order) >= self.capacity else np.nan  # NaN if any kept order is NaN
        if _class_ids_as_indices(targets) and _class_ids_as_indices(self.targets):
            bound_of = np.full(max(int(targets.max()), int(self.targets.max())) + 1, worst)  # (classes,)
            bound_of[self.targets] = self.order  # one kept row per class
            return bound_of[targets]
        bounds = np.full(len(targets), worst, dtype=np.float64)
        for target, order in zip(self.targets.tolist(), self.order.tolist()):  # at most `capacity` classes
            bounds[targets == target] = order
        return bounds

    def merge(self, other: "Exemplars") -> "Exemplars":
        order = np.concatenate([self.order, other.order])
        targets = np.concatenate([self.targets, other.targets])
        keep = best_per_class(order, targets, self.capacity)
        keys = self.keys + other.keys
        return Exemplars(
            self.capacity,
            order[keep],
            [keys[i] for i in keep],
            targets[keep],
            np.concatenate([self.scores, other.scores])[keep],
            np.concatenate([self.deltas, other.deltas])[keep],
            np.concatenate([self.inputs, other.inputs])[keep],
            np.concatenate([self.attributions, other.attributions])[keep],
        )


def _class_ids_as_indices(targets: np.ndarray) -> bool:
    """Whether (n,) class ids can index a lookup table: non-empty, integers in [0, 65536)."""
    return len(targets) > 0 and targets.dtype.kind in "iu" and 0 <= targets.min() and targets.max() < 1 << 16


def distinct_class_ids(targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(targets, return_inverse=True) for (n,) ints: the distinct ids ascending and each
    row's code; class ids usable as indices are grouped by counting instead of sorting."""
    if _class_ids_as_indices(targets):
        present = np.flatnonzero(np.bincount(targets))  # (G,) ascending
        code_of = np.zeros(int(present[-1]) + 1, dtype=np.int64)
        code_of[present] = np.arange(len(present))
        return present.astype(targets.dtype), code_of[targets]
    distinct, inverse = np.unique(targets, return_inverse=True)
    return distinct, inverse.reshape(-1)


@dataclass
class RunSummary:
    """Everything summarized so far; merge() is associative and commutative (up to float rounding)."""

    spec: SummarySpec
    groups: dict[tuple[str, str], GroupSummary] = field(default_factory=dict)
    rows_not_finite: int = 0
    slice_values: dict[str, set] = field(default_factory=dict)
    exemplars: dict[str, Exemplars] = field(default_factory=dict)
    tokens: dict[str, TokenTotals] = field(default_factory=dict)  # per token feature
    # A uniform sample of rows (the primary rows of top_k runs) for the report's beeswarm: per
    # scalar feature its attribution, then per scalar feature its input value, (k, 2S).
    points: Optional[RowSample] = None

    @classmethod
    def empty(cls, spec: SummarySpec) -> "RunSummary":
        return cls(spec, slice_values={c: set() for c in spec.slice_columns})

    @property
    def rows(self) -> int:
        """Rows summarized (finite ones) plus rows not finite: every output row once."""
        overall = self.groups.get(("overall", "all"))
        return (overall.rows if overall else 0) + self.rows_not_finite

    def merge(self, other: "RunSummary") -> "RunSummary":
        groups = dict(self.groups)
        slice_values = {c: set(v) for c, v in self.slice_values.items()}
        for (kind, value), group in other.groups.items():
            if kind.startswith("slice:"):
                value = admit_slice_value(slice_values[kind[6:]], value, self.spec.max_slice_values)
            key = (kind, value)
            groups[key] = groups[key].merge(group) if key in groups else group
        exemplars = dict(self.exemplars)
        for name, chosen in other.exemplars.items():
            exemplars[name] = exemplars[name].merge(chosen) if name in exemplars else chosen
        tokens = dict(self.tokens)
        for name, totals in other.tokens.items():
            tokens[name] = tokens[name].merge(totals) if name in tokens else totals
        points = self.points if other.points is None else other.points if self.points is None else self.points.merge(other.points)
        return RunSummary(self.spec, groups, self.rows_not_finite + other.rows_not_finite, slice_values, exemplars, tokens, points)


def admit_slice_value(seen: set, value: str, limit: int) -> str:
    """The group value a slice value is summarized under: itself if it is in `seen` or fewer than
    `limit` values are (it is then added), else OTHER_VALUE (which is never added to `seen`)."""
    if value in seen or value == OTHER_VALUE:
        return value
    if len(seen) < limit:
        seen.add(value)
        return value
    return OTHER_VALUE
