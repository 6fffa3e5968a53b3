"""Comparing two runs' summaries: what the model relies on, and whether that drifted.

Importance of a feature = its mean |attribution| in a group; the features compared are the leaf
features (scalar columns, and each element of tensor columns, e.g. each pixel). Per group present
in both runs: per-feature change (absolute, and relative to run A), Spearman's rho and Kendall's
tau-b of the importance vectors, top-k overlap, the shift of the mean explained score in units of
run A's standard deviation, and the change of the share of rows over the completeness threshold.
Over the run: the change of the explained classes' shares (total variation distance).
For inputs attributed at a layer (token/category ids, text), per input and per explained class
(and all classes pooled): the same rank agreement over the tokens' mean |attribution| (tokens seen
at least MIN_TOKEN_COUNT times in both runs; audit.token_importance.token_rank_agreement), judged
with the same min_spearman / min_top_k_overlap thresholds.

A group is checked against the thresholds only when both runs have at least `min_group_rows`
rows in it (smaller groups are reported, not judged: their statistics are too noisy).
"""

from __future__ import annotations

import dataclasses
import statistics
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from audit.json_safe import json_ready  # re-exported: NaN/inf (e.g. a rank correlation of a constant vector) as None
from audit.rank import kendall_tau_b, ndcg, spearman, top_k_overlap
from audit.quality_reading import compare_quality
from audit.runs import RunResult
from audit.summary_output import token_totals
from audit.token_importance import TokenTotals, token_rank_agreement

__all__ = ["DriftThresholds", "compare_runs", "format_comparison", "identity_differences", "model_change", "spans_note", "json_ready",
           "THRESHOLD_HELP"]


@dataclass(frozen=True)
class DriftThresholds:
    """When two runs count as drifted. Defaults are deliberately tolerant of sampling noise."""

    min_spearman: float = 0.8  # rank correlation of feature importance
    min_top_k_overlap: float = 0.6  # share of run A's top-k features still in run B's top k
    min_ndcg: float = 0.9  # nDCG of B's feature ranking against A's importances (SageMaker Clarify's alert level)
    top_k: int = 10
    max_relative_change: float = 0.5  # |B - A| / A of mean |attribution| ...
    min_share: float = 0.05  # ... judged only for features with >= this share of A's total importance
    max_prediction_shift: float = 0.25  # |mean score B - mean score A| / std of A
    max_class_share_change: float = 0.1  # total variation distance between explained-class shares
    max_completeness_increase: float = 0.05  # rise of the share of rows over the completeness threshold
    min_group_rows: int = 100

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"drift threshold {f.name} must be a finite number >= 0; got {value!r}.")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            raise ValueError(f"top_k must be a positive integer; got {self.top_k!r}.")


# (metavar, what the flag sets, unit) of each threshold, for --help and the table in docs/audits.md.
THRESHOLD_HELP: dict[str, tuple[str, str, str]] = {
    "min_spearman": ("RHO", "drift when Spearman's rank correlation of the features' mean |attribution| (A vs B) falls below this", "correlation, -1..1"),
    "min_top_k_overlap": ("SHARE", "drift when fewer than this share of A's top-k features (by mean |attribution|) are in B's top k", "share, 0..1"),
    "min_ndcg": ("NDCG", "drift when the nDCG of B's feature ranking, with A's mean |attribution| as the relevance, falls below this (SageMaker Clarify alerts below 0.9)", "0..1"),
    "top_k": ("K", "how many top features --min-top-k-overlap compares", "features"),
    "max_relative_change": ("SHARE", "drift when an important feature's mean |attribution| changes by more than this, relative to A", "share of A's value, 0.5 = 50 %"),
    "min_share": ("SHARE", "a feature counts as important for --max-relative-change when it holds at least this share of A's total mean |attribution|", "share, 0..1"),
    "max_prediction_shift": ("STDS", "drift when the mean explained score moves by more than this many of A's standard deviations", "standard deviations of A's score"),
    "max_class_share_change": ("DISTANCE", "drift when the explained classes' shares of rows move by more than this total variation distance", "0..1"),
    "max_completeness_increase": ("SHARE", "drift when the share of rows over the completeness-error threshold rises by more than this", "share, 0.05 = 5 percentage points"),
    "min_group_rows": ("ROWS", "groups (classes, slice values) with fewer rows than this in either run are shown but not judged", "rows"),
}


def _leaf_importance(run: RunResult) -> dict[tuple[str, str], dict[tuple[str, int], float]]:
    """{(group kind, value): {(feature, element): mean |attribution|}} over the leaf features:
    scalar columns (element -1) and each element of tensor columns."""
    tensors = {f["name"] for f in run.summary["features"] if f["kind"] == "tensor"}
    table = run.features.to_pydict()
    leaves: dict[tuple[str, str], dict[tuple[str, int], float]] = {}
    for kind, value, feature, element, mean_abs in zip(
        table["group_kind"], table["group_value"], table["feature"], table["element"], table["mean_abs"]
    ):
        if (element >= 0) == (feature in tensors):
            leaves.setdefault((kind, value), {})[(feature, element)] = mean_abs
    return leaves


def _leaf_ses(run: RunResult) -> dict[tuple[str, str], dict[tuple[str, int], float]]:
    """{(group kind, value): {(feature, element): standard error of its mean |attribution|}} for
    the leaves that have one: the features table's mean_abs_se (a feature's bootstrap error, an
    element's from its moments); summaries written before that column: summary.json's per-feature
    mean_abs_se (scalar features only). Runs summarized without the bootstrap have none."""
    if "mean_abs_se" in run.features.column_names:
        table = run.features.select(["group_kind", "group_value", "feature", "element", "mean_abs_se"]).to_pydict()
        ses: dict[tuple[str, str], dict[tuple[str, int], float]] = {}
        for kind, value, feature, element, se in zip(*table.values()):
            if se is not None:
                ses.setdefault((kind, value), {})[(feature, element)] = se
        return ses
    return {key: {(name, -1): f["mean_abs_se"] for name, f in (group.get("features") or {}).items() if f.get("mean_abs_se") is not None}
            for key, group in run.groups.items()}


# Two-sided 95 % normal quantile, and the draws behind the intervals of the rank statistics.
Z95 = 1.959963984540054
NOISE_DRAWS = 200
# Rankings over more leaves than this (a large image's pixels) are judged by their thresholds
# alone: 200 redraws of three rank statistics over n leaves cost ~600 sorts of n values per group.
MAX_RANK_INTERVAL_LEAVES = 10_000


def _change_interval(change: float, se_a: Optional[float], se_b: Optional[float], z: float = Z95) -> Optional[list[float]]:
    """95 % interval of B - A for two independent runs' means, from their bootstrap standard errors
    (z: the normal quantile; wider for a simultaneous statement over several changes)."""
    if se_a is None or se_b is None:
        return None
    half = z * float(np.hypot(se_a, se_b))
    return [change - half, change + half]


def _rank_intervals(va: np.ndarray, vb: np.ndarray, se_a: np.ndarray, se_b: np.ndarray, k: int) -> tuple[list[float], ...]:
    """95 % intervals of Spearman's rho, of the top-k overlap and of nDCG between A and B when
    each feature's mean |attribution| is redrawn within its bootstrap standard error (NOISE_DRAWS
    draws, seeded: the same runs give the same intervals)."""
    rng = np.random.default_rng(0)
    rho, overlap, gain = np.zeros(NOISE_DRAWS), np.zeros(NOISE_DRAWS), np.zeros(NOISE_DRAWS)
    for d in range(NOISE_DRAWS):  # one draw at a time: an image's 150k pixels x 200 draws would be 240 MB per run
        x, y = np.abs(rng.normal(va, se_a)), np.abs(rng.normal(vb, se_b))  # (n,) each; a mean |attribution| is >= 0
        rho[d], overlap[d], gain[d] = spearman(x, y), top_k_overlap(x, y, k), ndcg(x, y)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (constant importances): NaN bounds
        return tuple([float(v) for v in np.nanquantile(values, [0.025, 0.975])] for values in (rho, overlap, gain))


def _completeness_share(group: dict[str, Any]) -> Optional[float]:
    completeness = group.get("completeness")
    return None if not completeness else completeness["share_over_threshold"]


def _completeness_change(group_a: dict[str, Any], group_b: dict[str, Any], share_a: float, share_b: float) -> dict[str, Any]:
    """The change of the share of rows over the completeness threshold, with its 95 % interval
    from the two runs' binomial standard errors (None without them)."""
    se_a, se_b = (g["completeness"].get("share_over_threshold_se") for g in (group_a, group_b))
    interval = _change_interval(share_b - share_a, se_a, se_b)
    return {"share_over_threshold_a": share_a, "share_over_threshold_b": share_b, "change": share_b - share_a,
            "change_interval": interval, "beyond_noise": None if interval is None else interval[0] > 0.0}


def completeness_measure(run: RunResult) -> Optional[str]:
    """The completeness error a run's summary counted (None: not a path method). Summaries before
    format 2 counted |delta| / max(|dF|, 1e-6), which explodes as dF -> 0."""
    overall = run.groups.get(("overall", "all")) or {}
    if not overall.get("completeness"):
        return None
    return overall["completeness"].get("measure") or "|delta| / max(|F(x) - F(baseline)|, 1e-6) (summary format 1)"


def _compare_group(a: RunResult, b: RunResult, leaves_a: dict, leaves_b: dict, key: tuple[str, str], t: DriftThresholds,
                   same_measure: bool = True, ses: tuple[dict, dict] = ({}, {})) -> dict[str, Any]:
    group_a, group_b = a.groups[key], b.groups[key]
    importance_a, importance_b = leaves_a.get(key, {}), leaves_b.get(key, {})
    leaves = [leaf for leaf in importance_a if leaf in importance_b]
    va = np.array([importance_a[leaf] for leaf in leaves])  # (n,)
    vb = np.array([importance_b[leaf] for leaf in leaves])  # (n,)
    total_a = va.sum() or 1.0
    ses_a, ses_b = ses[0].get(key, {}), ses[1].get(key, {})
    features = []
    for (feature, element), x, y in zip(leaves, va, vb):
        interval = _change_interval(float(y - x), ses_a.get((feature, element)), ses_b.get((feature, element)))
        features.append({
            "feature": feature if element < 0 else f"{feature}[{element}]",
            "mean_abs_a": float(x), "mean_abs_b": float(y), "change": float(y - x),
            "relative_change": float((y - x) / x) if x > 0 else None, "share_a": float(x / total_a),
            "change_interval": interval, "beyond_noise": None if interval is None else not interval[0] <= 0.0 <= interval[1],
        })
    with_se = bool(leaves) and len(leaves) <= MAX_RANK_INTERVAL_LEAVES and all(leaf in ses_a and leaf in ses_b for leaf in leaves)
    rank_intervals = (_rank_intervals(va, vb, np.array([ses_a[leaf] for leaf in leaves]), np.array([ses_b[leaf] for leaf in leaves]),
                                      min(t.top_k, len(leaves))) if with_se and len(leaves) > 1 else (None, None, None))
    std_a = group_a["prediction"]["std"]
    shift = group_b["prediction"]["mean"] - group_a["prediction"]["mean"]
    # Shares over the threshold of two different measures are not comparable: not judged.
    share_a, share_b = (_completeness_share(group_a), _completeness_share(group_b)) if same_measure else (None, None)
    result = {
        "kind": key[0], "value": key[1], "name": group_b.get("name") or group_a.get("name"),
        "rows_a": group_a["rows"], "rows_b": group_b["rows"],
        "checked": min(group_a["rows"], group_b["rows"]) >= t.min_group_rows,
        "spearman": spearman(va, vb), "kendall_tau_b": kendall_tau_b(va, vb),
        "top_k": min(t.top_k, len(leaves)), "top_k_overlap": top_k_overlap(va, vb, t.top_k),
        "spearman_interval": rank_intervals[0], "top_k_overlap_interval": rank_intervals[1],
        "ndcg": ndcg(va, vb), "ndcg_interval": rank_intervals[2],
        "prediction": {"mean_a": group_a["prediction"]["mean"], "mean_b": group_b["prediction"]["mean"],
                       "shift_in_std_a": shift / std_a if std_a > 0 else (0.0 if shift == 0 else float("inf"))},
        "completeness": None if share_a is None or share_b is None else _completeness_change(group_a, group_b, share_a, share_b),
        "features": sorted(features, key=lambda f: -abs(f["change"])),
    }
    result["drift"] = _group_drift(result, t) if result["checked"] else []
    return result


def _group_drift(r: dict[str, Any], t: DriftThresholds) -> list[str]:
    """The reasons a group drifted. With bootstrap standard errors in both runs, a ranking counts
    only when its whole interval is below the threshold, and a feature's change only when the
    interval of the change excludes 0: a change the runs' sampling noise explains is not drift."""
    reasons = []
    if _below(r["spearman"], r.get("spearman_interval"), t.min_spearman):
        reasons.append(f"Spearman {r['spearman']:.3f} < {t.min_spearman}" + _interval_text(r.get("spearman_interval")))
    if _below(r["top_k_overlap"], r.get("top_k_overlap_interval"), t.min_top_k_overlap):
        reasons.append(f"top-{r['top_k']} overlap {r['top_k_overlap']:.2f} < {t.min_top_k_overlap}" + _interval_text(r.get("top_k_overlap_interval")))
    for f in r["features"]:
        f["drift"] = (f["share_a"] >= t.min_share and f["relative_change"] is not None
                      and abs(f["relative_change"]) > t.max_relative_change and f.get("beyond_noise") is not False)
    moved = [f for f in r["features"] if f["drift"]]
    if _below(r["ndcg"], r.get("ndcg_interval"), t.min_ndcg):
        reasons.append(f"nDCG {r['ndcg']:.3f} < {t.min_ndcg}" + _interval_text(r.get("ndcg_interval")))
    if moved:
        names = ", ".join(f"{f['feature']} {f['relative_change']:+.0%}" for f in moved[:5])
        reasons.append(f"{len(moved)} important feature(s) changed by more than {t.max_relative_change:.0%}: {names}")
    if abs(r["prediction"]["shift_in_std_a"]) > t.max_prediction_shift:
        reasons.append(f"mean score shifted {r['prediction']['shift_in_std_a']:+.2f} std > {t.max_prediction_shift}")
    if (r["completeness"] and r["completeness"]["change"] > t.max_completeness_increase
            and r["completeness"]["beyond_noise"] is not False):
        reasons.append(f"share of rows over the completeness threshold rose by {r['completeness']['change']:.3f}")
    return reasons


def _below(value: float, interval: Optional[list[float]], threshold: float) -> bool:
    """A rank statistic under its threshold, and (when it has one) its whole 95 % interval too."""
    return bool(np.isfinite(value)) and value < threshold and not (interval and interval[1] >= threshold)


def _interval_text(interval: Optional[list[float]]) -> str:
    return f" (95 % interval {interval[0]:.3f} to {interval[1]:.3f})" if interval else ""


def _class_shares(run: RunResult) -> dict[str, float]:
    targets = [g for g in run.summary["groups"] if g["kind"] == "target"]
    total = sum(g["rows"] for g in targets) or 1
    return {g["value"]: g["rows"] / total for g in targets}


def _class_share_ses(run: RunResult) -> dict[str, float]:
    """{class: bootstrap standard error of its share} (summary.json's share_se; none without)."""
    return {g["value"]: g["share_se"] for g in run.summary["groups"] if g["kind"] == "target" and g.get("share_se") is not None}


def _class_share_document(a: RunResult, b: RunResult) -> dict[str, Any]:
    """A's and B's class shares, their total variation distance and, when both runs carry
    bootstrap errors, each class's interval of B - A and whether any excludes 0 (a distance that no
    class's change can be told from noise is not drift). The intervals hold together at 95 %
    (Bonferroni over the C classes: each at 1 - 0.05 / C), so two halves of one dataset move the
    classes beyond noise in at most 5 % of comparisons whatever the number of classes (measured in
    tests/audit/test_intervals.py)."""
    shares_a, shares_b = _class_shares(a), _class_shares(b)
    classes = sorted(set(shares_a) | set(shares_b), key=lambda c: (len(c), c))
    distance = 0.5 * sum(abs(shares_a.get(c, 0.0) - shares_b.get(c, 0.0)) for c in classes)
    ses_a, ses_b = _class_share_ses(a), _class_share_ses(b)
    z = statistics.NormalDist().inv_cdf(1.0 - 0.025 / max(len(classes), 1))
    intervals = {c: _change_interval(shares_b.get(c, 0.0) - shares_a.get(c, 0.0), ses_a.get(c, 0.0 if c not in shares_a else None),
                                     ses_b.get(c, 0.0 if c not in shares_b else None), z) for c in classes}
    judged = bool(classes) and all(i is not None for i in intervals.values())
    return {"a": shares_a, "b": shares_b, "total_variation": distance,
            "change_intervals": intervals if judged else None,
            "beyond_noise": any(not i[0] <= 0.0 <= i[1] for i in intervals.values()) if judged else None}


# Settings that change what an attribution means: drift across them is not drift of the data.
IDENTITY_SETTINGS = ("method", "target", "output_name", "explain_logits")
# Settings that change the estimate, not its meaning: reported as warnings.
ESTIMATE_SETTINGS = ("steps", "rule", "baseline", "samples", "completeness_target", "max_steps")


def _model_identity(run: RunResult) -> tuple[str, str]:
    """('sha256', digest), or ('path', path) for a run without a fingerprint: a model is the same
    model when its bytes are, wherever it is stored (a dated path of an unchanged file is the same)."""
    model = run.manifest["model"]
    return ("sha256", model["sha256"]) if model.get("sha256") else ("path", model.get("path"))


def identity_differences(a: RunResult, b: RunResult) -> list[str]:
    """What makes two runs' attributions answer different questions: the method, the target, the
    explained output, logits vs probabilities. Each entry reads 'method (integrated_gradients vs
    gradient)'. A different model is not one of them: comparing a retrained model with the last
    one is what audits are for (see `model_change`)."""
    settings_a, settings_b = a.manifest["settings"], b.manifest["settings"]
    return [f"{k} ({settings_a.get(k)} vs {settings_b.get(k)})" for k in IDENTITY_SETTINGS if settings_a.get(k) != settings_b.get(k)]


def model_change(a: RunResult, b: RunResult) -> Optional[str]:
    """'sha256 1a2b3c4d5e6f... -> 9f8e7d6c5b4a...' (by path without a fingerprint) when the runs
    explain different models; None for the same model (the same bytes, wherever stored)."""
    (kind_a, model_a), (kind_b, model_b) = _model_identity(a), _model_identity(b)
    if (kind_a, model_a) == (kind_b, model_b):
        return None
    if kind_a == kind_b == "sha256":
        return f"sha256 {model_a[:12]}... -> {model_b[:12]}..."
    return f"{a.manifest['model'].get('path')} -> {b.manifest['model'].get('path')}"


def _setting_differences(a: RunResult, b: RunResult) -> list[str]:
    settings_a, settings_b = a.manifest["settings"], b.manifest["settings"]
    return [f"{k} differs: {settings_a.get(k)!r} vs {settings_b.get(k)!r}" for k in ESTIMATE_SETTINGS if settings_a.get(k) != settings_b.get(k)]


def baseline_moved(a: RunResult, b: RunResult) -> Optional[str]:
    """A warning when the runs' data baselines (medians/means of a sample, listed in the manifest)
    differ: each run's `auto`/`median` baseline follows its own input, so every attribution moves
    with the data's median as well as with the model's behaviour, beyond what the bootstrap
    intervals (which hold the baseline fixed) cover. None when they agree or are not listed."""
    values_a = (a.manifest.get("baseline") or {}).get("values") or {}
    values_b = (b.manifest.get("baseline") or {}).get("values") or {}
    moved = [name for name in values_a if name in values_b and isinstance(values_a[name], list) and isinstance(values_b[name], list)
             and (len(values_a[name]) != len(values_b[name]) or not np.allclose(values_a[name], values_b[name], rtol=1e-6, atol=1e-9))]
    if not moved:
        return None
    return (f"the runs' baselines differ (input {', '.join(moved)}: each the median/mean of its own run's data): every attribution "
            f"moves with the baseline too, which the intervals do not cover; for audits pin one baseline, e.g. "
            f"--baseline median:TRAINING.parquet (the same reference file every run)")


def _feature_names(run: RunResult) -> list[str]:
    return [f["name"] for f in run.summary["features"]]


def _abbreviated(names: list[str], shown: int = 5) -> str:
    text = ", ".join(repr(n) for n in names[:shown])
    return f"[{text}, ... ({len(names)} in all)]" if len(names) > shown else f"[{text}]"


def _check_common_features(a: RunResult, b: RunResult) -> None:
    names_a, names_b = _feature_names(a), _feature_names(b)
    if not set(names_a) & set(names_b):
        raise ValueError(
            f"runs {a.path!r} and {b.path!r} have no feature in common (A: {_abbreviated(names_a)}; "
            f"B: {_abbreviated(names_b)}), so their importances cannot be compared; compare two runs "
            f"of models with the same input columns."
        )


def compare_runs(a: RunResult, b: RunResult, thresholds: DriftThresholds = DriftThresholds(), allow_different: bool = False) -> dict[str, Any]:
    """The comparison document (JSON-ready): per-group metrics, drift reasons, warnings.

    ValueError when the runs share no feature (there would be nothing to compare), and when they
    differ in method, target or explained output (see `identity_differences`): a change of
    importance is then the change of question, not drift. With allow_different=True they are
    compared anyway and the document's `spans_different` lists what differs. Runs of different
    models are compared (a retrained model against the last one): `model_change` says so first.
    """
    _check_common_features(a, b)
    spans = identity_differences(a, b)
    if spans and not allow_different:
        raise ValueError(
            f"runs {a.path!r} and {b.path!r} differ in {'; '.join(spans)}: their attributions answer different "
            f"questions, so a difference is not drift; compare runs of one model, method and target, or pass "
            f"--allow-different to compare them anyway."
        )
    keys_a, keys_b = list(a.groups), list(b.groups)
    common = [k for k in keys_a if k in b.groups]
    leaves_a, leaves_b = _leaf_importance(a), _leaf_importance(b)
    measure_a, measure_b = completeness_measure(a), completeness_measure(b)
    same_measure = measure_a == measure_b
    ses = (_leaf_ses(a), _leaf_ses(b))
    groups = [_compare_group(a, b, leaves_a, leaves_b, key, thresholds, same_measure, ses) for key in common]
    class_shares = _class_share_document(a, b)
    distance = class_shares["total_variation"]
    tokens = _compare_tokens(a, b, thresholds)
    reasons = [f"{g['kind']}={g['value']}{' (' + g['name'] + ')' if g.get('name') else ''}: {reason}" for g in groups for reason in g["drift"]]
    reasons += [f"tokens of {r['feature']}, target={r['target']}: {reason}" for r in tokens for reason in r["drift"]]
    if distance > thresholds.max_class_share_change and class_shares["beyond_noise"] is not False:
        reasons.append(f"explained-class shares moved by {distance:.3f} (total variation) > {thresholds.max_class_share_change}")
    return {
        "run_a": a.path, "run_b": b.path,
        "thresholds": dataclasses.asdict(thresholds),
        "drift": bool(reasons), "reasons": reasons,
        "spans_different": spans,
        "model_change": model_change(a, b),
        "warnings": _setting_differences(a, b) + [w for w in (baseline_moved(a, b),) if w] + ([] if same_measure else [
            f"the runs measure completeness differently (A: {measure_a}; B: {measure_b}); the completeness share is not compared"
        ]),
        "completeness_measure": measure_a if same_measure else None,
        "class_shares": class_shares,
        "groups": groups,
        "groups_only_in_a": [f"{k}={v}" for k, v in keys_a if (k, v) not in b.groups],
        "groups_only_in_b": [f"{k}={v}" for k, v in keys_b if (k, v) not in a.groups],
        "tokens": tokens,
        # Informational: a change of explanation quality is not drift of the data.
        "quality": compare_quality(a.summary.get("quality") or a.manifest.get("quality"),
                                   b.summary.get("quality") or b.manifest.get("quality")),
    }


# Tokens seen fewer times than this in either run are not ranked: their mean is noise.
MIN_TOKEN_COUNT = 5


def _compare_tokens(a: RunResult, b: RunResult, t: DriftThresholds) -> list[dict[str, Any]]:
    """Per input attributed at a layer (in both runs) and per explained class in both, plus 'all'
    classes pooled: the rank agreement of the tokens' mean |attribution| and the tokens whose mean
    attribution moved most. Judged when both runs have at least min_group_rows positions there."""
    if a.tokens is None or b.tokens is None:
        return []
    totals_a, totals_b = token_totals(a.tokens), token_totals(b.tokens)
    results = []
    for feature in [f for f in totals_a if f in totals_b]:
        (ta, names), (tb, _) = totals_a[feature], totals_b[feature]
        classes = sorted(set(ta.classes.tolist()) & set(tb.classes.tolist()))
        for target in ["all", *classes]:
            part_a, part_b = (ta.for_class(None), tb.for_class(None)) if target == "all" else (ta.for_class(target), tb.for_class(target))
            agreement = token_rank_agreement(part_a, part_b, MIN_TOKEN_COUNT, t.top_k)
            result = {"feature": feature, "target": str(target), "positions_a": part_a.positions, "positions_b": part_b.positions,
                      **agreement, "most_changed": _most_changed_tokens(part_a, part_b, names)}
            result["checked"] = min(part_a.positions, part_b.positions) >= t.min_group_rows and agreement["tokens"] >= 2
            result["drift"] = _token_drift(result, t) if result["checked"] else []
            results.append(result)
    return results


def _most_changed_tokens(a: TokenTotals, b: TokenTotals, names: dict[int, str], shown: int = 5) -> list[dict[str, Any]]:
    """The tokens (seen MIN_TOKEN_COUNT times in both) whose mean attribution moved most."""
    def means(t: TokenTotals) -> dict[int, float]:
        keep = t.counts >= MIN_TOKEN_COUNT
        return dict(zip(t.ids[keep].tolist(), (t.sums[keep] / t.counts[keep]).tolist()))

    ma, mb = means(a), means(b)
    changes = sorted(((mb[i] - ma[i], i) for i in ma if i in mb), key=lambda c: (-abs(c[0]), c[1]))[:shown]
    return [{"token": names.get(i, str(i)), "mean_a": ma[i], "mean_b": mb[i], "change": change} for change, i in changes]


def _token_drift(r: dict[str, Any], t: DriftThresholds) -> list[str]:
    reasons = []
    if np.isfinite(r["spearman"]) and r["spearman"] < t.min_spearman:
        reasons.append(f"Spearman {r['spearman']:.3f} < {t.min_spearman} over {r['tokens']} tokens")
    if np.isfinite(r["top_k_overlap"]) and r["top_k_overlap"] < t.min_top_k_overlap:
        reasons.append(f"top-{r['top_k']} token overlap {r['top_k_overlap']:.2f} < {t.min_top_k_overlap}")
    return reasons


FEATURE_ORDER = "sorted by |change| of mean |attribution|, largest first"


def spans_note(document: dict[str, Any]) -> Optional[str]:
    """The sentence saying that a comparison spans different methods/targets/models, or None."""
    spans = document.get("spans_different") or []
    return f"this comparison spans different {'; '.join(spans)} (--allow-different): read changes as the effect of that, not as drift of the data" if spans else None


DRIFT_TABLE_COLUMNS = ("group_kind", "group_value", "class", "slice", "feature", "before", "after", "change", "relative_change",
                       "interval_low", "interval_high", "flagged", "reason")


def drift_table(document: dict[str, Any]):
    """The comparison as rows for dashboards (`compare --table FILE.parquet`): one per group and
    leaf feature, with A's and B's mean |attribution|, the change and its 95 % interval (null
    without bootstrap errors), whether the feature is flagged and why; class: the explained class
    of a class group (its name when the run has class names), slice: 'column=value' of a slice group."""
    import pyarrow as pa

    rows: dict[str, list] = {name: [] for name in DRIFT_TABLE_COLUMNS}
    for g in document["groups"]:
        for f in g["features"]:
            interval = f.get("change_interval") or [None, None]
            flagged = bool(f.get("drift"))
            reason = ""
            if flagged:
                reason = f"mean |attribution| changed {f['relative_change']:+.0%}" + (", beyond noise" if f.get("beyond_noise") else "")
            values = {
                "group_kind": g["kind"], "group_value": g["value"],
                "class": (g.get("name") or g["value"]) if g["kind"] == "target" else None,
                "slice": f"{g['kind'][len('slice:'):]}={g['value']}" if g["kind"].startswith("slice:") else None,
                "feature": f["feature"], "before": f["mean_abs_a"], "after": f["mean_abs_b"], "change": f["change"],
                "relative_change": f["relative_change"], "interval_low": interval[0], "interval_high": interval[1],
                "flagged": flagged, "reason": reason,
            }
            for name in DRIFT_TABLE_COLUMNS:
                rows[name].append(values[name])
    types = {"before": pa.float64(), "after": pa.float64(), "change": pa.float64(), "relative_change": pa.float64(),
             "interval_low": pa.float64(), "interval_high": pa.float64(), "flagged": pa.bool_()}
    return pa.table({name: pa.array(rows[name], types.get(name, pa.string())) for name in DRIFT_TABLE_COLUMNS})


def format_comparison(document: dict[str, Any], features: int = 10) -> str:
    """A terminal table: one line per group, then the most changed features overall."""
    lines = [f"A: {document['run_a']}", f"B: {document['run_b']}"]
    if document.get("model_change"):
        lines.append(f"MODEL CHANGED: {document['model_change']}: changes below are the new model's as much as the data's")
    note = spans_note(document)
    lines += [f"NOTE: {note}"] if note else []
    lines += [f"warning: {w}" for w in document["warnings"]]
    header = (f"{'group':<24} {'rows A':>8} {'rows B':>8} {'spearman':>9} {'kendall':>8} {'top-k':>6} {'nDCG':>6} {'score shift':>11} "
              f"{'compl. Δ':>9}  drift")
    lines += ["", header, "-" * len(header)]
    for g in document["groups"]:
        completeness = f"{g['completeness']['change']:+.3f}" if g["completeness"] else "-"
        flag = "DRIFT" if g["drift"] else ("ok" if g["checked"] else "(few rows)")
        lines.append(
            f"{g['kind'] + '=' + g['value'] + (' ' + g['name'] if g.get('name') else ''):<24.24} {g['rows_a']:>8} {g['rows_b']:>8} {g['spearman']:>9.3f} "
            f"{g['kendall_tau_b']:>8.3f} {g['top_k_overlap']:>6.2f} {g.get('ndcg', float('nan')):>6.3f} "
            f"{g['prediction']['shift_in_std_a']:>+11.2f} {completeness:>9}  {flag}"
        )
    overall = next((g for g in document["groups"] if g["kind"] == "overall"), None)
    if overall:
        lines += ["", f"most changed features (overall, mean |attribution|; {FEATURE_ORDER}):",
                  f"{'feature':<28} {'A':>10} {'B':>10} {'change':>9}  95 % interval of B - A"]
        for f in overall["features"][:features]:
            relative = f"{f['relative_change']:+.1%}" if f["relative_change"] is not None else "-"
            interval = f.get("change_interval")
            noise = "" if interval is None else f"[{interval[0]:+.3g}, {interval[1]:+.3g}]" + ("" if f["beyond_noise"] else " within noise")
            lines.append(f"{f['feature']:<28.28} {f['mean_abs_a']:>10.4g} {f['mean_abs_b']:>10.4g} {relative:>9}  {noise}")
    if document.get("tokens"):
        lines += ["", f"tokens (mean |attribution| per token, seen >= {MIN_TOKEN_COUNT} times in both runs):",
                  f"{'input':<20} {'target':>6} {'tokens':>7} {'spearman':>9} {'top-k':>6}  drift   most moved (mean attribution A -> B)"]
        for r in document["tokens"]:
            flag = "DRIFT" if r["drift"] else ("ok" if r["checked"] else "(few)")
            moved = ", ".join(f"{m['token']} {m['mean_a']:+.3g}->{m['mean_b']:+.3g}" for m in r["most_changed"][:3])
            lines.append(f"{r['feature']:<20.20} {r['target']:>6} {r['tokens']:>7} {r['spearman']:>9.3f} {r['top_k_overlap']:>6.2f}  {flag:<6}  {moved}")
    if document.get("quality"):
        lines += ["", "quality audit (A -> B; not drift: how far the explanations can be trusted):"]
        for q in document["quality"]:
            shown = [f"{x:.3f}" if x is not None else "-" for x in (q["a"], q["b"])]
            change = f"{q['change']:+.3f}" if q["change"] is not None else "-"
            lines.append(f"  {q['name']:<22} {shown[0]:>8} -> {shown[1]:>8}  ({change})")
    lines.append("")
    if document["drift"]:
        lines += ["DRIFT:"] + [f"  - {reason}" for reason in document["reasons"]]
    else:
        lines.append("no drift beyond the thresholds")
    if note:
        lines.append(f"(across different {'; '.join(document['spans_different'])})")
    return "\n".join(lines)
