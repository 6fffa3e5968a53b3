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
    "prediction_histogram", "drift_scatter",
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
def importance_bars(names: Sequence[str], values: np.ndarray, title: str) -> bytes:
    """Horizontal bars, largest on top. values (n,) mean |attribution|."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 0.28 * len(names) + 1.0))
    positions = np.arange(len(names))[::-1]
    axes.barh(positions, values, color="#3b6ea8")
    axes.set_yticks(positions, labels=list(names), fontsize=8)
    axes.set_xlabel("mean |attribution|")
    axes.set_title(title, fontsize=10)
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
    """Mean |attribution| maps, one panel each; maps: flat (prod(shape),) arrays."""
    plt = _pyplot()
    columns = min(len(maps), 6)
    rows = int(np.ceil(len(maps) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.7 * rows + 0.4), squeeze=False)
    for panel, (values, caption) in enumerate(zip(maps, titles)):
        image = _as_image(values, shape)
        if image.ndim == 3:
            image = np.abs(image).sum(axis=-1)
        ax = axes[panel // columns][panel % columns]
        ax.imshow(image, cmap="magma")
        ax.set_title(caption, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    figure.suptitle(title, fontsize=10)
    return _png(figure)


@_plain_text
def exemplar_grid(rows: Sequence[tuple[str, list]], shape: Sequence[int]) -> bytes:
    """rows: (criterion, [(caption, inputs (n,), attributions (n,)), ...]); each panel shows the
    input in grey with the attribution overlaid (red positive, blue negative, per-panel scale)."""
    plt = _pyplot()
    columns = max(len(items) for _, items in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.5 * columns, 1.75 * len(rows)), squeeze=False)
    for r, (criterion, items) in enumerate(rows):
        for c, (caption, inputs, attributions) in enumerate(items):
            ax = axes[r][c]
            image, attribution = _as_image(inputs, shape), _as_image(attributions, shape)
            if image.ndim == 3:
                span = np.ptp(image) or 1.0
                ax.imshow((image - image.min()) / span)
                attribution = attribution.sum(axis=-1)
            else:
                ax.imshow(image, cmap="gray_r")
            limit = np.abs(attribution).max() or 1.0
            ax.imshow(attribution, cmap="bwr", vmin=-limit, vmax=limit, alpha=0.55)
            ax.set_title(caption, fontsize=7)
        axes[r][0].text(-0.15, 0.5, criterion.replace("_", " "), transform=axes[r][0].transAxes, rotation=90,
                        va="center", ha="right", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
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
    axes.set_xlabel(f"relative completeness error |Σ attr − ΔF| / |ΔF| (red: ≥ {threshold:g})")
    return _png(figure)


def _number(edge) -> float:
    return float("inf") if edge == "inf" else float(edge)


def _edge(edge) -> str:
    return "∞" if edge == "inf" else f"{float(edge):g}"


@_plain_text
def prediction_histogram(edges: Sequence[float], counts: Sequence[int], class_shares: dict[str, float]) -> bytes:
    """The explained score's histogram (from the summary's sample) beside the class shares."""
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 2.8), gridspec_kw={"width_ratios": [3, 2]})
    if len(counts):
        left.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#3b6ea8")
    left.set_xlabel("explained score F(x)[target]")
    left.set_ylabel("rows (sample)")
    classes = sorted(class_shares, key=lambda c: (len(c), c))
    right.bar(classes, [class_shares[c] for c in classes], color="#6a9f58")
    right.set_xlabel("explained class")
    right.set_ylabel("share of rows")
    return _png(figure)


@_plain_text
def drift_scatter(a: np.ndarray, b: np.ndarray, labels: Optional[Sequence[str]] = None) -> bytes:
    """Mean |attribution| per feature, baseline vs this run, with the identity line."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(4.5, 4.2))
    axes.scatter(a, b, s=12, color="#3b6ea8")
    top = max(float(np.max(a, initial=0)), float(np.max(b, initial=0))) * 1.05 or 1.0
    axes.plot([0, top], [0, top], color="#999999", linewidth=1)
    axes.set_xlim(0, top)
    axes.set_ylim(0, top)
    axes.set_xlabel("baseline run: mean |attribution|")
    axes.set_ylabel("this run: mean |attribution|")
    if labels is not None:
        for x, y, text in list(zip(a, b, labels))[:8]:
            axes.annotate(text, (x, y), fontsize=6)
    return _png(figure)
