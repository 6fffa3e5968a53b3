#!/usr/bin/env python
"""The quality audit's readings on models whose behaviour is known (docs/quality.md):

    python bench/quality_readings.py

* digits: a small CNN trained on scikit-learn's digits (16 x 16, pipeline.demo), 256 images as PNG;
  integrated gradients from black (the default for images), from a blur, gradients and Grad-CAM;
* wine: bench/baselines.py's MLP (seed 1) on scikit-learn's wine data (inputs normalised inside the
  model), integrated gradients from the sample's median (the default) and from zeros.

Prints one table row per case (median randomisation and input-dominance Spearman, deletion and
insertion gaps, infidelity share, sensitivity-max, baseline sensitivity, seconds, flags) and writes
bench/results/quality_readings.json and .md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from throughput import REPO, save_results  # noqa: E402

sys.path.insert(0, REPO)

from audit.quality_limits import headline  # noqa: E402

NUMBERS = ("randomisation", "input_dominance", "deletion_gap", "insertion_gap", "infidelity", "sensitivity", "baseline_sensitivity")


def _digits(workdir: str) -> tuple[str, str, dict]:
    from pipeline.demo import digits_uint8, encode_png, train_digits_cnn, write_image_tfrecord

    images, labels = digits_uint8(300)
    model = train_digits_cnn(os.path.join(workdir, "digits_cnn.keras"), images, labels)
    data = os.path.join(workdir, "digits.tfrecord")
    write_image_tfrecord(data, [encode_png(i) for i in images[:256]], ids=[f"d{i:03d}" for i in range(256)], labels=labels[:256])
    return str(model), data, {"images": {"image/encoded": {"size": [16, 16], "channels": 1, "preset": "unit"}}}


def _wine(workdir: str) -> tuple[str, str, dict]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_wine

    from baselines import train

    wine = load_wine()
    x = wine.data.astype(np.float32)
    model = os.path.join(workdir, "wine.keras")
    train(x, wine.target, 1, model)
    data = os.path.join(workdir, "wine.parquet")
    columns = [name.replace("/", "_") for name in wine.feature_names]
    pq.write_table(pa.table({"id": np.arange(len(x)), **{c: x[:, j] for j, c in enumerate(columns)}}), data)
    return model, data, {"key_column": "id"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="attribution-bench-quality-readings-")
    from pipeline.config import RunConfig
    from pipeline.plan import resolve_plan
    from pipeline.quality import audit_quality

    cases = []
    model, data, extra = _digits(workdir)
    for name, settings in (("digits IG, black baseline (default)", {}), ("digits IG, blur baseline", {"baseline": "blur"}),
                           ("digits gradient", {"method": "gradient"}), ("digits Grad-CAM", {"method": "grad_cam"})):
        cases.append((name, model, data, {**extra, **settings}))
    model, data, extra = _wine(workdir)
    for name, settings in (("wine IG, median baseline (default)", {}), ("wine IG, zeros baseline", {"baseline": "zeros"})):
        cases.append((name, model, data, {**extra, **settings}))

    results, lines = {}, ["| case | " + " | ".join(NUMBERS) + " | seconds | flags |", "|---" * (len(NUMBERS) + 3) + "|"]
    for name, model, data, settings in cases:
        config = RunConfig.from_mapping({"model": model, "input": data, "output": os.path.join(workdir, "out"), **settings})
        quality = audit_quality(resolve_plan(config))
        values = {n: headline(quality, n) for n in NUMBERS}
        results[name] = {"values": values, "rows": quality["rows"], "seconds": quality["seconds"], "flags": quality["flags"]}
        shown = " | ".join("n/a" if v is None else f"{v:.2f}" for v in values.values())
        flags = "; ".join(f.split(":")[0] for f in quality["flags"]) or "none"
        lines.append(f"| {name} ({quality['rows']} rows) | {shown} | {quality['seconds']:.1f} | {flags} |")
        print(lines[-1], flush=True)
    save_results(args.results, "quality_readings", results, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
