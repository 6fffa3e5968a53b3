"""Summaries built batch by batch from output rows (no Beam): `SummaryAccumulator`.

`SummaryAccumulator.add` takes one batch of output rows, `result` gives the `RunSummary` of all of
them: the same as summarizing each batch alone (`summarize_batch`) and merging the parts in the
order added (`RunSummary.merge`), up to float rounding where a batch pools several slice values
into '__other__'. What is kept per group lives in stacked arrays, one row per group, updated in
place with a few vectorised numpy calls per batch (no per-group objects or merges), and what a
batch could add to a full row sample or to the exemplars is found first, so little is copied once
they are full.
"""

from __future__ import annotations

import zlib
from typing import Optional

import numpy as np
import pyarrow as pa

from audit.bootstrap import BUCKETS, buckets_of, slices_bootstrapped
from audit.moments import RowSample, StackedMoments, stacked_moments
from audit.summary import (
    DELTA_EDGES, NULL_VALUE, POINTS_SIZE, Exemplars, GroupSummary, RunSummary, SummarySpec, admit_slice_value, best_per_class,
    distinct_class_ids,
)
from audit.token_importance import TokenTotals

__all__ = ["SummaryAccumulator", "summarize_batch"]

BINS = len(DELTA_EDGES) - 1


def summarize_batch(spec: SummarySpec, table: pa.Table, inputs: tuple, example_index: np.ndarray) -> RunSummary:
    """The summary of one batch of output rows (see `SummaryAccumulator.add`)."""
    accumulator = SummaryAccumulator(spec)
    accumulator.add(table, inputs, example_index)
    return accumulator.result()


class SummaryAccumulator:
    """The running summary of the batches added so far. Group g (in the order groups were first
    seen) is row g of every per-group array: moments (G, D) of the columns [features | each tensor
    feature's elements | score], score_min/score_max (G,), rows_with_delta/rows_over_threshold/
    rows_met (G,), delta_histograms (G, BINS), plus a row sample and (adaptive runs) steps counts."""

    def __init__(self, spec: SummarySpec):
        self.spec = spec
        self._keys: list[tuple[str, str]] = []
        self._index: dict[tuple[str, str], int] = {}
        self._slice_values: dict[str, set] = {c: set() for c in spec.slice_columns}
        self._batches = 0
        self._rows_not_finite = 0
        width = sum(f.length if f.is_tensor else 0 for f in spec.features) + len(spec.features) + 1
        self._moments = StackedMoments.empty(0, width)
        self._score_min = np.zeros(0)
        self._score_max = np.zeros(0)
        self._counters = np.zeros((0, 3 + BINS), dtype=np.int64)  # (G, [with delta, over threshold, met, histogram...])
        self._samples: list[RowSample] = []
        self._sample_bounds = np.zeros(0)  # (G,) each full sample's largest priority, +inf until full
        self._waiting: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per group: (priorities (n,), rows (n, F + 2)) not yet in its sample
        self._steps_counts: list[dict] = []
        self._exemplars: dict[str, Exemplars] = {}
        self._tokens: dict[str, TokenTotals] = {}
        self._scalars = [j for j, f in enumerate(spec.features) if not f.is_tensor]  # the beeswarm's features
        # (G, BUCKETS, 2F + 1) per-bucket sums for the Poisson bootstrap (audit.bootstrap), when replicates are asked for.
        self._bootstrap = np.zeros((0, BUCKETS, 2 * len(spec.features) + 1)) if spec.bootstrap_replicates else None
        self._slices_bootstrapped = slices_bootstrapped(len(spec.features), len(spec.slice_columns), spec.max_slice_values)
        self._points = RowSample.empty(POINTS_SIZE, 2 * len(self._scalars)) if self._scalars else None

    def add(self, table: pa.Table, inputs: tuple, example_index: np.ndarray) -> None:
        """table: one batch of output rows (transforms.output); inputs: the batch's model inputs,
        one (B, *shape) array each; example_index: (R,) the record of each row (rows of one record
        are adjacent and share inputs)."""
        spec = self.spec
        self._batches += 1
        finite = table.column("attributions_finite").to_numpy(zero_copy_only=False)  # (R,) bool
        self._rows_not_finite += int((~finite).sum())
        table = table.filter(pa.array(finite)) if not finite.all() else table
        example_index = np.asarray(example_index)
        # top_k: several rows per record (in every batch, so every batch groups by rank alike).
        several_per_record = len(example_index) > 1 and bool((example_index[1:] == example_index[:-1]).any())
        ranks = _ranks(example_index)[finite] if several_per_record else None  # (R,)
        example_index = example_index[finite]
        if table.num_rows == 0:
            return
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
        group_of_rows = [self._group_ids(kind, names)[codes] for kind, names, codes in _group_codes(spec, table, targets, ranks)]
        self._grow()
        self._add_moments(group_of_rows, [values, *elements.values(), scores[:, None]])
        steps_used = table.column("steps_used").to_numpy(zero_copy_only=False) if spec.adaptive else None  # (R,)
        met = table.column("completeness_met").to_numpy(zero_copy_only=False) if spec.adaptive else None  # (R,)
        for groups in group_of_rows:
            np.minimum.at(self._score_min, groups, scores)
            np.maximum.at(self._score_max, groups, scores)
            if spec.path_method:  # other methods have no deltas (NaN) and no counters
                self._add_delta_counts(groups, deltas, met)
            if steps_used is not None:
                self._add_steps(groups, steps_used)
            self._add_to_samples(groups, priorities, values, scores, deltas)
        if self._bootstrap is not None:
            self._add_bootstrap(group_of_rows, keys, values)
        for token_feature in spec.token_features:
            j = [f.name for f in spec.features].index(token_feature.name)
            attributions = elements.get(token_feature.name, values[:, j : j + 1])  # (R, positions)
            ids = np.asarray(inputs[token_feature.input_index])[example_index].reshape(table.num_rows, -1)  # (R, positions)
            valid = None if token_feature.padding_id is None else ids != token_feature.padding_id
            totals = TokenTotals.of_batch(targets, ids, attributions, valid)
            known = self._tokens.get(token_feature.name)
            self._tokens[token_feature.name] = totals if known is None else known.merge(totals)
        primary = np.arange(table.num_rows) if ranks is None else np.flatnonzero(ranks == 0)  # top_k: rank-1 rows only
        self._add_exemplars(keys, targets, scores, deltas, inputs, example_index, values, elements, primary)
        self._add_points(priorities, values, inputs, example_index, primary)

    def _add_bootstrap(self, group_of_rows: list[np.ndarray], keys: pa.ChunkedArray, values: np.ndarray) -> None:
        """Adds each (group, bucket)'s sums of |a|, a and its row count (audit.bootstrap): one
        sort and one reduceat per grouping."""
        buckets = buckets_of(keys)  # (R,)
        columns = np.column_stack([np.abs(values), values, np.ones(len(values))])  # (R, 2F + 1)
        for groups in group_of_rows:
            if not self._slices_bootstrapped and self._keys[int(groups[0])][0].startswith("slice:"):
                continue  # too many slice groups for their bucket sums (audit.bootstrap.SLICE_BOOTSTRAP_BYTES)
            cells = groups * BUCKETS + buckets  # (R,) one id per (group, bucket)
            order = np.argsort(cells, kind="stable")
            sorted_cells = cells[order]
            starts = np.flatnonzero(np.r_[True, sorted_cells[1:] != sorted_cells[:-1]])
            sums = np.add.reduceat(columns[order], starts, axis=0)  # (cells present, 2F + 1)
            present = sorted_cells[starts]
            self._bootstrap[present // BUCKETS, present % BUCKETS] += sums  # each (group, bucket) once

    def _add_points(self, priorities: np.ndarray, values: np.ndarray, inputs: tuple, example_index: np.ndarray, primary: np.ndarray) -> None:
        """Offers the beeswarm sample the rows `primary` that could enter it: each one's scalar
        features' attributions and input values. Inputs that do not line up with the features
        (a shape the summaries do not know) leave the sample out rather than misplace values."""
        if self._points is None:
            return
        rows = primary if self._points.bound is None else primary[priorities[primary] < self._points.bound]
        if len(rows) == 0:
            return
        columns = _scalar_input_columns(self.spec, inputs)
        if columns is None:
            self._points = None
            return
        flat = [np.asarray(x).reshape(len(x), -1) for x in inputs]
        records = example_index[rows]
        feature_values = np.column_stack([flat[k][records, c] for k, c in columns]).astype(np.float64)  # (n, S)
        offered = np.column_stack([values[rows][:, self._scalars], feature_values])  # (n, 2S)
        self._points = RowSample.of(POINTS_SIZE, np.concatenate([self._points.priorities, priorities[rows]]),
                                    np.concatenate([self._points.values, offered]))

    def result(self) -> Optional[RunSummary]:
        """The summary of every batch added (None before the first); the accumulator stays usable."""
        if self._batches == 0:
            return None
        spec, moments = self.spec, self._moments
        for g in range(len(self._keys)):
            self._fill_sample(g)
        bounds = np.cumsum([0, len(spec.features)] + [f.length for f in spec.features if f.is_tensor] + [1])  # column blocks
        tensors = [f.name for f in spec.features if f.is_tensor]
        groups = {}
        for g, key in enumerate(self._keys):
            counters = self._counters[g]
            groups[key] = GroupSummary(
                moments.row(g, bounds[0], bounds[1]),
                {name: moments.row(g, bounds[i + 1], bounds[i + 2]) for i, name in enumerate(tensors)},
                moments.row(g, bounds[-2], bounds[-1]),
                float(self._score_min[g]),
                float(self._score_max[g]),
                int(counters[0]),
                int(counters[1]),
                counters[3:].copy(),
                self._samples[g],
                dict(sorted(self._steps_counts[g].items())),  # steps_used ascending
                int(counters[2]),
                None if self._bootstrap is None or (key[0].startswith("slice:") and not self._slices_bootstrapped)
                else self._bootstrap[g].copy(),
            )
        slice_values = {c: set(v) for c, v in self._slice_values.items()}
        return RunSummary(spec, groups, self._rows_not_finite, slice_values, dict(self._exemplars), dict(self._tokens), self._points)

    def _group_ids(self, kind: str, names: list[str]) -> np.ndarray:
        """(len(names),) the row of each named group of `kind`, new groups appended (a slice value
        past the limit is the '__other__' group)."""
        ids = np.empty(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            if kind.startswith("slice:"):
                name = admit_slice_value(self._slice_values[kind[6:]], name, self.spec.max_slice_values)
            key = (kind, name)
            if key not in self._index:
                self._index[key] = len(self._keys)
                self._keys.append(key)
            ids[i] = self._index[key]
        return ids

    def _grow(self) -> None:
        """Room in every per-group array for the groups seen so far."""
        old, new = len(self._samples), len(self._keys)
        if new == old:
            return
        self._moments = self._moments.grown(new)
        self._score_min = np.concatenate([self._score_min, np.full(new - old, np.inf)])
        self._score_max = np.concatenate([self._score_max, np.full(new - old, -np.inf)])
        self._counters = np.concatenate([self._counters, np.zeros((new - old, self._counters.shape[1]), dtype=np.int64)])
        self._sample_bounds = np.concatenate([self._sample_bounds, np.full(new - old, np.inf)])
        width = len(self.spec.features) + 2
        self._samples += [RowSample.empty(self.spec.sample_size, width) for _ in range(new - old)]
        self._waiting += [[] for _ in range(new - old)]
        self._steps_counts += [{} for _ in range(new - old)]
        if self._bootstrap is not None:
            self._bootstrap = np.concatenate([self._bootstrap, np.zeros((new - old, *self._bootstrap.shape[1:]))])

    def _add_moments(self, group_of_rows: list[np.ndarray], blocks: list[np.ndarray]) -> None:
        """Merges the batch's moments of the columns `blocks` (R, D_i) into each group's."""
        present = np.flatnonzero(sum(np.bincount(groups, minlength=len(self._keys)) for groups in group_of_rows))  # (P,)
        dense = np.zeros(len(self._keys), dtype=np.int64)
        dense[present] = np.arange(len(present))
        batch = stacked_moments(blocks, [dense[groups] for groups in group_of_rows], len(present))
        self._moments.merge_into(present, batch)

    def _add_delta_counts(self, groups: np.ndarray, deltas: np.ndarray, met: Optional[np.ndarray]) -> None:
        """Adds the rows with a finite delta, those over the threshold, those that met the
        completeness target (adaptive runs), and the finite deltas' histogram bins."""
        size = len(self._keys)
        with_delta = np.isfinite(deltas)
        flags = [with_delta, deltas > self.spec.completeness_threshold] + ([met] if met is not None else [])
        for j, rows in enumerate(flags):
            self._counters[:, j] += np.bincount(groups, weights=rows, minlength=size).astype(np.int64)
        histograms = np.bincount(groups[with_delta] * BINS + _delta_bins(deltas[with_delta]), minlength=size * BINS)
        self._counters[:, 3:] += histograms.reshape(size, BINS)

    def _add_steps(self, groups: np.ndarray, steps_used: np.ndarray) -> None:
        pairs, counts = np.unique(np.stack([groups, steps_used.astype(np.int64)], axis=1), axis=0, return_counts=True)
        for (g, steps), count in zip(pairs.tolist(), counts.tolist()):
            known = self._steps_counts[g]
            known[steps] = known.get(steps, 0) + count

    def _add_to_samples(self, groups: np.ndarray, priorities: np.ndarray, values: np.ndarray, scores: np.ndarray, deltas: np.ndarray) -> None:
        """Offers each group's sample the rows that could enter it: those below a full sample's
        largest priority (all rows while it is not full). They wait beside a full sample until
        they number a quarter of `sample_size` (so waiting rows add at most a quarter to the
        samples' memory), then the sample keeps its smallest priorities of both."""
        candidates = np.flatnonzero(priorities < self._sample_bounds[groups])
        if len(candidates) == 0:
            return
        candidates = candidates[np.argsort(groups[candidates], kind="stable")]  # grouped
        group_of = groups[candidates]
        starts = np.flatnonzero(np.r_[True, group_of[1:] != group_of[:-1]])
        ends = np.r_[starts[1:], len(candidates)]
        rows = np.column_stack([values[candidates], scores[candidates], deltas[candidates]])  # (C, F + 2)
        for start, end in zip(starts.tolist(), ends.tolist()):
            g = int(group_of[start])
            self._waiting[g].append((priorities[candidates[start:end]], rows[start:end]))
            if self._sample_bounds[g] == np.inf or 4 * sum(len(p) for p, _ in self._waiting[g]) >= self.spec.sample_size:
                self._fill_sample(g)

    def _fill_sample(self, g: int) -> None:
        """Group g's sample with its waiting rows taken in."""
        if not self._waiting[g]:
            return
        sample = self._samples[g]
        priorities = np.concatenate([sample.priorities, *(p for p, _ in self._waiting[g])])
        rows = np.concatenate([sample.values, *(r for _, r in self._waiting[g])])
        self._samples[g] = sample = RowSample.of(self.spec.sample_size, priorities, rows)
        self._waiting[g] = []
        self._sample_bounds[g] = np.inf if sample.bound is None else sample.bound

    def _add_exemplars(self, keys, targets, scores, deltas, inputs, example_index, values, elements, primary: np.ndarray) -> None:
        """Merges the exemplars of each criterion among the rows `primary` (indices into the
        batch's rows); rows that cannot be kept (`Exemplars.entry_bounds`) are left out first."""
        orders = {"highest_score": -scores, "lowest_score": scores}
        if self.spec.path_method:
            orders.update(most_faithful=deltas, least_faithful=-deltas)
        n = self.spec.exemplars_per_criterion
        for name, order in orders.items():
            known = self._exemplars.get(name)
            rows = primary
            if known is not None:
                rows = rows[~(order[rows] >= known.entry_bounds(targets[rows]))]
                if len(rows) == 0:
                    continue
            rows = rows[best_per_class(order[rows], targets[rows], n)]
            records = example_index[rows]
            flat_inputs = np.concatenate([np.asarray(x)[records].reshape(len(rows), -1) for x in inputs], axis=1)
            chosen = Exemplars(
                n, order[rows], keys.take(pa.array(rows, pa.int64())).to_pylist(), targets[rows].astype(np.int64), scores[rows], deltas[rows],
                flat_inputs.astype(np.float32), _attribution_rows(self.spec, values, elements, rows),
            )
            self._exemplars[name] = chosen if known is None else known.merge(chosen)


def _scalar_input_columns(spec: SummarySpec, inputs: tuple) -> Optional[list[tuple[int, int]]]:
    """(input index, flat column) of each scalar feature's value in the batch's inputs, whose
    flattened widths the features' lengths partition in order; None when they do not."""
    widths = [int(np.prod(np.shape(x)[1:], dtype=np.int64)) for x in inputs]
    if sum(widths) != sum(f.length for f in spec.features):
        return None
    starts = np.cumsum([0] + widths)
    columns, offset = [], 0
    for feature in spec.features:
        if not feature.is_tensor:
            k = int(np.searchsorted(starts, offset, side="right") - 1)
            columns.append((k, offset - int(starts[k])))
        offset += feature.length
    return columns


def _attribution_matrices(spec: SummarySpec, table: pa.Table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(R, F) feature values (tensor columns: per-row totals) and (R, L) per tensor column.

    A tensor column's per-row totals are summed in float32 (~1e-7 of the row's sum of |x|; einsum,
    6x faster than a float64 sum and no BLAS threads): the moments are accumulated from float32
    values anyway, and the quantiles are read from a sample."""
    rows = table.num_rows
    values = np.empty((rows, len(spec.features)), dtype=np.float64)
    elements = {}
    for j, feature in enumerate(spec.features):
        column = table.column(f"attr_{feature.name}")
        column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        if feature.is_tensor:
            block = column.flatten().to_numpy(zero_copy_only=False).reshape(rows, feature.length)  # (R, L)
            elements[feature.name] = block
            values[:, j] = np.einsum("rl->r", block)
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
    classes, codes = distinct_class_ids(targets)
    groupings.append(("target", [str(c) for c in classes], codes))
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


def _attribution_rows(spec: SummarySpec, values: np.ndarray, elements: dict, rows: np.ndarray) -> np.ndarray:
    """(len(rows), sum of feature lengths) float32 attributions of the chosen rows, source columns
    concatenated, read from the batch's matrices (float32 values held in float64: exact)."""
    parts = [elements[f.name][rows] if f.is_tensor else values[rows, j : j + 1] for j, f in enumerate(spec.features)]
    return np.concatenate(parts, axis=1).astype(np.float32)
