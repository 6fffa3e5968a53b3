"""What the quality audit's numbers (summary.json `quality`, pipeline.quality) say, in words: the
report's paragraphs and the comparison of two runs' audits. No Beam, no TensorFlow."""

from __future__ import annotations

from typing import Any, Optional

from audit.quality_limits import headline as _headline

__all__ = ["quality_paragraphs", "quality_table", "compare_quality", "QUALITY_HEADLINES"]

# (limit name as audit.quality_limits names it, title, path in `quality`)
QUALITY_HEADLINES = (
    ("randomisation", "Model randomisation (Spearman, trained vs shuffled weights)", ("randomisation", "spearman")),
    ("input_dominance", "Input dominance (Spearman with |x - reference|)", ("input_dominance", "spearman")),
    ("deletion_gap", "Deletion gap (share of |F(x) - F(reference)|)", ("deletion",)),
    ("insertion_gap", "Insertion gap (share of |F(x) - F(reference)|)", ("insertion",)),
    ("infidelity", "Infidelity (share of the perturbations' effect unexplained)", ("infidelity", "share")),
    ("sensitivity", "Sensitivity-max (relative change of the attributions)", ("sensitivity_max",)),
    ("baseline_sensitivity", "Baseline sensitivity (Spearman of mean |attr| under two baselines)", ("baseline_sensitivity",)),
)


def _get(quality: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = quality
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def quality_table(quality: dict[str, Any]) -> list[list[Any]]:
    """Rows (number, value, quartiles, rows, limit) for the report's table."""
    rows = []
    limits = quality.get("limits") or {}
    for name, title, path in QUALITY_HEADLINES:
        section = _get(quality, path)
        value = _headline(quality, name)
        if value is None and isinstance(section, dict) and section.get("not_applicable"):
            shown, spread = "n/a", section["not_applicable"]
        else:
            shown = value if value is not None else "undefined"
            spread = ""  # the gaps are totals over rows: no per-row quartiles in their units
            if isinstance(section, dict) and section.get("q25") is not None:
                spread = f"{section['q25']:.3g} .. {section['q75']:.3g} (per row)"
        limit = limits.get(name)
        rows.append([title, shown, spread, f"{limit['limit']}: {'passed' if limit['passed'] else 'FAILED'}" if limit else ""])
    return rows


def quality_paragraphs(quality: dict[str, Any]) -> list[str]:
    """One plain-text paragraph per number: what it measures, the value, how to read it."""
    rows = quality.get("rows", 0)
    v = {name: _headline(quality, name) for name, _, _ in QUALITY_HEADLINES}
    reference = quality.get("reference", "the reference")
    paragraphs = []
    if v["randomisation"] is not None:
        paragraphs.append(
            f"Model randomisation: each audited row's |attribution| under the trained model has a median Spearman correlation of "
            f"{v['randomisation']:.2f} with the same row's under the same model with every weight tensor's values shuffled "
            f"(Adebayo et al. 2018). Near 0, the map depends on what the model learned; near 1, an untrained model would give "
            f"much the same map, so it shows the input or the method rather than the model"
            + (" - as here." if v["randomisation"] > 0.5 else "."))
    if v["input_dominance"] is not None:
        paragraphs.append(
            f"Input dominance: |attribution| follows |x - reference| ({reference}) with a median Spearman of "
            f"{v['input_dominance']:.2f}. Near 1, the map mostly repeats how far each value lies from the reference (integrated "
            f"gradients from a black image paints the bright pixels); a map that is also high under randomisation says little "
            f"about the model.")
    for name, title, action in (("deletion_gap", "Deletion", "Replacing the units ranked first by the reference lowers"),
                                ("insertion_gap", "Insertion", "Restoring the units ranked first from the reference raises")):
        if v[name] is not None:
            paragraphs.append(
                f"{title}: {action} the explained score faster than a random order by "
                f"{v[name]:.1%} of |F(x) - F(reference)| (the area between the two curves, summed over rows). Above 0, the ranking "
                f"finds what the model uses; at or below 0, it is no better than chance.")
    if v["infidelity"] is not None:
        paragraphs.append(
            f"Infidelity (Yeh et al. 2019; captum.metrics.infidelity, normalize=True): for small Gaussian perturbations I, how "
            f"well I . attribution (at its best scale) predicts the score's change F(x) - F(x - I). A median of {v['infidelity']:.2f} "
            f"of that change is left unexplained: 0 means the attributions predict the model's local response, 1 not at all "
            f"(path methods explain the whole path from the reference, not the neighbourhood, so expect more than for gradients).")
    if v["sensitivity"] is not None:
        paragraphs.append(
            f"Sensitivity-max (Yeh et al. 2019; captum.metrics.sensitivity_max): the largest relative change of a row's "
            f"attributions over small uniform perturbations of its input has a median of {v['sensitivity']:.3g}. Small means "
            f"stable explanations; above about 0.2, a change too small to matter to a reader redraws the map.")
    if v["baseline_sensitivity"] is not None:
        other = (quality.get("baseline_sensitivity") or {}).get("other", "another baseline")
        paragraphs.append(
            f"Baseline sensitivity: the mean |attribution| per unit under the run's baseline and under {other} rank the units with "
            f"a Spearman of {v['baseline_sensitivity']:.2f}. Near 1, the ranking does not hinge on the baseline; low or negative, "
            f"the choice of baseline decides it (docs/baselines.md).")
    paragraphs.append(
        f"Audited: {rows} rows sampled from the input, seed {quality.get('seed')}, units: "
        f"{', '.join(f'{k} {t}' for k, t in (quality.get('units') or {}).items())}.")
    return paragraphs


def compare_quality(a: Optional[dict[str, Any]], b: Optional[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per headline number both audits have: {name, a, b, change}; [] when either run has none."""
    if not a or not b:
        return []
    changes = []
    for name, _, _ in QUALITY_HEADLINES:
        value_a, value_b = _headline(a, name), _headline(b, name)
        if value_a is None and value_b is None:
            continue
        change = value_b - value_a if value_a is not None and value_b is not None else None
        changes.append({"name": name, "a": value_a, "b": value_b, "change": change})
    return changes
