"""Dataset-level summaries of attribution rows, accumulated batch by batch and merged (no Beam).

`summarize_batch` turns one batch of output rows into a `RunSummary`; `RunSummary.merge` combines
two in any order; `RunSummary.finalize` gives the tables and the JSON an auditor reads. Groups:
the whole run ('overall'/'all'), each explained class ('target'/'3'), and each value of every
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

import zlib
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pyarrow as pa

from audit.moments import Moments, RowSample, grouped_moments
from audit.token_importance import TokenTotals

__all__ = ["FeatureSpec", "TokenFeatureSpec", "SummarySpec", "GroupSummary", "RunSummary", "Exemplars", "best_per_class", "summarize_batch", "QUANTILES", "DELTA_EDGES"]

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
# Fixed edges of the completeness-error histogram (relative error), so counts merge exactly.
DELTA_EDGES = (0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.5, 1.0, np.inf)
OTHER_VALUE = "__other__"
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
        )


def best_per_class(order: np.ndarray, targets: np.ndarray, capacity: int) -> np.ndarray:
    """Indices of the best row (smallest `order`; NaN after every number) of each class, best
    classes first, at most `capacity` of them. order, targets: (n,). Ties keep the earlier row.

    The same as ranking every row with a stable sort and keeping each class's first, in O(n): the
    per-class minima come from unbuffered ufunc reductions, and only the classes are sorted."""
    rows = len(order)
    if rows == 0:
        return np.zeros(0, dtype=np.int64)
    _, codes = np.unique(targets, return_inverse=True)
    codes = codes.reshape(-1)  # (n,) class of each row, 0..G-1
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


@dataclass
class RunSummary:
    """Everything summarized so far; merge() is associative and commutative (up to float rounding)."""

    spec: SummarySpec
    groups: dict[tuple[str, str], GroupSummary] = field(default_factory=dict)
    rows_not_finite: int = 0
    slice_values: dict[str, set] = field(default_factory=dict)
    exemplars: dict[str, Exemplars] = field(default_factory=dict)
    tokens: dict[str, TokenTotals] = field(default_factory=dict)  # per token feature

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
            if kind.startswith("slice:") and value not in slice_values[kind[6:]]:
                value = self._admit_slice_value(slice_values[kind[6:]], value)
            key = (kind, value)
            groups[key] = groups[key].merge(group) if key in groups else group
        exemplars = dict(self.exemplars)
        for name, chosen in other.exemplars.items():
            exemplars[name] = exemplars[name].merge(chosen) if name in exemplars else chosen
        tokens = dict(self.tokens)
        for name, totals in other.tokens.items():
            tokens[name] = tokens[name].merge(totals) if name in tokens else totals
        return RunSummary(self.spec, groups, self.rows_not_finite + other.rows_not_finite, slice_values, exemplars, tokens)

    def sample_bounds(self) -> dict:
        """{group key: its row sample's bound} for the groups whose sample is full (see
        `summarize_batch`)."""
        bounds = {key: group.sample.bound for key, group in self.groups.items()}
        return {key: bound for key, bound in bounds.items() if bound is not None}

    def _admit_slice_value(self, seen: set, value: str) -> str:
        if value == OTHER_VALUE or len(seen) < self.spec.max_slice_values:
            seen.add(value)
            return value
        return OTHER_VALUE


def _attribution_matrices(spec: SummarySpec, table: pa.Table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(R, F) feature values (tensor columns: per-row totals) and (R, L) per tensor column."""
    rows = table.num_rows
    values = np.empty((rows, len(spec.features)), dtype=np.float64)
    elements = {}
    for j, feature in enumerate(spec.features):
        column = table.column(f"attr_{feature.name}").combine_chunks()
        if feature.is_tensor:
            block = column.flatten().to_numpy(zero_copy_only=False).reshape(rows, feature.length)  # (R, L)
            elements[feature.name] = block
            values[:, j] = block.sum(axis=1, dtype=np.float64)
        else:
            values[:, j] = column.to_numpy(zero_copy_only=False)
    return values, elements


def _ranks(example_index: np.ndarray) -> np.ndarray:
    """(R,) 0-based rank of each row within its record: rows of one record are adjacent, in rank
    order (top_k: the record's top class first), so a row's rank is its distance from the first."""
    _, first, inverse = np.unique(example_index, return_index=True, return_inverse=True)
    return np.arange(len(example_index)) - first[inverse.reshape(-1)]


def _group_codes(spec: SummarySpec, table: pa.Table, targets: np.ndarray, ranks: Optional[np.ndarray]) -> list[tuple[str, list[str], np.ndarray]]:
    """(group kind, value names, codes (R,)) for every grouping of the rows; ranks (R,) 0-based,
    None when every record has one row."""
    groupings = [("overall", ["all"], np.zeros(len(targets), dtype=np.int64))]
    classes, codes = np.unique(targets, return_inverse=True)
    groupings.append(("target", [str(c) for c in classes], codes.reshape(-1)))
    if ranks is not None:
        values, codes = np.unique(ranks, return_inverse=True)
        groupings.append(("rank", [str(v + 1) for v in values], codes.reshape(-1)))
    for name in spec.slice_columns:
        encoded = table.column(name).combine_chunks().dictionary_encode()  # per distinct value, not per row
        names = [str(v) for v in encoded.dictionary.to_pylist()]
        codes = encoded.indices.fill_null(len(names)).to_numpy(zero_copy_only=False).astype(np.int64)
        if encoded.null_count:
            names.append(NULL_VALUE)
        names, inverse = np.unique(np.array(names, dtype=object), return_inverse=True)  # values equal as text share a group
        groupings.append((f"slice:{name}", [str(n) for n in names], inverse.reshape(-1)[codes]))
    return groupings


def _delta_bins(deltas: np.ndarray) -> np.ndarray:
    """The DELTA_EDGES bin of each value, as np.histogram bins them ([a, b), the last [a, b])."""
    edges = np.array(DELTA_EDGES)
    bins = np.searchsorted(edges, np.nan_to_num(deltas, nan=0.0), side="right") - 1
    return np.clip(bins, 0, len(edges) - 2)


def summarize_batch(
    spec: SummarySpec, table: pa.Table, inputs: tuple, example_index: np.ndarray, sample_bounds: Optional[dict] = None
) -> RunSummary:
    """The summary of one batch of output rows.

    table: output rows (transforms.output); inputs: the batch's model inputs, one (B, *shape)
    array each; example_index: (R,) the record of each row (rows of one record share inputs).
    sample_bounds: {group key: bound}, the `sample_bounds()` of the summary this one will be
    merged into: a group's rows at or above its bound are left out of its row sample, since they
    could not survive that merge (the merged result is the same; far less is copied once the
    samples are full).
    """
    finite = table.column("attributions_finite").to_numpy(zero_copy_only=False)  # (R,) bool
    summary = RunSummary.empty(spec)
    summary.rows_not_finite = int((~finite).sum())
    table = table.filter(pa.array(finite)) if not finite.all() else table
    example_index = np.asarray(example_index)
    # top_k: several rows per record (in every batch, so every batch groups by rank alike).
    several_per_record = len(example_index) > 1 and bool((example_index[1:] == example_index[:-1]).any())  # rows of a record are adjacent
    ranks = _ranks(example_index)[finite] if several_per_record else None  # (R,)
    example_index = example_index[finite]
    if table.num_rows == 0:
        return summary
    values, elements = _attribution_matrices(spec, table)  # (R, F), {name: (R, L)}
    scores = table.column("target_score").to_numpy(zero_copy_only=False).astype(np.float64)  # (R,)
    deltas = (
        table.column("completeness_error").to_numpy(zero_copy_only=False).astype(np.float64)
        if spec.path_method else np.full(table.num_rows, np.nan)
    )  # (R,)
    targets = table.column("target").to_numpy(zero_copy_only=False)
    keys = table.column(0)
    seed = zlib.crc32(f"{keys[0].as_py()}|{table.num_rows}".encode())
    priorities = np.random.default_rng(seed).random(table.num_rows)  # (R,) sample priorities
    sample_rows = np.column_stack([values, scores, deltas])  # (R, F + 2)
    # One matrix for every grouping's moments: [features | each tensor's elements | score].
    blocks = [values, *elements.values(), scores[:, None]]
    bounds = np.cumsum([0] + [b.shape[1] for b in blocks])  # column ranges of the blocks
    groupings = _group_codes(spec, table, targets, ranks)
    all_moments = grouped_moments(
        np.concatenate(blocks, axis=1, dtype=np.float32), [(codes, len(names)) for _, names, codes in groupings], overwrite_values=True
    )

    steps_used = table.column("steps_used").to_numpy(zero_copy_only=False) if spec.adaptive else None  # (R,)
    met = table.column("completeness_met").to_numpy(zero_copy_only=False) if spec.adaptive else None  # (R,)
    finite_delta = np.isfinite(deltas)  # (R,)
    delta_bins = _delta_bins(deltas)  # (R,) histogram bin of each row (NaN rows: ignored)
    bins = len(DELTA_EDGES) - 1
    for (kind, names, codes), moments in zip(groupings, all_moments):
        groups = len(names)
        order = np.argsort(codes, kind="stable")  # rows grouped, in order
        counts = np.bincount(codes, minlength=groups)
        starts = np.cumsum(counts) - counts
        score_min = np.minimum.reduceat(scores[order], starts)  # (G,)
        score_max = np.maximum.reduceat(scores[order], starts)
        with_delta = np.bincount(codes, weights=finite_delta, minlength=groups)
        over = np.bincount(codes, weights=deltas > spec.completeness_threshold, minlength=groups)
        histograms = np.bincount(codes[finite_delta] * bins + delta_bins[finite_delta], minlength=groups * bins)
        histograms = histograms.reshape(groups, bins).astype(np.int64)
        for code, name in enumerate(names):
            rows = order[starts[code] : starts[code] + counts[code]]
            value = summary._admit_slice_value(summary.slice_values[kind[6:]], name) if kind.startswith("slice:") else name
            key = (kind, value)
            bound = sample_bounds.get(key) if sample_bounds else None
            sampled = rows if bound is None else rows[priorities[rows] < bound]
            part = moments[code].columns
            group = GroupSummary(
                part(bounds[0], bounds[1]),
                {n: part(bounds[i + 1], bounds[i + 2]) for i, n in enumerate(elements)},
                part(bounds[-2], bounds[-1]),
                float(score_min[code]),
                float(score_max[code]),
                int(with_delta[code]),
                int(over[code]),
                histograms[code],
                RowSample.of(spec.sample_size, priorities[sampled], sample_rows[sampled]),
                _value_counts(steps_used[rows]) if spec.adaptive else {},
                int(met[rows].sum()) if spec.adaptive else 0,
            )
            summary.groups[key] = summary.groups[key].merge(group) if key in summary.groups else group
    for token_feature in spec.token_features:
        j = [f.name for f in spec.features].index(token_feature.name)
        attributions = elements.get(token_feature.name, values[:, j : j + 1])  # (R, positions)
        ids = np.asarray(inputs[token_feature.input_index])[example_index].reshape(table.num_rows, -1)  # (R, positions)
        valid = None if token_feature.padding_id is None else ids != token_feature.padding_id
        summary.tokens[token_feature.name] = TokenTotals.of_batch(targets, ids, attributions, valid)
    primary = np.arange(table.num_rows) if ranks is None else np.flatnonzero(ranks == 0)  # top_k: rank-1 rows only
    summary.exemplars = _exemplars(spec, keys, targets, scores, deltas, inputs, example_index, values, elements, primary)
    return summary


def _value_counts(values: np.ndarray) -> dict[int, int]:
    """{value: rows} of an int array, values ascending."""
    distinct, counts = np.unique(values, return_counts=True)
    return {int(v): int(c) for v, c in zip(distinct, counts)}


def _exemplars(spec, keys, targets, scores, deltas, inputs, example_index, values, elements, primary: np.ndarray) -> dict[str, Exemplars]:
    """The exemplars of each criterion among the rows `primary` (indices into the batch's rows)."""
    orders = {"highest_score": -scores, "lowest_score": scores}
    if spec.path_method:
        orders.update(most_faithful=deltas, least_faithful=-deltas)
    n = spec.exemplars_per_criterion
    chosen = {}
    for name, order in orders.items():
        rows = primary[best_per_class(order[primary], targets[primary], n)]
        records = example_index[rows]
        flat_inputs = np.concatenate([np.asarray(x)[records].reshape(len(rows), -1) for x in inputs], axis=1)
        chosen[name] = Exemplars(
            n, order[rows], keys.take(pa.array(rows, pa.int64())).to_pylist(), targets[rows].astype(np.int64), scores[rows], deltas[rows],
            flat_inputs.astype(np.float32), _attribution_rows(spec, values, elements, rows),
        )
    return chosen


def _attribution_rows(spec: SummarySpec, values: np.ndarray, elements: dict, rows: np.ndarray) -> np.ndarray:
    """(len(rows), sum of feature lengths) float32 attributions of the chosen rows, source columns
    concatenated, read from the batch's matrices (float32 values held in float64: exact)."""
    parts = [elements[f.name][rows] if f.is_tensor else values[rows, j : j + 1] for j, f in enumerate(spec.features)]
    return np.concatenate(parts, axis=1).astype(np.float32)
