#!/usr/bin/env python
"""What the quality audit and the median baseline cost the default job (issue 25: the audit at its
default sample must cost <= 10 % of the default IG job's wall time at 200k rows).

    python bench/quality_cost.py                 # 200k rows, 3 interleaved rounds
    python bench/quality_cost.py --sizes 20000 --rounds 1

The job and data are bench/default_job.py's (a 20-32-16-3 MLP trained on scikit-learn's digits,
rows resampled to the size). Three sides, each a whole process (launch to exit, wall clock):

* default: `python -m pipeline run --model M --input D --output O`, no flags: the median baseline
  from a 1,024-row sample and the quality audit on 256 rows;
* no_audit: the same with `--quality-rows 0`;
* no_audit_zeros: also `--baseline zeros` (no launcher sample for the baseline either).

Reports the median walls, the audit's cost (default / no_audit - 1; the target is <= 0.10), the
sampled baseline's (no_audit / no_audit_zeros - 1), and the audit's own seconds as the manifest
records them (`quality.seconds`). Writes bench/results/quality_cost.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from default_job import build_model, pipeline_command, write_data  # noqa: E402
from throughput import REPO, save_results, summarize, timed  # noqa: E402

SIDES = {
    "default": [],
    "no_audit": ["--quality-rows", "0"],
    "no_audit_zeros": ["--quality-rows", "0", "--baseline", "zeros"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000], help="row counts (default 200000)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="attribution-bench-quality-")
    os.makedirs(workdir, exist_ok=True)
    model = os.path.join(workdir, "mlp20.keras")
    build_model(model)
    data = {n: os.path.join(workdir, f"rows-{n}.parquet") for n in args.sizes}
    for n, path in data.items():
        write_data(path, n)
    print(f"workdir {workdir}; sizes {args.sizes}; rounds {args.rounds}", flush=True)

    samples: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for n in args.sizes:
            order = list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]  # neither side always first
            for side in order:
                target = os.path.join(workdir, f"out-{side}-{n}")
                shutil.rmtree(target, ignore_errors=True)
                run = timed(pipeline_command(model, data[n], target) + SIDES[side])
                samples.setdefault(f"{side}_wall_{n}", []).append(run["wall_seconds"])
                if side == "default":
                    with open(os.path.join(target, "manifest.json")) as handle:
                        quality = json.load(handle)["quality"]
                    samples.setdefault(f"audit_seconds_{n}", []).append(quality["seconds"])
                print(f"round {r + 1} {n:,} rows {side}: {run['wall_seconds']:.1f} s", flush=True)

    figures = {name: summarize(values) for name, values in samples.items()}
    lines = ["| figure | median | min | max | unit |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {f['median']:,.2f} | {f['min']:,.2f} | {f['max']:,.2f} | s |" for name, f in sorted(figures.items())]
    lines += ["", "| rows | audit: default / no_audit - 1 (target <= 0.10) | per round | sampled baseline: no_audit / no_audit_zeros - 1 |",
              "|---|---|---|---|"]
    costs = {}
    for n in args.sizes:
        wall = {side: figures[f"{side}_wall_{n}"]["median"] for side in SIDES}
        per_round = [d / a - 1 for d, a in zip(samples[f"default_wall_{n}"], samples[f"no_audit_wall_{n}"])]
        costs[str(n)] = {"audit": wall["default"] / wall["no_audit"] - 1, "audit_per_round": per_round,
                         "baseline_sample": wall["no_audit"] / wall["no_audit_zeros"] - 1}
        lines.append(f"| {n:,} | {costs[str(n)]['audit']:+.3f} | {', '.join(f'{c:+.3f}' for c in per_round)} "
                     f"| {costs[str(n)]['baseline_sample']:+.3f} |")
    save_results(args.results, "quality_cost", {"rounds": args.rounds, "sizes": args.sizes, "figures": figures, "costs": costs}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
