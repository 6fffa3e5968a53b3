#!/usr/bin/env python
"""What the summaries' Poisson bootstrap costs the default job (issue 27: <= 5 % of the default IG
job's wall time at its default number of replicates).

    python bench/bootstrap_cost.py                 # 200k rows, 3 interleaved rounds
    python bench/bootstrap_cost.py --sizes 20000 --rounds 1

The job and data are bench/default_job.py's (a 20-32-16-3 MLP trained on scikit-learn's digits,
rows resampled to the size). Two sides, each a whole process (launch to exit, wall clock):

* default: `python -m pipeline run --model M --input D --output O --quality-rows 0` (64 replicates);
* no_bootstrap: the same with `--bootstrap-replicates 0`.

Both leave the quality audit out (its own cost is bench/quality_cost.py's). Reports the median
walls, the bootstrap's cost (default / no_bootstrap - 1) and the summaries thread's CPU seconds
(the summaries_cpu_micro_secs metric) on each side. Writes bench/results/bootstrap_cost.json and .md.
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

SIDES = {"default": ["--quality-rows", "0"], "no_bootstrap": ["--quality-rows", "0", "--bootstrap-replicates", "0"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000], help="row counts (default 200000)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="attribution-bench-bootstrap-")
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
            for side in (list(SIDES) if r % 2 == 0 else list(SIDES)[::-1]):  # neither side always first
                target = os.path.join(workdir, f"out-{side}-{n}")
                shutil.rmtree(target, ignore_errors=True)
                run = timed(pipeline_command(model, data[n], target) + SIDES[side])
                with open(os.path.join(target, "manifest.json")) as handle:
                    metrics = json.load(handle)["metrics"]
                samples.setdefault(f"{side}_wall_{n}", []).append(run["wall_seconds"])
                samples.setdefault(f"{side}_summaries_cpu_{n}", []).append(metrics.get("attribution/summaries_cpu_micro_secs", 0) / 1e6)
                print(f"round {r + 1} {n:,} rows {side}: {run['wall_seconds']:.2f} s", flush=True)

    figures = {name: summarize(values) for name, values in samples.items()}
    lines = ["| figure | median | min | max | unit |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {f['median']:,.3f} | {f['min']:,.3f} | {f['max']:,.3f} | s |" for name, f in sorted(figures.items())]
    lines += ["", "| rows | bootstrap: default / no_bootstrap - 1 (target <= 0.05) | per round |", "|---|---|---|"]
    costs = {}
    for n in args.sizes:
        per_round = [d / a - 1 for d, a in zip(samples[f"default_wall_{n}"], samples[f"no_bootstrap_wall_{n}"])]
        costs[str(n)] = {"bootstrap": figures[f"default_wall_{n}"]["median"] / figures[f"no_bootstrap_wall_{n}"]["median"] - 1,
                         "per_round": per_round}
        lines.append(f"| {n:,} | {costs[str(n)]['bootstrap']:+.3f} | {', '.join(f'{c:+.3f}' for c in per_round)} |")
    save_results(args.results, "bootstrap_cost", {"rounds": args.rounds, "sizes": args.sizes, "figures": figures, "costs": costs}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
