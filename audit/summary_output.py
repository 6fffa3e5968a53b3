"""A finished `RunSummary` as files: two Parquet tables and a JSON document (no Beam).

summary_features.parquet, one row per (group, feature, element):
  group_kind      'overall' | 'target' | 'rank' (top_k runs) | 'slice:<column>'
  group_value     'all' | the class index | the rank (1 = each record's top class) | the slice
                  value ('__null__', '__other__')
  feature         the source column
  element         -1 for the feature itself (a tensor column's per-row total attribution), else
                  the element's row-major index in the tensor column
  rows            int64, rows summarized (finite attributions only)
  mean, mean_abs, std    float64 (std: population, ddof=0)
  mean_abs_se, mean_se   float64, standard errors of mean_abs and mean (null when the run has no
                  bootstrap): a feature's from its Poisson bootstrap replicates; an element's from
                  its moments, sd(|a|) / sqrt(rows) and std / sqrt(rows) (a bootstrap per pixel
                  would keep BUCKETS sums per element and group)
  q01 ... q99     float64, approximate quantiles from a uniform sample (null for elements)
summary_exemplars.parquet, one row per (criterion, rank): key, target, score, completeness_error, and the
  rows' inputs and attributions (list<float32>, source columns concatenated row-major); at most
  one row per (criterion, target), from rank-1 rows in top_k runs (audit.summary.Exemplars).
summary_tokens.parquet (runs with inputs attributed at a layer only), one row per (feature, class,
  token id): the exact totals `compare` reads (audit.token_importance.TokenTotals):
  feature, target (int64), token_id (int64), token (the vocabulary's, else the id as text),
  positions (int64), sum, sum_abs (float64) over the non-padding positions holding the token
summary.json: run-level numbers per group (rows, score distribution, completeness error) and the
  feature statistics of every group at feature level.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from attributions.result import COMPLETENESS_MEASURE
from audit.bootstrap import BUCKETS, percentile_interval, replicate_means, replicate_sums
from audit.summary import DELTA_EDGES, QUANTILES, RunSummary
from audit.token_importance import TokenTotals, top_tokens

__all__ = [
    "FEATURES_FILE", "EXEMPLARS_FILE", "POINTS_FILE", "SUMMARY_FILE", "SUMMARY_FILES",
    "features_table", "exemplars_table", "points_table", "tokens_table", "token_totals", "summary_document", "quantile_name",
]

FEATURES_FILE = "summary_features.parquet"
EXEMPLARS_FILE = "summary_exemplars.parquet"
TOKENS_FILE = "summary_tokens.parquet"
POINTS_FILE = "summary_points.parquet"
SUMMARY_FILE = "summary.json"
SUMMARY_FILES = (FEATURES_FILE, EXEMPLARS_FILE, TOKENS_FILE, POINTS_FILE, SUMMARY_FILE)
# The beeswarm's file keeps the scalar features of largest mean |attribution| (overall), at most these.
POINTS_FEATURES = 50
# 2: the completeness error is `completeness_error` (attributions.result), not |delta| / |dF|;
# exemplars' delta_rel became completeness_error; steps_used per group for adaptive IG.
FORMAT_VERSION = 2
QUANTILE_METHOD = (
    "sample quantiles (numpy 'linear') of a uniform random sample of at most sample_size rows per "
    "group (bottom-k sampling, merged across workers); rank error std <= 0.5/sqrt(sample_size); "
    "exact for groups of at most sample_size rows"
)


def quantile_name(q: float) -> str:
    return f"q{round(q * 100):02d}"


def _sorted_groups(summary: RunSummary) -> list:
    order = {"overall": 0, "target": 1, "rank": 2}

    def sort_key(item):
        (kind, value), _ = item
        number = int(value) if kind in ("target", "rank") else 0
        return (order.get(kind, 2), kind, number, value)

    return sorted(summary.groups.items(), key=sort_key)


def features_table(summary: RunSummary) -> pa.Table:
    columns: dict[str, list] = {
        name: [] for name in ("group_kind", "group_value", "feature", "element", "rows", "mean", "mean_abs", "std", "mean_abs_se", "mean_se")
    }
    for q in QUANTILES:
        columns[quantile_name(q)] = []
    features = summary.spec.features
    for (kind, value), group in _sorted_groups(summary):
        quantiles = group.sample.quantiles(np.array(QUANTILES))  # (Q, F + 2)
        intervals = _bootstrap_intervals(group, len(features), summary.spec.bootstrap_replicates)
        for j, feature in enumerate(features):
            ses = (None, None) if intervals is None else (intervals[2][j], intervals[3][j])
            _append(columns, kind, value, feature.name, -1, group.features.count,
                    group.features.mean[j], group.features.mean_abs[j], group.features.std[j], ses, quantiles[:, j])
            if feature.is_tensor:
                maps = group.elements[feature.name]
                element_ses = element_standard_errors(maps.count, maps.mean, maps.mean_abs, maps.std) if summary.spec.bootstrap_replicates else None
                for e in range(feature.length):
                    ses = (None, None) if element_ses is None else (element_ses[0][e], element_ses[1][e])
                    _append(columns, kind, value, feature.name, e, maps.count, maps.mean[e], maps.mean_abs[e], maps.std[e], ses, None)
    schema = pa.schema(
        [("group_kind", pa.string()), ("group_value", pa.string()), ("feature", pa.string()), ("element", pa.int32()), ("rows", pa.int64())]
        + [(name, pa.float64()) for name in ("mean", "mean_abs", "std", "mean_abs_se", "mean_se", *map(quantile_name, QUANTILES))]
    )
    return pa.table(columns, schema=schema)


def element_standard_errors(count: int, mean: np.ndarray, mean_abs: np.ndarray, std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(E,) standard errors of each element's mean |attribution| and mean attribution over `count`
    independent rows, from its moments: sd(|a|) = sqrt(E[a^2] - E|a|^2), E[a^2] = std^2 + mean^2."""
    if count < 2:
        return np.full(len(mean), np.nan), np.full(len(mean), np.nan)
    second = np.asarray(std, np.float64) ** 2 + np.asarray(mean, np.float64) ** 2
    sd_abs = np.sqrt(np.maximum(second - np.asarray(mean_abs, np.float64) ** 2, 0.0))
    scale = np.sqrt(count / (count - 1.0)) / np.sqrt(count)  # ddof=1, over sqrt(n)
    return sd_abs * scale, np.asarray(std, np.float64) * scale


def points_features(summary: RunSummary) -> list[int]:
    """Indices into the scalar features (RunSummary.points' blocks) of those the points file keeps:
    the POINTS_FEATURES of largest overall mean |attribution|, largest first."""
    overall = summary.groups.get(("overall", "all"))
    scalars = [j for j, f in enumerate(summary.spec.features) if not f.is_tensor]
    if overall is None or summary.points is None:
        return []
    order = sorted(range(len(scalars)), key=lambda i: -float(overall.features.mean_abs[scalars[i]]))
    return order[:POINTS_FEATURES]


def points_table(summary: RunSummary) -> pa.Table:
    """The beeswarm's rows: feature, attribution, value (the input's value), row (which sampled
    row: the same row across features), for the features `points_features` keeps."""
    scalars = [f.name for f in summary.spec.features if not f.is_tensor]
    kept = points_features(summary)
    values = summary.points.values if summary.points is not None else np.zeros((0, 0))  # (k, 2S)
    rows = len(values)
    columns = {
        "feature": [scalars[i] for i in kept for _ in range(rows)],
        "attribution": np.concatenate([values[:, i] for i in kept]) if kept else np.zeros(0),
        "value": np.concatenate([values[:, len(scalars) + i] for i in kept]) if kept else np.zeros(0),
        "row": np.tile(np.arange(rows, dtype=np.int32), len(kept)),
    }
    schema = pa.schema([("feature", pa.string()), ("attribution", pa.float64()), ("value", pa.float64()), ("row", pa.int32())])
    return pa.table(columns, schema=schema)


def _append(columns, kind, value, feature, element, rows, mean, mean_abs, std, ses: tuple, quantiles: Optional[np.ndarray]) -> None:
    for name, item in zip(("group_kind", "group_value", "feature", "element", "rows", "mean", "mean_abs", "std", "mean_abs_se", "mean_se"),
                          (kind, value, feature, element, rows, float(mean), float(mean_abs), float(std),
                           *(None if se is None else _number(se) for se in ses))):
        columns[name].append(item)
    for i, q in enumerate(QUANTILES):
        columns[quantile_name(q)].append(None if quantiles is None or not np.isfinite(quantiles[i]) else float(quantiles[i]))


def exemplars_table(summary: RunSummary) -> pa.Table:
    rows: dict[str, list] = {name: [] for name in ("criterion", "rank", "key", "target", "score", "completeness_error", "inputs", "attributions")}
    for criterion, chosen in summary.exemplars.items():
        for rank in range(len(chosen.keys)):
            for name, value in zip(rows, (
                criterion, rank, str(chosen.keys[rank]), int(chosen.targets[rank]), float(chosen.scores[rank]),
                None if np.isnan(chosen.deltas[rank]) else float(chosen.deltas[rank]),
                chosen.inputs[rank].tolist(), chosen.attributions[rank].tolist(),
            )):
                rows[name].append(value)
    schema = pa.schema([
        ("criterion", pa.string()), ("rank", pa.int32()), ("key", pa.string()), ("target", pa.int64()),
        ("score", pa.float64()), ("completeness_error", pa.float64()),
        ("inputs", pa.list_(pa.float32())), ("attributions", pa.list_(pa.float32())),
    ])
    return pa.table(rows, schema=schema)


TOKENS_SCHEMA = pa.schema([
    ("feature", pa.string()), ("target", pa.int64()), ("token_id", pa.int64()), ("token", pa.string()),
    ("positions", pa.int64()), ("sum", pa.float64()), ("sum_abs", pa.float64()),
])


def tokens_table(summary: RunSummary) -> pa.Table:
    """The per (feature, class, token id) totals of the inputs attributed at a layer (TOKENS_FILE)."""
    parts = []
    for feature in summary.spec.token_features:
        totals = summary.tokens.get(feature.name, TokenTotals.empty())
        vocabulary = feature.vocabulary
        names = [vocabulary[i] if vocabulary is not None and 0 <= i < len(vocabulary) else str(i) for i in totals.ids.tolist()]
        parts.append(pa.table({
            "feature": pa.array([feature.name] * len(totals.ids), pa.string()), "target": totals.classes, "token_id": totals.ids,
            "token": pa.array(names, pa.string()), "positions": totals.counts, "sum": totals.sums, "sum_abs": totals.sums_abs,
        }, schema=TOKENS_SCHEMA))
    return pa.concat_tables(parts) if parts else TOKENS_SCHEMA.empty_table()


def token_totals(table: pa.Table) -> dict[str, tuple[TokenTotals, dict[int, str]]]:
    """TOKENS_FILE's rows -> {feature: (its TokenTotals, {token id: token})}."""
    result = {}
    for feature in dict.fromkeys(table.column("feature").to_pylist()):
        rows = table.filter(pc.equal(table.column("feature"), feature))
        column = {name: rows.column(name).to_numpy() for name in ("target", "token_id", "positions", "sum", "sum_abs")}
        totals = TokenTotals.from_entries(column["target"], column["token_id"], column["positions"], column["sum"], column["sum_abs"])
        result[feature] = (totals, dict(zip(rows.column("token_id").to_pylist(), rows.column("token").to_pylist())))
    return result


def _number(value: float) -> Optional[float]:
    return float(value) if np.isfinite(value) else None


def _histogram(values: np.ndarray, bins: int = 20) -> dict[str, Any]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"edges": [], "counts": []}
    try:
        counts, edges = np.histogram(values, bins=bins)
    except ValueError:  # a span that overflows or is below float resolution: one bin
        return {"edges": [float(values.min()), float(values.max())], "counts": [len(values)]}
    return {"edges": edges.tolist(), "counts": counts.tolist()}


def _group_document(summary: RunSummary, kind: str, value: str, group) -> dict[str, Any]:
    spec = summary.spec
    score_column, delta_column = len(spec.features), len(spec.features) + 1
    qs = np.array(QUANTILES)
    score_quantiles = group.sample.quantiles(qs, score_column)
    document: dict[str, Any] = {
        "kind": kind,
        "value": value,
        "rows": group.rows,
        "prediction": {
            "mean": float(group.score.mean[0]),
            "std": float(group.score.std[0]),
            "min": group.score_min,
            "max": group.score_max,
            "quantiles": {quantile_name(q): _number(v) for q, v in zip(QUANTILES, score_quantiles)},
            "histogram_of_sample": _histogram(group.sample.values[:, score_column]),
        },
        "completeness": None,
        "features": {},
    }
    if spec.path_method:
        delta_quantiles = group.sample.quantiles(qs, delta_column)
        document["completeness"] = {
            "measure": COMPLETENESS_MEASURE,
            "threshold": spec.completeness_threshold,
            "rows_with_delta": group.rows_with_delta,
            "rows_over_threshold": group.rows_over_threshold,
            "share_over_threshold": group.rows_over_threshold / group.rows_with_delta if group.rows_with_delta else None,
            "quantiles": {quantile_name(q): _number(v) for q, v in zip(QUANTILES, delta_quantiles)},
            "histogram": {"edges": [e if np.isfinite(e) else "inf" for e in DELTA_EDGES], "counts": group.delta_histogram.tolist()},
        }
        if spec.bootstrap_replicates and group.rows_with_delta > 1:  # binomial: rows are independent draws
            share = group.rows_over_threshold / group.rows_with_delta
            document["completeness"]["share_over_threshold_se"] = float(np.sqrt(share * (1.0 - share) / (group.rows_with_delta - 1)))
        if spec.adaptive:
            document["completeness"]["steps_used"] = steps_document(group.steps_counts, group.rows_met)
    feature_quantiles = group.sample.quantiles(qs)
    intervals = _bootstrap_intervals(group, len(spec.features), spec.bootstrap_replicates)
    for j, feature in enumerate(spec.features):
        document["features"][feature.name] = {
            "mean": float(group.features.mean[j]),
            "mean_abs": float(group.features.mean_abs[j]),
            "std": float(group.features.std[j]),
            "quantiles": {quantile_name(q): _number(v) for q, v in zip(QUANTILES, feature_quantiles[:, j])},
        }
        if intervals is not None:
            document["features"][feature.name]["mean_abs_interval"] = [_number(v) for v in intervals[0][:, j]]
            document["features"][feature.name]["mean_interval"] = [_number(v) for v in intervals[1][:, j]]
            document["features"][feature.name]["mean_abs_se"] = _number(intervals[2][j])
            document["features"][feature.name]["mean_se"] = _number(intervals[3][j])
    return document


def _bootstrap_intervals(group, features: int, replicates: int) -> Optional[tuple[np.ndarray, ...]]:
    """(2, F) 95 % percentile intervals of mean |attribution| and of the mean attribution over
    the group's bootstrap replicates, and (F,) their bootstrap standard errors (what compare
    combines for a difference between runs); None without replicates."""
    if group.bootstrap is None:
        return None
    mean_abs, mean = replicate_means(replicate_sums(group.bootstrap, replicates), features)  # (B, F) each
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column (no weight in any replicate): NaN
        return (percentile_interval(mean_abs), percentile_interval(mean),
                np.nanstd(mean_abs, axis=0, ddof=1), np.nanstd(mean, axis=0, ddof=1))


def steps_document(counts: dict[int, int], rows_met: int) -> dict[str, Any]:
    """The distribution of steps_used: {steps: rows} (exact), mean, quantiles, gradient
    evaluations in all, and the rows that met the completeness target."""
    values = np.array(sorted(counts), dtype=np.float64)
    weights = np.array([counts[v] for v in sorted(counts)], dtype=np.float64)
    rows = int(weights.sum())
    cumulative = np.cumsum(weights) / rows if rows else weights

    def quantile(q: float) -> Optional[float]:  # the smallest value with at least q of the rows at or below it
        return float(values[np.searchsorted(cumulative, q - 1e-12)]) if rows else None

    return {
        "counts": {str(int(v)): int(c) for v, c in zip(values, weights)},
        "rows": rows,
        "gradient_evaluations": int((values * weights).sum()),
        "mean": float((values * weights).sum() / rows) if rows else None,
        "quantiles": {quantile_name(q): quantile(q) for q in (0.5, 0.9, 0.99)} | {"max": float(values[-1]) if rows else None},
        "rows_met": int(rows_met),
        "share_met": rows_met / rows if rows else None,
    }


def summary_document(summary: RunSummary, dead_letters: int, settings: dict[str, Any],
                     quality: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The summary.json document. dead_letters: records dead-lettered in the run; quality: the
    launcher's quality audit (pipeline.quality), kept under `quality`."""
    spec = summary.spec
    document = {
        "format_version": FORMAT_VERSION,
        "rows": summary.rows,
        "rows_summarized": summary.rows - summary.rows_not_finite,
        "rows_not_finite": summary.rows_not_finite,
        "dead_letters": int(dead_letters),
        "settings": settings,
        "features": [
            {"name": f.name, "kind": "tensor" if f.is_tensor else "scalar", "shape": list(f.shape) or None, "length": f.length}
            for f in spec.features
        ],
        "slice_columns": list(spec.slice_columns),
        "slices_pooled_as_other": sorted(c for c in spec.slice_columns if ("slice:" + c, "__other__") in summary.groups),
        "sample_size": spec.sample_size,
        "quantile_method": QUANTILE_METHOD,
        "groups": [_group_document(summary, kind, value, group) for (kind, value), group in _sorted_groups(summary)],
    }
    _add_class_share_intervals(summary, document["groups"])
    names = settings.get("class_names") or []
    for group in document["groups"]:  # the explained class's name beside its index (--class-names)
        if group["kind"] == "target" and str(group["value"]).isdigit() and int(group["value"]) < len(names):
            group["name"] = names[int(group["value"])]
    if spec.bootstrap_replicates:
        document["bootstrap"] = {"replicates": spec.bootstrap_replicates, "level": 0.95,
                                 "buckets": BUCKETS,
                                 "method": "Poisson bootstrap over random groups of records (by key hash), percentile intervals"}
    if spec.token_features:
        document["token_importance"] = token_document(summary)
    if points_features(summary):  # the beeswarm's sample (POINTS_FILE)
        document["points"] = {"rows": len(summary.points.values), "features": len(points_features(summary))}
    if quality is not None:
        document["quality"] = quality
    return document


def _add_class_share_intervals(summary: RunSummary, documents: list[dict[str, Any]]) -> None:
    """Each class group's share of the explained rows (its rows / all class groups' rows, what
    compare's class-share drift reads) with its 95 % bootstrap interval and standard error, from
    the groups' per-bucket row counts: replicate b's share is sum_k w_kb n_ck / sum_k w_kb n_k."""
    keys = [key for key, group in _sorted_groups(summary) if key[0] == "target" and group.bootstrap is not None]
    if not keys or len(keys) != sum(1 for kind, _ in summary.groups if kind == "target"):
        return
    features = len(summary.spec.features)
    counts = np.stack([summary.groups[key].bootstrap[:, 2 * features] for key in keys], axis=1)  # (K, C) rows per bucket
    replicates = replicate_sums(counts, summary.spec.bootstrap_replicates)  # (B, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = replicates / replicates.sum(axis=1, keepdims=True)  # (B, C)
    interval, se = percentile_interval(shares), np.nanstd(shares, axis=0, ddof=1)
    total = sum(summary.groups[key].rows for key in keys) or 1
    by_key = {(d["kind"], d["value"]): d for d in documents}
    for c, key in enumerate(keys):
        by_key[key]["share"] = summary.groups[key].rows / total
        by_key[key]["share_interval"] = [_number(v) for v in interval[:, c]]
        by_key[key]["share_se"] = _number(se[c])


def token_document(summary: RunSummary) -> dict[str, Any]:
    """Inputs attributed at a layer: per input, per explained class (and 'all' classes pooled), the
    tokens (or category ids, without a vocabulary) with the highest ('for') and lowest ('against')
    mean attribution and their counts (audit.token_importance.top_tokens)."""
    document = {}
    for feature in summary.spec.token_features:
        totals = summary.tokens.get(feature.name)
        if totals is None:
            continue
        vocabulary = feature.vocabulary
        classes = {str(c): top_tokens(totals.for_class(int(c)), vocabulary=vocabulary) for c in np.unique(totals.classes)}
        document[feature.name] = {"positions": totals.positions, "padding_id": feature.padding_id,
                                  "all": top_tokens(totals.for_class(None), vocabulary=vocabulary), "classes": classes}
    return document
