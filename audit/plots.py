"""The report's figures, drawn with matplotlib's headless Agg backend and returned as PNG bytes.

Every text in a figure comes from the data (column names, keys, slice values) or is plain text, so
matplotlib's mathtext and TeX are off for all of them: a column named `price $` or `$\\bogus$` is
drawn as written, instead of failing the whole report with a mathtext parse error.
"""

from __future__ import annotations

import functools
import io
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "importance_bars", "class_heatmap", "maps_grid", "exemplar_grid", "completeness_histogram",
    "prediction_histogram", "score_distribution", "drift_scatter",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt

    return plt


_PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def _plain_text(draw):
    """Draws (and saves) the figure with mathtext and TeX off (see the module docstring)."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(_PLAIN_TEXT):
            return draw(*args, **kwargs)

    return wrapper


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    _pyplot().close(figure)
    return buffer.getvalue()


@_plain_text
def importance_bars(names: Sequence[str], values: np.ndarray, title: str, signed: Optional[np.ndarray] = None,
                    intervals: Optional[np.ndarray] = None) -> bytes:
    """Horizontal bars, largest on top. values (n,) mean |attribution|; signed (n,): the signed
    mean attribution, drawn as a diamond on each bar's line (which way the feature pushes on
    average: near 0 with a long bar, it pushes both ways); intervals (2, n): each bar's 95 %
    interval (low, high), drawn as an error bar (NaN: none)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 0.28 * len(names) + 1.0))
    positions = np.arange(len(names))[::-1]
    error = None
    if intervals is not None:
        low, high = np.asarray(intervals, dtype=float)
        error = np.nan_to_num(np.stack([values - low, high - values]).clip(min=0))  # (2, n) distances from the bar's end
    axes.barh(positions, values, color="#3b6ea8", label="mean |attribution|" + (" (95 % interval)" if error is not None else ""),
              xerr=error, error_kw={"ecolor": "#222222", "capsize": 2, "elinewidth": 0.8})
    if signed is not None:
        axes.scatter(signed, positions, marker="D", s=18, color="#c0392b", zorder=3, label="mean attribution (signed)")
        axes.axvline(0, color="#555555", linewidth=0.6)
        axes.legend(fontsize=7, loc="lower right")
    axes.set_yticks(positions, labels=list(names), fontsize=8)
    axes.set_xlabel("mean |attribution| (bars), mean attribution (diamonds)" if signed is not None else "mean |attribution|")
    axes.set_title(title, fontsize=10)
    return _png(figure)


def _swarm_offsets(x: np.ndarray, width: float = 0.4, bins: int = 80) -> np.ndarray:
    """Vertical offsets that spread points of similar x apart (a beeswarm): within each of `bins`
    bins of x, the i-th point goes to +/- ceil(i/2) steps, steps sized so the fullest bin spans
    +/- width."""
    finite = np.isfinite(x)
    offsets = np.zeros(len(x))
    if not finite.any():
        return offsets
    low, high = float(x[finite].min()), float(x[finite].max())
    index = np.zeros(len(x), dtype=np.int64)
    index[finite] = np.minimum(((x[finite] - low) / max(high - low, 1e-300) * bins).astype(np.int64), bins - 1)
    rank = np.zeros(len(x), dtype=np.int64)
    for b in np.unique(index[finite]):
        members = np.flatnonzero(finite & (index == b))
        rank[members] = np.arange(len(members))
    step = width / max(1, (int(rank.max()) + 1) // 2)
    return np.where(rank % 2 == 1, 1, -1) * ((rank + 1) // 2) * step


@_plain_text
def beeswarm(attributions: Sequence[np.ndarray], values: Sequence[np.ndarray], names: Sequence[str], title: str) -> bytes:
    """One row of points per feature (the first on top): x = a sampled row's attribution, colour
    = that row's value of the feature as its rank among the feature's sampled values (blue low,
    red high; grey: no value), as SHAP's summary plot draws it. attributions, values: (k,) per feature."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7.5, 0.42 * len(names) + 1.2))
    colours = plt.get_cmap("coolwarm")
    for i, (x, v) in enumerate(zip(attributions, values)):
        y = len(names) - 1 - i + _swarm_offsets(np.asarray(x, dtype=float))
        v = np.asarray(v, dtype=float)
        known = np.isfinite(v)
        shade = np.full(len(v), np.nan)
        if known.any():
            order = np.argsort(np.argsort(v[known], kind="stable"), kind="stable")
            shade[known] = order / max(1, known.sum() - 1)
        axes.scatter(np.asarray(x)[~known], y[~known], s=6, color="#999999", linewidths=0)
        axes.scatter(np.asarray(x)[known], y[known], s=6, c=shade[known], cmap=colours, vmin=0, vmax=1, linewidths=0)
    axes.axvline(0, color="#555555", linewidth=0.6)
    axes.set_yticks(np.arange(len(names))[::-1], labels=list(names), fontsize=8)
    axes.set_xlabel("attribution of a sampled row")
    axes.set_title(title, fontsize=10)
    bar = figure.colorbar(plt.cm.ScalarMappable(cmap=colours), ax=axes, ticks=[0, 1], pad=0.01)
    bar.ax.set_yticklabels(["low", "high"], fontsize=8)
    bar.set_label("feature value (rank)", fontsize=8)
    return _png(figure)


@_plain_text
def class_heatmap(matrix: np.ndarray, classes: Sequence[str], features: Sequence[str], title: str) -> bytes:
    """matrix (groups, features) of mean |attribution|, each row scaled to its own maximum;
    classes: the row labels (classes or slice values)."""
    plt = _pyplot()
    scaled = matrix / np.maximum(matrix.max(axis=1, keepdims=True), 1e-12)
    figure, axes = plt.subplots(figsize=(max(5, 0.3 * len(features) + 2), 0.35 * len(classes) + 1.5))
    image = axes.imshow(scaled, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    axes.set_xticks(range(len(features)), labels=list(features), rotation=90, fontsize=7)
    axes.set_yticks(range(len(classes)), labels=list(classes), fontsize=8)
    axes.set_title(title, fontsize=10)
    figure.colorbar(image, ax=axes, label="share of the row's largest")
    return _png(figure)


def _as_image(values: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A flat tensor as an (H, W) image: channels summed (attributions) or (H, W, 3) kept."""
    array = np.asarray(values, dtype=np.float64).reshape(shape)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return array


@_plain_text
def maps_grid(maps: Sequence[np.ndarray], titles: Sequence[str], shape: Sequence[int], title: str) -> bytes:
    """Mean |attribution| maps, one panel each; maps: flat (prod(shape),) arrays. Every panel
    shares one colour scale (0 to the largest value of any panel), shown by one colorbar, so
    that classes can be compared by brightness."""
    plt = _pyplot()
    columns = min(len(maps), 6)
    rows = int(np.ceil(len(maps) / columns))
    images = []
    for values in maps:
        image = _as_image(values, shape)
        images.append(np.abs(image).sum(axis=-1) if image.ndim == 3 else image)
    top = max(float(np.max(image, initial=0)) for image in images) or 1.0
    figure, axes = plt.subplots(rows, columns, figsize=(max(1.6 * columns + 0.9, 4.8), 1.8 * rows + 0.7), squeeze=False, layout="constrained")
    for panel, (image, caption) in enumerate(zip(images, titles)):
        ax = axes[panel // columns][panel % columns]
        drawn = ax.imshow(image, cmap="magma", vmin=0, vmax=top)
        ax.set_title(caption, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    bar = figure.colorbar(drawn, ax=list(axes.flat), shrink=0.9, fraction=0.04)
    bar.set_label("mean |attribution|", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    figure.suptitle(title + ("\n(one colour scale for all panels)" if len(images) > 1 else ""), fontsize=9)
    return _png(figure)


@_plain_text
def exemplar_grid(rows: Sequence[tuple[str, list]], shape: Sequence[int]) -> bytes:
    """rows: (criterion, [(caption, inputs (n,), attributions (n,)), ...]); each panel shows the
    input as it is (one channel: grey, low values dark; three: RGB) with the attribution overlaid
    (red positive, blue negative). The panels of one
    row (one criterion, compared side by side) share a colour scale, ± the row's largest
    |attribution|, shown by the colorbar at the row's end."""
    plt = _pyplot()
    columns = max(len(items) for _, items in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.1 * columns + 0.8, 2.5 * len(rows)), squeeze=False, layout="constrained")
    for r, (criterion, items) in enumerate(rows):
        attributions = []
        for _, _, values in items:
            attribution = _as_image(values, shape)
            attributions.append(attribution.sum(axis=-1) if attribution.ndim == 3 else attribution)
        limit = max(float(np.abs(a).max(initial=0)) for a in attributions) or 1.0
        # A row of maps that are never negative (Grad-CAM) gets a scale from 0, not one half unused.
        signed = any(float(a.min(initial=0)) < 0 for a in attributions)
        cmap, low = ("bwr", -limit) if signed else ("Reds", 0.0)
        overlay = None
        for c, ((caption, inputs, _), attribution) in enumerate(zip(items, attributions)):
            ax = axes[r][c]
            image = _as_image(inputs, shape)
            if image.ndim == 3:
                span = np.ptp(image) or 1.0
                ax.imshow((image - image.min()) / span)
            else:  # as the data are: bright values light (photos, scans); inverted digits stay inverted
                ax.imshow(image, cmap="gray")
            overlay = ax.imshow(attribution, cmap=cmap, vmin=low, vmax=limit, alpha=0.55)
            ax.set_title(caption, fontsize=7)
        axes[r][0].text(-0.15, 0.5, criterion.replace("_", " "), transform=axes[r][0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=8)
        if overlay is not None:
            bar = figure.colorbar(overlay, ax=list(axes[r]), fraction=0.03, pad=0.01)
            bar.set_label("attribution", fontsize=7)
            bar.ax.tick_params(labelsize=6)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.axis("off")
    return _png(figure)


@_plain_text
def completeness_histogram(edges: Sequence, counts: Sequence[int], threshold: float) -> bytes:
    """Bars over fixed relative-error bins (edges may end with 'inf')."""
    plt = _pyplot()
    labels = [f"{_edge(a)}–{_edge(b)}" for a, b in zip(edges[:-1], edges[1:])]
    figure, axes = plt.subplots(figsize=(7, 2.8))
    colors = ["#c0392b" if _number(a) >= threshold else "#3b6ea8" for a in edges[:-1]]
    axes.bar(range(len(counts)), counts, color=colors)
    axes.set_xticks(range(len(counts)), labels=labels, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel("rows")
    axes.set_xlabel(f"completeness error |Σ attr − ΔF| / max(|ΔF|, Σ|attr|) (red: ≥ {threshold:g})")
    return _png(figure)


def _number(edge) -> float:
    return float("inf") if edge == "inf" else float(edge)


def _edge(edge) -> str:
    return "∞" if edge == "inf" else f"{float(edge):g}"


@_plain_text
def prediction_histogram(edges: Sequence[float], counts: Sequence[int], class_shares: dict[str, float], share_label: str = "share of rows") -> bytes:
    """The explained score's histogram (from the summary's sample) beside the class shares (for
    runs with at least two explained classes; see `score_distribution` otherwise)."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 2.8), gridspec_kw={"width_ratios": [3, 2]})
    if len(counts):
        left.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#3b6ea8")
    left.set_xlabel("explained score F(x)[target]")
    left.set_ylabel("rows (sample)")
    classes = list(class_shares)  # in the caller's order (class index)
    right.bar(classes, [class_shares[c] for c in classes], color="#6a9f58")
    if any(len(c) > 3 for c in classes):  # names (--class-names), not indices
        right.tick_params(axis="x", labelrotation=45)
    right.set_xlabel("explained class")
    right.set_ylabel(share_label)
    return _png(figure)


@_plain_text
def score_distribution(series: Sequence[tuple[str, Sequence[float], Sequence[int]]], xlabel: str, title: str) -> bytes:
    """Histograms of the explained score, one per series (label, edges (b + 1,), counts (b,)),
    drawn as outlines over each other: for a scalar-output model (whose one output is all there
    is to show) and for the ranks of a top_k run."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 2.8))
    colours = ["#3b6ea8", "#c0392b", "#6a9f58", "#8e44ad", "#d68910", "#555555"]
    for i, (label, edges, counts) in enumerate(series):
        if len(counts):
            axes.stairs(counts, edges, color=colours[i % len(colours)], fill=len(series) == 1, alpha=0.8 if len(series) == 1 else 1.0,
                        linewidth=1.5, label=label)
    axes.set_xlabel(xlabel)
    axes.set_ylabel("rows (sample)")
    axes.set_title(title, fontsize=10)
    if len(series) > 1:
        axes.legend(fontsize=8)
    return _png(figure)


# Offsets (points) tried in turn for a point's number, the first that overlaps nothing placed.
_LABEL_OFFSETS = ((5, 5), (5, -12), (-13, 5), (-13, -12), (0, 10), (0, -16), (9, -3), (-18, -3))


def _place_labels(figure, axes, xs: np.ndarray, ys: np.ndarray, texts: Sequence[str], obstacles: np.ndarray) -> list:
    """Annotates each point with its text at the first offset whose box stays inside the axes and
    overlaps no label placed before it nor any point of `obstacles` ((m, 2) data coordinates;
    greedy, in display coordinates); the last offset when all overlap. Returns the annotations."""
    renderer = figure.canvas.get_renderer()
    points = axes.transData.transform(obstacles)  # (m, 2) pixels
    frame = axes.get_window_extent(renderer)
    placed, boxes = [], []
    for (x, y), text in zip(zip(xs, ys), texts):
        for dx, dy in _LABEL_OFFSETS:
            note = axes.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7, color="#b03a2e",
                                 fontweight="bold", arrowprops={"arrowstyle": "-", "color": "#b03a2e", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 2})
            box = note.get_window_extent(renderer).expanded(1.1, 1.15)
            hits_point = any(box.x0 <= px <= box.x1 and box.y0 <= py <= box.y1 for px, py in points)
            inside = frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1)
            if inside and not hits_point and not any(box.overlaps(other) for other in boxes):
                break
            if (dx, dy) != _LABEL_OFFSETS[-1]:
                note.remove()
        placed.append(note)
        boxes.append(box)
    return placed


@_plain_text
def drift_scatter(a: np.ndarray, b: np.ndarray, labels: Optional[Sequence[str]] = None, numbered: int = 10) -> bytes:
    """Mean |attribution| per feature, baseline vs this run, with the identity line. The
    `numbered` features that changed most (by |b - a|) are drawn in red with a number placed so
    that numbers do not overlap, and listed by number beside the plot (name and relative change);
    the other features are grey, unlabelled (the report's table lists them)."""
    plt = _pyplot()
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    order = np.argsort(-np.abs(b - a), kind="stable")[: numbered if labels is not None else 0]  # most changed first
    figure, (axes, legend) = plt.subplots(1, 2, figsize=(7.8, 4.2), gridspec_kw={"width_ratios": [4.5, 3.3]})
    rest = np.setdiff1d(np.arange(len(a)), order)
    others = axes.scatter(a[rest], b[rest], s=10, color="#9aa7b4", label="other features")
    changed = axes.scatter(a[order], b[order], s=16, color="#b03a2e", label=f"the {len(order)} most changed (numbered)")
    top = max(float(np.max(a, initial=0)), float(np.max(b, initial=0))) * 1.08 or 1.0
    axes.plot([0, top], [0, top], color="#999999", linewidth=1)
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_xlabel("baseline run: mean |attribution|")
    axes.set_ylabel("this run: mean |attribution|")
    _place_labels(figure, axes, a[order], b[order], [str(i + 1) for i in range(len(order))], np.column_stack([a, b]))
    legend.axis("off")
    legend.legend(handles=[changed, others, *axes.lines], labels=[changed.get_label(), others.get_label(), "no change (y = x)"],
                  fontsize=7, loc="lower left", frameon=False)
    lines = []
    for i, j in enumerate(order):
        change = f"{(b[j] - a[j]) / a[j]:+.1%}" if a[j] > 0 else "new"
        name = str(labels[j]) if len(str(labels[j])) <= 26 else str(labels[j])[:25] + "…"
        lines.append(f"{i + 1:>2}  {name:<26} {change:>8}")
    if lines:
        legend.text(0, 1, "most changed (|change| of mean |attribution|):\n" + "\n".join(lines), va="top", ha="left",
                    fontsize=7.5, family="monospace", transform=legend.transAxes)
    return _png(figure)


@_plain_text
def faithfulness_curves(fractions: Sequence[float], curves: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> bytes:
    """Mean explained score against the share of units replaced, per curve (deletion, insertion):
    the attribution order solid, a random order dashed."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 2.8), squeeze=False)
    for ax, (title, ours, chance) in zip(axes[0], curves):
        ax.plot(fractions, ours, color="#3b6ea8", label="attribution order")
        ax.plot(fractions, chance, color="#999999", linestyle="--", label="random order")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("share of units replaced")
        ax.set_ylabel("mean explained score")
        ax.legend(fontsize=7)
    return _png(figure)
