"""One self-contained HTML report of a run (figures inline as PNG data URIs, no external files).

Sections: the run (counts, model fingerprint, settings), global importance, importance per class,
attribution maps and exemplars for image-like inputs, completeness error, prediction distribution,
and drift against a baseline run when one is given.
"""

from __future__ import annotations

import base64
import html
import json
import os
import tempfile
from typing import Any, Callable, Optional

import numpy as np

from audit import plots
from audit.compare import FEATURE_ORDER, DriftThresholds, compare_runs, spans_note
from audit.quality_reading import quality_paragraphs, quality_table
from audit.runs import RunResult

__all__ = ["write_report", "render_report", "caption"]

TOP_FEATURES = 25
DRIFT_NUMBERED = 10  # features numbered in the drift scatter
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } .drift { color: #b03a2e; font-weight: bold; }
.ok { color: #2e7d32; } .note { color: #666; font-size: 0.85em; } img { max-width: 100%; }
"""


def _image(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


class _Figure(str):
    """A number already written as text (e.g. '+56.5%'): right-aligned like a number."""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(
            f'<td class="n">{_format(v)}</td>' if isinstance(v, (int, float)) and not isinstance(v, bool)
            else f'<td class="n">{html.escape(v)}</td>' if isinstance(v, _Figure) else f"<td>{html.escape(str(v))}</td>"
            for v in row
        ) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _format(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return "–" if not np.isfinite(value) else f"{value:.4g}"


def _with_interval(value: float, interval: Optional[list]) -> Any:
    """A value with its 95 % interval as the tables show it ('0.1234 [0.1101, 0.1372]'), or the
    value alone for runs summarized without the bootstrap."""
    if not interval or any(v is None for v in interval):
        return value
    return _Figure(f"{_format(value)} [{_format(interval[0])}, {_format(interval[1])}]")


def _overall_features(run: RunResult) -> list[tuple[str, float]]:
    overall = next(g for g in run.summary["groups"] if g["kind"] == "overall")
    return sorted(((name, f["mean_abs"]) for name, f in overall["features"].items()), key=lambda item: -item[1])


def _element_maps(run: RunResult) -> dict[tuple[str, str, str], np.ndarray]:
    """{(group kind, group value, tensor feature): (length,) mean |attribution| per element}."""
    table = run.features.to_pydict()
    maps: dict[tuple[str, str, str], dict[int, float]] = {}
    for kind, value, feature, element, mean_abs in zip(
        table["group_kind"], table["group_value"], table["feature"], table["element"], table["mean_abs"]
    ):
        if element >= 0:
            maps.setdefault((kind, value, feature), {})[element] = mean_abs
    return {key: np.array([cells[e] for e in range(len(cells))]) for key, cells in maps.items()}


def _image_features(run: RunResult) -> list[dict[str, Any]]:
    """Tensor features with at least two spatial dimensions: shown as pictures."""
    return [f for f in run.summary["features"] if f["kind"] == "tensor" and f["shape"] and len([d for d in f["shape"] if d > 1]) >= 2]


def _section_run(run: RunResult) -> str:
    manifest, counts = run.manifest, run.manifest["counts"]
    facts = [
        ["status", manifest["status"]],
        ["records read", counts["records_read"]], ["records attributed", counts["records_attributed"]],
        ["records dead-lettered", counts["records_dead_lettered"]], ["rows written", counts["rows_written"]],
        ["rows with non-finite attributions", counts.get("rows_not_finite", 0)],
        ["model", manifest["model"]["path"]], ["model sha256", manifest["model"]["sha256"]],
        ["finished (UTC)", manifest["timings"]["finished_utc"]], ["pipeline seconds", manifest["timings"]["pipeline_seconds"]],
        ["versions", ", ".join(f"{k} {v}" for k, v in manifest["versions"].items())],
    ]
    return "<h2>Run</h2>" + _table(["", ""], facts)


def _section_quality(run: RunResult) -> str:
    """Can I trust these attributions? The launcher's quality audit (pipeline.quality): its
    numbers, the flags, one paragraph per number, and the mean deletion/insertion curves."""
    quality = run.summary.get("quality") or run.manifest.get("quality")
    if not quality:
        return ('<h2>Can I trust these attributions?</h2><p class="note">This run has no quality audit (--quality-rows 0); '
                "run with the default --quality-rows 256 to test what its attributions depend on.</p>")
    parts = ["<h2>Can I trust these attributions?</h2>"]
    if quality.get("error") or not quality.get("rows"):
        reason = quality.get("error") or quality.get("note") or "no rows were audited"
        return parts[0] + f"<p>The quality audit did not run: {html.escape(str(reason))}.</p>"
    flags = quality.get("flags") or []
    if flags:
        parts.append("<ul>" + "".join(f'<li class="warn">{html.escape(f)}</li>' for f in flags) + "</ul>")
    parts.append(_table(["number", "value", "spread", "limit"], quality_table(quality)))
    parts += [f"<p>{html.escape(p)}</p>" for p in quality_paragraphs(quality)]
    deletion, insertion = quality.get("deletion") or {}, quality.get("insertion") or {}
    if deletion.get("curve") and insertion.get("curve") and deletion.get("fractions"):
        png = plots.faithfulness_curves(deletion["fractions"], [
            ("deletion (lower is better)", deletion["curve"], deletion["random_curve"]),
            ("insertion (higher is better)", insertion["curve"], insertion["random_curve"]),
        ])
        parts.append(_image(png, "deletion and insertion curves"))
    return "".join(parts)


def _section_settings(run: RunResult) -> str:
    settings = [[k, json.dumps(v)] for k, v in run.manifest["settings"].items()]
    options = " ".join(run.manifest.get("pipeline_options") or []) or "(none)"
    return "<h2>Settings</h2>" + _table(["setting", "value"], settings) + f"<p>Pipeline options: {html.escape(options)}</p>"


def _section_importance(run: RunResult, maps: dict) -> str:
    parts = ["<h2>Global importance</h2>"]
    features = _overall_features(run)
    if len(features) > 1:
        top = features[:TOP_FEATURES]
        overall = next(g for g in run.summary["groups"] if g["kind"] == "overall")["features"]
        signed = np.array([overall[n].get("mean", np.nan) for n, _ in top], dtype=float)
        intervals = None
        if all(overall[n].get("mean_abs_interval") for n, _ in top):  # runs summarized with the bootstrap
            intervals = np.array([[np.nan if v is None else v for v in overall[n]["mean_abs_interval"]] for n, _ in top], dtype=float).T
        parts.append(_image(plots.importance_bars([n for n, _ in top], np.array([v for _, v in top]),
                                                  f"top {len(top)} of {len(features)} features (tensor columns: per-row total)",
                                                  signed=signed, intervals=intervals), "global importance"))
        parts.append(_beeswarm(run, [n for n, _ in top]))
    for feature in _image_features(run):
        overall = maps[("overall", "all", feature["name"])]
        parts.append(_image(plots.maps_grid([overall], ["all rows"], feature["shape"], f"mean |attribution| per element of {feature['name']}"),
                            f"importance map {feature['name']}"))
    return "".join(parts)


BEESWARM_FEATURES = 12


def _beeswarm(run: RunResult, ranked: list[str]) -> str:
    """The beeswarm of the most important scalar features from the run's sampled rows
    (summary_points.parquet; absent for runs without scalar features or written before it)."""
    if run.points is None or run.points.num_rows == 0:
        return ""
    table = run.points.to_pydict()
    kept = [n for n in ranked if n in set(table["feature"])][:BEESWARM_FEATURES]
    if not kept:
        return ""
    feature = np.asarray(table["feature"], dtype=object)
    attribution, value = np.asarray(table["attribution"], dtype=float), np.asarray(table["value"], dtype=float)
    rows = int(run.summary.get("points", {}).get("rows", 0))
    note = (f'<p class="note">Each point is one of {rows:,} rows sampled uniformly from the run: where its attribution '
            "lies, coloured by the row's value of the feature (its rank among the sampled values: blue low, red high). "
            "Red to the right: higher values push the explained score up.</p>")
    picture = plots.beeswarm([attribution[feature == n] for n in kept], [value[feature == n] for n in kept], kept,
                             f"attribution per sampled row, top {len(kept)} scalar features")
    return note + _image(picture, "beeswarm")


def _section_tokens(run: RunResult) -> str:
    """Inputs attributed at a layer (token/category ids, text): per input and explained class, the
    tokens with the highest and lowest mean attribution (summary.json token_importance)."""
    document = run.summary.get("token_importance")
    if not document:
        return ""
    parts = ["<h2>Tokens and categories</h2>",
             '<p class="note">Per input attributed at a layer and per explained class: the tokens (or category ids) '
             "whose positions carry the highest and the lowest mean attribution, with how many positions held them "
             "(tokens seen fewer than 5 times are not ranked; padding is not counted).</p>"]
    for name, view in document.items():
        rows = []
        for cls, ranking in sorted(view["classes"].items(), key=lambda item: (len(item[0]), item[0])):
            for direction in ("for", "against"):
                shown = run.class_label(cls) if run.class_names and str(cls).isdigit() else cls
                rows += [[shown, direction, e["token"], e["count"], float(e["mean"]), float(e["mean_abs"])] for e in ranking[direction]]
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(_table(["class", "direction", "token", "positions", "mean attribution", "mean |attribution|"], rows))
    return "".join(parts)


# Slice values beyond this many get no map each (the heatmap above still covers up to 40).
MAX_SLICE_MAPS = 24


def _section_groups(run: RunResult, maps: dict) -> str:
    """Heatmaps of importance per explained class and per slice value (when there are several)."""
    kinds = dict.fromkeys(g["kind"] for g in run.summary["groups"] if g["kind"] != "overall")
    features = [name for name, _ in _overall_features(run)][:TOP_FEATURES]
    parts = []
    for kind in kinds:
        values = sorted((g["value"] for g in run.summary["groups"] if g["kind"] == kind), key=lambda c: (len(c), c))
        if len(features) < 2 or not 2 <= len(values) <= 40:
            continue
        groups = run.groups
        matrix = np.array([[groups[(kind, v)]["features"][f]["mean_abs"] for f in features] for v in values])
        label = {"target": "explained class", "rank": "rank (top_k)"}.get(kind, kind[len("slice:"):])
        names = [run.class_label(v) if kind == "target" else (f"rank {v}" if kind == "rank" else f"{label}={v}") for v in values]
        parts.append(_image(plots.class_heatmap(matrix, names, features, f"mean |attribution| per {label}"), f"heatmap per {label}"))
        shown = features[:INTERVAL_FEATURES]
        if all(groups[(kind, v)]["features"][f].get("mean_abs_interval") for v in values for f in shown):
            rows = [[name, groups[(kind, v)]["rows"]] + [_with_interval(groups[(kind, v)]["features"][f]["mean_abs"],
                                                                        groups[(kind, v)]["features"][f]["mean_abs_interval"]) for f in shown]
                    for v, name in zip(values, names)]
            parts.append(f'<p class="note">Mean |attribution| per {html.escape(label)} with its 95 % bootstrap interval '
                         f'({run.summary["bootstrap"]["replicates"]} replicates), the {len(shown)} most important features overall.</p>')
            parts.append(_table([label, "rows"] + shown, rows))
    classes = sorted((g["value"] for g in run.summary["groups"] if g["kind"] == "target"), key=lambda c: (len(c), c))
    for feature in _image_features(run):
        per_class = [maps[("target", c, feature["name"])] for c in classes]
        parts.append(_image(plots.maps_grid(per_class, [run.class_label(c) for c in classes], feature["shape"],
                                            f"mean |attribution| of {feature['name']} per class" + (" (all ranks)" if _is_top_k(run) else "")),
                            f"per-class maps {feature['name']}"))
        ranks = sorted((g["value"] for g in run.summary["groups"] if g["kind"] == "rank"), key=int)
        if ranks:
            parts.append(_image(plots.maps_grid([maps[("rank", r, feature["name"])] for r in ranks], [f"rank {r}" for r in ranks],
                                                feature["shape"], f"mean |attribution| of {feature['name']} per rank (1 = top class)"),
                                f"per-rank maps {feature['name']}"))
        for kind in (k for k in kinds if k.startswith("slice:")):
            values = sorted((g["value"] for g in run.summary["groups"] if g["kind"] == kind), key=lambda c: (len(c), c))
            column = kind[len("slice:"):]
            if 1 <= len(values) <= MAX_SLICE_MAPS:
                parts.append(_image(plots.maps_grid([maps[(kind, v, feature["name"])] for v in values], [f"{column}={v}" for v in values],
                                                    feature["shape"], f"mean |attribution| of {feature['name']} per {column}"),
                                    f"per-slice maps {feature['name']} {column}"))
    return "<h2>Importance per class and slice</h2>" + "".join(parts) if parts else ""


# Features shown with their intervals in the per-class and per-slice tables (the heatmaps show more).
INTERVAL_FEATURES = 5

CRITERIA = {
    "highest_score": "highest score", "lowest_score": "lowest score",
    "most_faithful": "most faithful (smallest completeness error)", "least_faithful": "least faithful (largest completeness error)",
}


def _distinct(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most one exemplar per (criterion, class), the best ranked: runs written before the
    summaries chose one per class (audit.summary.Exemplars) may hold near copies of one class."""
    seen, kept = set(), []
    for row in sorted(rows, key=lambda r: (r["criterion"], r["rank"])):
        if (row["criterion"], row["target"]) not in seen:
            seen.add((row["criterion"], row["target"]))
            kept.append(row)
    order = list(dict.fromkeys(r["criterion"] for r in rows))  # the criteria in the file's order
    return sorted(kept, key=lambda r: (order.index(r["criterion"]), r["rank"]))


def _is_top_k(run: RunResult) -> bool:
    return str(run.manifest["settings"].get("target", "")).startswith("top_k")


def _grad_cam_note(run: RunResult) -> str:
    """What the panels show for a grad_cam run: the layer's map, upsampled, over the decoded image."""
    cam = run.manifest.get("model", {}).get("grad_cam")
    if not cam:
        return ""
    h, w = cam["layer_shape"][:2]
    explained = ("the class score before the final softmax/sigmoid (as Grad-CAM was published)"
                 if run.manifest.get("settings", {}).get("explain_logits") else "the model's output as it is (probabilities: maps "
                 "fade where a class is predicted with near certainty; --explain-logits explains the score before the softmax)")
    return (f" The maps are Grad-CAM at layer {html.escape(str(cam['layer']))} ({h}&times;{w}) of {explained}, upsampled "
            "(bilinear) to the image and drawn over it; they are never negative (ReLU).")


def _section_exemplars(run: RunResult) -> str:
    images = _image_features(run)
    table = _distinct(run.exemplars.to_pylist())
    if not table:
        return ""
    colours = (" Red: attribution towards the explained class; blue: against; the panels of a row share the colour scale "
               "of the colorbar at its end.") if images else ""
    ranks = " Rows are each record's top class (rank 1) only: the runners-up of a top_k run would fill the lowest scores." if _is_top_k(run) else ""
    parts = ["<h2>Examples</h2>", '<p class="note">Highest and lowest explained scores, and the most and least faithful '
             "rows (smallest and largest completeness error), at most one per explained class and criterion: the rows "
             f"nearest an extreme are mostly near copies of one class's most typical input.{ranks}{colours}{_grad_cam_note(run)}</p>"]
    offsets = np.cumsum([0] + [f["length"] for f in run.summary["features"]])
    by_criterion: dict[str, list] = {}
    for row in table:
        by_criterion.setdefault(row["criterion"], []).append(row)
    for j, feature in enumerate(run.summary["features"]):
        if feature not in images:
            continue
        start, end = offsets[j], offsets[j + 1]
        grid = [
            (CRITERIA.get(criterion, criterion).split(" (")[0],
             [(caption(r, run.class_label), np.array(r["inputs"][start:end]), np.array(r["attributions"][start:end])) for r in rows])
            for criterion, rows in by_criterion.items()
        ]
        parts.append(_image(plots.exemplar_grid(grid, feature["shape"]), f"exemplars {feature['name']}"))
    rows = [[CRITERIA.get(r["criterion"], r["criterion"]), r["key"], run.class_label(r["target"]), r["score"], _completeness_text(_exemplar_error(r))]
            for r in table]
    parts.append(_table(["criterion", "key", "explained class", "score F(x)[class]", "completeness error"], rows))
    return "".join(parts)


def _exemplar_error(row: dict[str, Any]) -> Optional[float]:
    """An exemplar's completeness error (runs summarized before format 2 called it delta_rel)."""
    return row["completeness_error"] if "completeness_error" in row else row.get("delta_rel")


def _completeness_text(delta_rel: Optional[float]) -> str:
    """A completeness error in percent: 7e-4 -> '0.07 %'; None -> 'n/a (not a path method)'."""
    if delta_rel is None or not np.isfinite(delta_rel):
        return "n/a (not a path method)"
    return f"{100 * delta_rel:.2g} %"


def _short(key: str, width: int = 22) -> str:
    return key if len(key) <= width else key[: width // 2 - 1] + "…" + key[-(width // 2):]


def caption(row: dict[str, Any], class_label: Optional[Callable[[Any], str]] = None) -> str:
    """An exemplar panel's caption, every field named: key, explained class, score and (for path
    methods) the completeness error, e.g. 'key img12 / class 4 / score 0.998 /
    completeness error 0.07 %' on four lines. class_label: class index -> its label
    (RunResult.class_label: the name when the run gave class names)."""
    explained = class_label(row["target"]) if class_label is not None else f"class {row['target']}"
    lines = [f"key {_short(str(row['key']))}", explained, f"score {row['score']:.3f}"]
    if _exemplar_error(row) is not None:
        lines.append(f"completeness error {_completeness_text(_exemplar_error(row))}")
    return "\n".join(lines)


def _steps_used_section(steps: dict[str, Any]) -> list[str]:
    """Adaptive integrated gradients: how many gradient evaluations the rows took, and how many met
    the completeness target."""
    q = steps["quantiles"]
    rows = [[value, count, count / steps["rows"]] for value, count in steps["counts"].items()]
    return [
        "<h3>Points used per row (completeness target)</h3>",
        f'<p>{steps["rows_met"]:,} of {steps["rows"]:,} rows ({(steps["share_met"] or 0):.2%}) met the completeness target; '
        f'{steps["gradient_evaluations"]:,} gradient evaluations in all, mean {steps["mean"]:.1f} per row, median {q["q50"]:g}, '
        f'90th percentile {q["q90"]:g}, 99th {q["q99"]:g}, most {q["max"]:g}.</p>',
        _table(["steps used", "rows", "share of rows"], rows),
    ]


def _section_distributions(run: RunResult) -> str:
    overall = run.groups[("overall", "all")]
    parts = []
    completeness = overall["completeness"]
    if completeness:
        parts.append("<h2>Completeness error</h2>")
        parts.append(f'<p>{completeness["rows_over_threshold"]:,} of {completeness["rows_with_delta"]:,} rows '
                     f'({(completeness["share_over_threshold"] or 0):.2%}) have a completeness error over '
                     f'{completeness["threshold"]:g}; median {completeness["quantiles"]["q50"]:.3g}, 99th percentile '
                     f'{completeness["quantiles"]["q99"]:.3g}.</p>')
        if completeness.get("measure"):
            parts.append(f'<p class="note">{html.escape(completeness["measure"])}</p>')
        histogram = completeness["histogram"]
        parts.append(_image(plots.completeness_histogram(histogram["edges"], histogram["counts"], completeness["threshold"]), "completeness histogram"))
        if completeness.get("steps_used"):
            parts += _steps_used_section(completeness["steps_used"])
    parts += _section_predictions(run, overall)
    slices = [g for g in run.summary["groups"] if g["kind"].startswith("slice:")]
    if slices:
        parts.append("<h2>Slices</h2>")
        top = [name for name, _ in _overall_features(run)][:3]
        rows = [[g["kind"][6:], g["value"], g["rows"], g["prediction"]["mean"],
                 (g["completeness"] or {}).get("share_over_threshold") or 0.0]
                + [_with_interval(g["features"][f]["mean_abs"], g["features"][f].get("mean_abs_interval")) for f in top]
                for g in slices]
        parts.append(_table(["slice", "value", "rows", "mean score", "share over threshold"] + [f"|{f}|" for f in top], rows))
    return "".join(parts)


def _explained_outputs(run: RunResult) -> Optional[int]:
    """The explained output's width when the manifest records it (runs before it did: None)."""
    return run.manifest["model"].get("outputs")


# An explained probability above this is saturated: its gradients are ~0 (report note).
SATURATED_SCORE = 0.9999


def _saturated_share(prediction: dict[str, Any]) -> Optional[float]:
    """The largest share s in {25 %, 50 %, 75 %, 95 %, 99 %} such that the (1 - s) quantile of the
    explained score is above SATURATED_SCORE; None below 25 %."""
    quantiles = prediction.get("quantiles") or {}
    shares = [share for share, name in ((0.99, "q01"), (0.95, "q05"), (0.75, "q25"), (0.5, "q50"), (0.25, "q75"))
              if (quantiles.get(name) or 0) > SATURATED_SCORE]
    return shares[0] if shares else None


def _section_predictions(run: RunResult, overall: dict[str, Any]) -> list[str]:
    """The explained score's distribution; per rank for top_k runs; class shares only when there
    are two or more explained classes (a scalar-output model, e.g. a sigmoid, has one: its
    score distribution is the figure, a one-bar 'class share' would say nothing)."""
    prediction = overall["prediction"]
    target_groups = [g for g in run.summary["groups"] if g["kind"] == "target"]
    rank_groups = [g for g in run.summary["groups"] if g["kind"] == "rank"]
    scalar = _explained_outputs(run) == 1 or len(target_groups) < 2
    pooled = f" (all {len(rank_groups)} ranks pooled: see per rank below)" if rank_groups else ""
    parts = ["<h2>Predictions</h2>",
             f'<p>Explained score: mean {prediction["mean"]:.4g}, std {prediction["std"]:.4g}, min {prediction["min"]:.4g}, '
             f'max {prediction["max"]:.4g} over {overall["rows"]:,} rows{pooled}.</p>']
    kind = "logit" if run.manifest["settings"].get("explain_logits") else "output"
    saturated = _saturated_share(prediction) if not run.manifest["settings"].get("explain_logits") else None
    if saturated:
        parts.append(f'<p class="drift">At least {saturated:.0%} of the rows score above {SATURATED_SCORE} (quantiles of the '
                     "explained output): a saturated softmax/sigmoid has gradients near 0 there, so their attributions and Grad-CAM "
                     "maps fade towards 0 whatever the input. --explain-logits explains the score before the final activation.</p>")
    if rank_groups:
        parts.append(f'<p class="note">This run explains each record\'s top {len(rank_groups)} classes (target '
                     f'{html.escape(str(run.manifest["settings"]["target"]))}): one row per record and rank. Scores are shown per rank '
                     "(rank 1 = the record's top class); pooled, they would mix confident top classes with unlikely runners-up.</p>")
        parts.append(_table(["rank", "rows", "mean score", "std", "min", "max"],
                            [[f"rank {g['value']}", g["rows"], g["prediction"]["mean"], g["prediction"]["std"], g["prediction"]["min"],
                              g["prediction"]["max"]] for g in rank_groups]))
        series = [(f"rank {g['value']}", g["prediction"]["histogram_of_sample"]["edges"], g["prediction"]["histogram_of_sample"]["counts"])
                  for g in rank_groups]
        parts.append(_image(plots.score_distribution(series, f"explained score F(x)[class] (model {kind})", "explained score per rank"),
                            "score distribution per rank"))
    if scalar:
        histogram = prediction["histogram_of_sample"]
        what = "the model's single output" if _explained_outputs(run) == 1 else "the one explained class"
        parts.append(f'<p class="note">One explained class ({what}): its score distribution is shown instead of class shares.</p>')
        parts.append(_image(plots.score_distribution([("all rows", histogram["edges"], histogram["counts"])],
                                                     f"score F(x) (model {kind})", "score distribution"), "score distribution"))
    elif not rank_groups:
        classes = _class_shares(run, target_groups, overall["rows"])
        histogram = prediction["histogram_of_sample"]
        parts.append(_image(plots.prediction_histogram(histogram["edges"], histogram["counts"], classes), "prediction distribution"))
        if all(g.get("share_interval") for g in target_groups):
            ordered = sorted(target_groups, key=lambda g: (len(g["value"]), g["value"]))
            parts.append(_table(["explained class", "rows", "share of rows [95 % interval]"],
                                [[run.class_label(g["value"]), g["rows"], _with_interval(g["share"], g["share_interval"])] for g in ordered]))
    else:
        classes = _class_shares(run, target_groups, overall["rows"])
        histogram = prediction["histogram_of_sample"]
        parts.append(_image(plots.prediction_histogram(histogram["edges"], histogram["counts"], classes,
                                                       f"share of rows (all {len(rank_groups)} ranks)"), "prediction distribution"))
    return parts


def _class_shares(run: RunResult, target_groups: list, rows: int) -> dict[str, float]:
    """{class: share of rows}, in class index order; a class is its name when the run gave names."""
    ordered = sorted(target_groups, key=lambda g: (len(g["value"]), g["value"]))
    return {g.get("name", g["value"]): g["rows"] / max(rows, 1) for g in ordered}


def _relative(change: Optional[float]) -> "_Figure":
    """A relative change as the CLI writes it: 0.5646 -> '+56.5%'."""
    return _Figure("–" if change is None or not np.isfinite(change) else f"{change:+.1%}")


def _section_drift(run: RunResult, baseline: RunResult, thresholds: DriftThresholds, allow_different: bool = False) -> str:
    document = compare_runs(baseline, run, thresholds, allow_different=allow_different)
    parts = ["<h2>Drift against the baseline run</h2>", f"<p>Baseline: {html.escape(baseline.path)}.</p>"]
    if document.get("model_change"):
        parts.append(f'<p class="drift">Model changed ({html.escape(document["model_change"])}): the changes below are the '
                     f"new model's as much as the data's.</p>")
    note = spans_note(document)
    if note:
        parts.append(f'<p class="drift">Note: {html.escape(note)}.</p>')
    if document["drift"]:
        parts.append('<p><span class="drift">DRIFT</span>:</p><ul>' + "".join(f"<li>{html.escape(r)}</li>" for r in document["reasons"]) + "</ul>")
    else:
        parts.append('<p><span class="ok">no drift beyond the thresholds</span></p>')
    parts += [f'<p class="note">warning: {html.escape(w)}</p>' for w in document["warnings"]]
    rows = [[f"{g['kind']}={g['value']}", g["rows_a"], g["rows_b"], g["spearman"], g["kendall_tau_b"], g["top_k_overlap"],
             g["prediction"]["shift_in_std_a"], "DRIFT" if g["drift"] else ("ok" if g["checked"] else "few rows")]
            for g in document["groups"]]
    parts.append(_table(["group", "rows baseline", "rows", "Spearman", "Kendall τ-b", "top-k overlap", "score shift (std of baseline)", ""], rows))
    overall = next(g for g in document["groups"] if g["kind"] == "overall")
    a = np.array([f["mean_abs_a"] for f in overall["features"]])
    b = np.array([f["mean_abs_b"] for f in overall["features"]])
    parts.append(_image(plots.drift_scatter(a, b, [f["feature"] for f in overall["features"]], DRIFT_NUMBERED), "drift scatter"))
    parts.append(f'<p class="note">Most changed features (overall), {FEATURE_ORDER}; # = the number in the scatter.</p>')
    changed = [[str(i + 1) if i < DRIFT_NUMBERED else "", f["feature"], f["mean_abs_a"], f["mean_abs_b"], f["change"], _relative(f["relative_change"])]
               for i, f in enumerate(overall["features"][:15])]
    parts.append(_table(["#", "feature", "baseline mean |attr|", "mean |attr|", "change", "relative change"], changed))
    return "".join(parts)


def render_report(run: RunResult, baseline: Optional[RunResult] = None, thresholds: DriftThresholds = DriftThresholds(),
                  allow_different: bool = False) -> str:
    """The report as one HTML string. With a baseline that differs in method, target or model,
    ValueError unless allow_different (see audit.compare.compare_runs)."""
    maps = _element_maps(run)
    title = f"Attribution report: {run.manifest['settings']['method']} on {run.path}"
    body = [f"<h1>{html.escape(title)}</h1>", _section_run(run), _section_quality(run)]
    if ("overall", "all") in run.groups:
        body += [_section_importance(run, maps), _section_tokens(run), _section_groups(run, maps), _section_exemplars(run),
                 _section_distributions(run)]
    else:
        body.append("<p>No row with finite attributions was written in this run: there is nothing to summarize.</p>")
    if baseline is not None and ("overall", "all") in run.groups and ("overall", "all") in baseline.groups:
        body.append(_section_drift(run, baseline, thresholds, allow_different))
    body.append(_section_settings(run))
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_report(run: RunResult, path: str, baseline: Optional[RunResult] = None, thresholds: DriftThresholds = DriftThresholds(),
                 allow_different: bool = False) -> None:
    """Renders the report, then writes it to a temporary file beside `path` and renames that over
    `path`: a report that fails at any point leaves an existing file at `path` as it was."""
    page = render_report(run, baseline, thresholds, allow_different)
    folder = os.path.dirname(os.path.abspath(path))
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, prefix=".report-", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(page)
        os.chmod(handle.name, 0o644)  # as an ordinary file; NamedTemporaryFile creates it 0600
        os.replace(handle.name, path)
    except BaseException:
        os.unlink(handle.name)
        raise
