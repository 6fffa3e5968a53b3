"""The quality audit, run on the launcher before the pipeline: rows of the input sampled as the
baselines' are (pipeline.baseline_sample, the first `quality_rows`), explained with the run's own
method and settings, then put to tests of what the attributions depend on (attributions.quality):

  randomisation         Spearman of |attr| per row, trained model vs its weights shuffled
                        (Adebayo et al. 2018): high means the map does not depend on what was learned;
  input_dominance       Spearman of |attr| with |x - reference| per row: high means the map mostly
                        repeats the input's distance from the reference;
  deletion / insertion  the explained score as units ranked first are replaced by the reference /
                        restored from it, against a random order: the gap is the faithfulness;
  infidelity            captum.metrics.infidelity (normalize=True) under Gaussian perturbations;
  sensitivity_max       captum.metrics.sensitivity_max under uniform perturbations;
  baseline_sensitivity  integrated gradients only: Spearman of mean |attr| per unit under the run's
                        baseline and another one (zeros <-> median; zeros <-> blur for images).

The reference (what deletion puts in, what dominance measures from) is integrated gradients'
baseline, and for the other methods the sample's median for float inputs that are not images,
zeros for images, ids and text.
Every draw comes from quality_seed: the same rows and seed give the same numbers.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Optional

import numpy as np

from attributions.data_baselines import statistic_baseline
from attributions.quality.faithfulness import deletion_insertion
from attributions.quality.infidelity import infidelity
from attributions.quality.randomisation import shuffled_weights
from attributions.quality.ranks import spearman_rows
from attributions.quality.sensitivity import sensitivity_max
from attributions.quality.units import build_units
from pipeline.baseline_sample import sample_records
from pipeline.baselines import is_image
from pipeline.plan import RunPlan
from audit.quality_limits import breached_limits
from attributions.methods import BASELINE_METHODS, SAMPLING_METHODS
from transforms.attribute import AttributionEngine, AttributionSettings, example_seeds
from transforms.records import DecodedBatch

__all__ = ["audit_quality", "QualityAudit", "FLAG_RANDOMISATION", "FLAG_DOMINANCE"]

# Readings flagged in every run (the limits that fail a run are the user's: quality_limits).
FLAG_RANDOMISATION = 0.5  # median Spearman above this: the maps survive shuffling the weights
FLAG_DOMINANCE = 0.8  # median Spearman above this: the maps mostly repeat |x - reference|
_SALT = {"random_order": 1, "weights": 2, "infidelity": 3, "sensitivity": 4}
# Values (rows x values per row) put into one forward pass when the curve points or infidelity's
# perturbed copies are batched: fewer, larger calls (the same numbers), at most 16 MiB of float32
# inputs at once. For the bench's MLP: the curves 0.165 s in 68 calls, 0.02 s in 4.
_VALUES_PER_CALL = 4 * 2**20


def audit_quality(plan: RunPlan) -> Optional[dict[str, Any]]:
    """summary.json's `quality` for this plan (None when quality_rows is 0)."""
    config = plan.config
    if not config.quality_rows:
        return None
    started = time.perf_counter()
    records, files = sample_records(plan.input_files, plan.schema, config.quality_rows)
    if records is None:
        return {"rows": 0, "seed": config.quality_seed, "sample_files": list(files),
                "note": "no valid record among the sampled files: nothing to audit", "flags": [], "limits": {}}
    # TensorFlow's kernels: XLA would compile a program per call shape of the audit's many calls
    # (~0.2 s each for a small MLP), and it agrees with them within the run's bound where used.
    engine = AttributionEngine(dataclasses.replace(plan.settings, xla="off"))
    quality = QualityAudit(engine, records, plan).run()
    quality["sample_files"] = list(files)
    quality["limits"] = breached_limits(quality, config.quality_limits)
    quality["seconds"] = round(time.perf_counter() - started, 3)
    return quality


class QualityAudit:
    """The audit of one sample of records under one engine (see the module)."""

    def __init__(self, engine: AttributionEngine, records: DecodedBatch, plan: RunPlan):
        self.engine, self.records, self.plan = engine, records, plan
        self.config = plan.config
        self.settings: AttributionSettings = engine.settings
        self.seed = self.config.quality_seed
        self.inputs = engine.method_inputs(records.inputs)  # (N, *shape) per input the method attributes
        self.targets = self._targets()
        self.key_seeds = example_seeds(records.keys) if self.settings.method in SAMPLING_METHODS else None
        kinds = self._unit_kinds()
        shapes = [x.shape[1:] for x in self.inputs]
        self.rank_units = build_units(kinds, shapes)
        patch = [self.config.quality_patch or max(1, min(shape[:2]) // 8) for kind, shape in zip(kinds, shapes) if kind == "pixels"]
        self.delete_units = build_units(["patches" if k == "pixels" else k for k in kinds], shapes, patch[0] if patch else None)
        self.patch = patch[0] if patch else None
        self.reference, self.reference_name = self._reference()
        # The value scale of each input's perturbations: its std over the sample, per value.
        self.scales = tuple(x.astype(np.float64).std(axis=0) for x in self.inputs)
        values = len(self.targets) * sum(int(np.prod(shape)) for shape in shapes)
        self.copies_per_call = max(1, _VALUES_PER_CALL // max(1, values))  # copies of the sample per call

    def run(self) -> dict[str, Any]:
        attributions = self.explain(self.inputs)
        magnitudes = self.rank_units.totals([np.abs(a) for a in attributions])  # (N, U)
        zero_rows = int((magnitudes.sum(axis=1) == 0).sum())
        quality: dict[str, Any] = {
            "rows": len(self.targets), "seed": self.seed, "method": self.settings.method,
            "units": self._describe_units(), "reference": self.reference_name,
            "zero_attribution_rows": zero_rows,
        }
        quality["randomisation"] = self._randomisation(magnitudes)
        quality["input_dominance"] = {"spearman": _spread(spearman_rows(magnitudes, self._distances())),
                                      "distance": "|x - reference| (pixels, positions); in standard deviations (features)"}
        quality.update(self._faithfulness(attributions))
        quality["infidelity"] = self._infidelity(attributions)
        quality["sensitivity_max"] = self._sensitivity(attributions)
        quality["baseline_sensitivity"] = self._baseline_sensitivity(magnitudes)
        quality["flags"] = flags(quality)
        return quality

    # -- the method, fixed targets --------------------------------------------------------------

    def explain(self, inputs: tuple, baselines: Optional[tuple] = None) -> tuple:
        return self.engine.explain(inputs, self.targets, self.key_seeds, baselines).attributions

    def score(self, inputs: tuple) -> np.ndarray:
        """(N,) for N = k x the sample's rows (k copies, copy-major)."""
        return self.engine.scores(inputs, np.tile(self.targets, len(inputs[0]) // len(self.targets)))

    def _targets(self) -> np.ndarray:
        """int32 (N,): the label, the fixed index, or the predicted class (top_k: the first)."""
        target, count = self.settings.target, self.records.num_records
        if target.mode == "label":
            return np.asarray(self.records.labels, np.int32)
        if target.mode == "index":
            return np.full(count, target.index, np.int32)
        return np.argmax(self.engine.fns.predict(self.inputs, self.engine.chunk_size), axis=1).astype(np.int32)

    def _unit_kinds(self) -> list[str]:
        """Per method input: 'positions' for a layer's (positions, width) activations, 'pixels'
        for an image input, 'features' otherwise."""
        specs = self.settings.schema.model_inputs
        split = self.engine.split
        if split is None:
            return ["pixels" if is_image(s) else "features" for s in specs]
        names = [s.name for s in specs]
        activations = ["positions" if x.ndim > 2 else "features" for x in self.inputs[:len(split.layer_names)]]
        return activations + ["pixels" if is_image(specs[names.index(n)]) else "features" for n in split.kept_inputs]

    def _describe_units(self) -> dict[str, str]:
        described = {"features": "each value", "pixels": "pixels (channels summed)", "positions": "positions (width summed)"}
        text = {"ranked": ", ".join(sorted({described[k] for k in self.rank_units.kinds}))}
        if self.patch:
            text["deleted"] = f"patches of {self.patch} x {self.patch} pixels"
        return text

    def _reference(self) -> tuple[tuple, str]:
        """The run's baseline (integrated gradients, sampled Shapley, occlusion); for the other
        methods the sample's median for float inputs that are not images and zeros for the others
        (at layers, the layer baseline)."""
        if self.settings.method in BASELINE_METHODS:
            return self.engine.baselines(self.inputs), "the run's baseline"
        settings = self._median_settings(dataclasses.replace(self.settings, baseline="zeros", baseline_values=None, baseline_blur=None))
        named = "the sample's median (float inputs), zeros (images, ids, text)" if settings.baseline == "data" else "zeros"
        return self.engine.baselines(self.inputs, settings), named

    def _median_settings(self, settings: AttributionSettings) -> AttributionSettings:
        """`settings` with a data baseline: the sample's median for float inputs that are not
        images (scalar columns, lists, tensors), zeros for the others."""
        specs = self.settings.schema.model_inputs
        if not any(_float_features(s) for s in specs):
            return settings
        values = tuple(tuple(statistic_baseline(x, "median").reshape(-1).astype(float)) if _float_features(s) else (0.0,) * int(np.prod(s.shape))
                       for s, x in zip(specs, self.records.inputs))
        return dataclasses.replace(settings, baseline="data", baseline_values=values)

    def _rng(self, purpose: str, sample: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SALT[purpose], sample])

    def _distances(self) -> np.ndarray:
        """(N, U) each unit's |x - reference|: in the values' own units for pixels and positions
        (one scale for all), in standard deviations over the sample for features (each in its own
        unit: 5 kg and 5 km are not comparable; a value constant in the sample counts 0)."""
        distances = []
        for x, b, scale, kind in zip(self.inputs, self.reference, self.scales, self.rank_units.kinds):
            distance = np.abs(np.asarray(x, np.float64) - np.broadcast_to(b, x.shape))
            if kind == "features":
                distance = np.divide(distance, scale, out=np.zeros_like(distance), where=scale > 0)
            distances.append(distance)
        return self.rank_units.totals(distances)

    # -- the tests ------------------------------------------------------------------------------

    def _randomisation(self, magnitudes: np.ndarray) -> dict[str, Any]:
        weights = self.engine.weights()
        if not weights:
            return {"not_applicable": "the model has no trainable weights to shuffle"}
        with shuffled_weights(weights, int(self._rng("weights").integers(2**31))) as shuffled:
            inputs = self.engine.method_inputs(self.records.inputs)  # the lower part's weights are shuffled too
            randomised = self.rank_units.totals([np.abs(a) for a in self.explain(inputs)])
        return {"spearman": _spread(spearman_rows(magnitudes, randomised)), "weights_shuffled": shuffled,
                "scope": "whole model, each weight tensor's values permuted"}

    def _faithfulness(self, attributions: tuple) -> dict[str, Any]:
        curves = deletion_insertion(self.score, self.inputs, self.reference, self.delete_units.totals(attributions),
                                    self.delete_units, self.config.quality_steps, int(self._rng("random_order").integers(2**31)),
                                    self.copies_per_call)
        span = np.abs(curves.deletion[:, 0] - curves.deletion[:, -1])  # |F(x) - F(reference)| per row
        total = span.sum()
        result = {}
        for name, gap, ours, chance in (
            ("deletion", curves.deletion_gap(), curves.deletion, curves.deletion_random),
            ("insertion", curves.insertion_gap(), curves.insertion, curves.insertion_random),
        ):
            result[name] = {
                "gap": float(gap.sum() / total) if total > 0 else None,
                "gap_per_row": _spread(gap),
                "curve": np.round(ours.mean(axis=0), 6).tolist(),
                "random_curve": np.round(chance.mean(axis=0), 6).tolist(),
                "points": len(curves.fractions),
            }
        result["deletion"]["fractions"] = np.round(curves.fractions, 6).tolist()
        result["deletion"]["score_span"] = _spread(span)
        return result

    def _infidelity(self, attributions: tuple) -> dict[str, Any]:
        noise = self.config.quality_noise

        def perturbation(s: int) -> tuple:
            rng = self._rng("infidelity", s)
            return tuple(rng.standard_normal(x.shape) * (noise * scale) for x, scale in zip(self.inputs, self.scales))

        samples = self.config.quality_perturbations
        result = infidelity(self.score, self.inputs, attributions, perturbation, samples, self.copies_per_call)
        return {"share": _spread(result.share), "normalized": _spread(result.normalized), "unnormalized": _spread(result.infidelity),
                "perturbations": samples, "noise": f"Gaussian, std {noise:g} x each value's std over the sample"}

    def _sensitivity(self, attributions: tuple) -> dict[str, Any]:
        radius = self.config.quality_radius

        def perturbation(s: int) -> tuple:
            rng = self._rng("sensitivity", s)
            return tuple(rng.uniform(-1.0, 1.0, x.shape) * (radius * scale) for x, scale in zip(self.inputs, self.scales))

        samples = self.config.quality_perturbations
        values = sensitivity_max(self.explain, self.inputs, attributions, perturbation, samples)
        return {**_spread(values), "max": float(values.max()), "perturbations": samples,
                "radius": f"uniform, {radius:g} x each value's std over the sample"}

    def _baseline_sensitivity(self, magnitudes: np.ndarray) -> dict[str, Any]:
        if self.settings.method not in BASELINE_METHODS:
            return {"not_applicable": f"{self.settings.method} has no baseline"}
        if self.engine.split is not None and not self.engine.split.kept_inputs:
            return {"not_applicable": "attributions at layers start from the layer baseline (--layer-baseline), not the input baseline"}
        other, named = self._other_baseline()
        if other is None:
            return {"not_applicable": "no other baseline applies to these inputs"}
        alternative = self.rank_units.totals([np.abs(a) for a in self.explain(self.inputs, self.engine.baselines(self.inputs, other))])
        rho = spearman_rows(magnitudes.mean(axis=0, keepdims=True), alternative.mean(axis=0, keepdims=True))[0]
        return {"spearman": None if np.isnan(rho) else float(rho), "other": named,
                "rows_per_unit_agreeing": _spread(spearman_rows(magnitudes, alternative))}

    def _other_baseline(self) -> tuple[Optional[AttributionSettings], str]:
        """zeros when the run's baseline is anything else; for a zeros run, the median for tabular
        inputs and a blur for image inputs."""
        s = self.settings
        zeros = dataclasses.replace(s, baseline="zeros", baseline_values=None, baseline_blur=None)
        values = s.baseline_values or ()
        if s.baseline_blur or s.baseline in ("constant", "file") or (s.baseline == "data" and any(any(v) for v in values)):
            return zeros, "zeros"
        from attributions.blur import default_blur_sigma

        specs = s.schema.model_inputs
        blur = tuple(default_blur_sigma(*spec.shape[:2]) if is_image(spec) else None for spec in specs)
        other = self._median_settings(zeros)
        if any(sigma is not None for sigma in blur):
            other = dataclasses.replace(other, baseline_blur=blur)
        if other == zeros:
            return None, ""
        parts = (["the sample's median"] if other.baseline == "data" else []) + (["a blur"] if other.baseline_blur else [])
        return other, " and ".join(parts)


def _float_features(spec) -> bool:
    """A float input that is not an image: its median is a row of typical values."""
    return all(c.dtype == "float32" for c in spec.columns) and not is_image(spec)


def _spread(values: np.ndarray) -> dict[str, Any]:
    """median and quartiles of the finite values, and how many rows had none (NaN: undefined)."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    if not finite.size:
        return {"median": None, "q25": None, "q75": None, "rows": 0, "undefined_rows": int(values.size)}
    q25, median, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75), "rows": int(finite.size),
            "undefined_rows": int(values.size - finite.size)}


def flags(quality: dict[str, Any]) -> list[str]:
    """One line per reading a user should act on (the report and the launcher print them)."""
    found = []
    rows, zero = quality["rows"], quality.get("zero_attribution_rows", 0)
    if zero and zero * 2 >= rows:
        found.append(f"attributions are zero on {zero} of {rows} audited rows: the explained output does not change with the "
                     f"inputs there, so randomisation and input dominance mean nothing for them")
    rand = (quality.get("randomisation") or {}).get("spearman") or {}
    if rand.get("median") is not None and rand["median"] > FLAG_RANDOMISATION:
        found.append(f"model randomisation: attributions keep a median Spearman of {rand['median']:.2f} with those of the same model "
                     f"with its weights shuffled: they may not depend on what the model learned")
    elif rand and rand.get("median") is None:
        found.append("model randomisation is undefined on every audited row (constant attributions)")
    dominance = (quality.get("input_dominance") or {}).get("spearman") or {}
    if dominance.get("median") is not None and dominance["median"] > FLAG_DOMINANCE:
        found.append(f"input-dominated: |attribution| follows |input - reference| with a median Spearman of {dominance['median']:.2f}")
    gaps = [(quality.get(n) or {}).get("gap") for n in ("deletion", "insertion")]
    if all(g is not None and g <= 0 for g in gaps):
        found.append("faithfulness: deleting or inserting units in attribution order moves the score no faster than a random order")
    return found
