#!/usr/bin/env python
"""What the in-pass summaries cost: pipeline throughput with and without them, same run.

    python bench/summaries.py            # 3 interleaved rounds (~6 min on 2 cores)
    python bench/summaries.py --quick    # 1 round, smaller inputs (~1.5 min)

Uses bench/throughput.py's models and data (MLP on 64 digit pixels; CNN on 28x28 digits; gradient
method; the pipeline's default settings otherwise) and its steady-state measure: (N2 - N1) / (T2 - T1) between
a small and a large run, from each run's own pipeline wall time. The summaries' per-element maps
are 64 (MLP) and 784 (CNN) elements wide, in 11 groups (overall + 10 classes).
Prints medians (min-max) and the ratio with / without; and, less exposed to this host's drifting
speed, the summaries' share of the run's CPU per record: the extra summaries_cpu_micro_secs (the
summaries thread's CPU, a pipeline metric) over the extra process CPU (user + sys) from the small
to the large run. Writes bench/results/summaries.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from throughput import (  # noqa: E402
    REPO, build_models, dataset, pipeline_run, save_results, summarize, write_parquet,
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    sizes = {"mlp": (100_000, 1_000_000), "cnn": (2_048, 10_240)}
    if args.quick:
        sizes = {"mlp": (10_000, 100_000), "cnn": (1_024, 3_072)}
    workdir = tempfile.mkdtemp(prefix="attribution-bench-summaries-")
    models = build_models(workdir)
    files = {}
    for kind, counts in sizes.items():
        for n in counts:
            files[(kind, n)] = os.path.join(workdir, f"{kind}-{n}.parquet")
            write_parquet(files[(kind, n)], dataset(kind, n))
    samples: dict[str, list[float]] = {}
    out = os.path.join(workdir, "out")
    for r in range(rounds):
        for kind, (small, large) in sizes.items():
            for label, flag in (("with", "--summaries"), ("without", "--no-summaries")):
                runs = {n: pipeline_run(models[kind], files[(kind, n)], out, [flag]) for n in (small, large)}
                seconds = {n: run["pipeline_seconds"] for n, run in runs.items()}
                samples.setdefault(f"{kind}_{label}_summaries", []).append((large - small) / (seconds[large] - seconds[small]))
                if label == "with":  # the summaries thread's CPU per record as a share of the process's
                    extra = {key: runs[large][key] - runs[small][key] for key in ("summaries_cpu_seconds", "cpu_seconds")}
                    samples.setdefault(f"{kind}_summaries_cpu_share", []).append(extra["summaries_cpu_seconds"] / extra["cpu_seconds"])
        print(f"round {r + 1}/{rounds} done", flush=True)

    figures = {name: summarize(values) for name, values in samples.items()}
    lines = ["| figure | median | min | max | unit |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {f['median']:,.0f} | {f['min']:,.0f} | {f['max']:,.0f} | records/s |" for n, f in sorted(figures.items()) if "share" not in n]
    lines += [f"| {n} | {f['median']:.3f} | {f['min']:.3f} | {f['max']:.3f} | CPU s / CPU s |" for n, f in sorted(figures.items()) if "share" in n]
    lines += ["", "| ratio | value |", "|---|---|"]
    ratios = {kind: figures[f"{kind}_with_summaries"]["median"] / figures[f"{kind}_without_summaries"]["median"] for kind in sizes}
    lines += [f"| {kind.upper()} throughput with / without summaries | {value:.3f} |" for kind, value in ratios.items()]
    lines += [f"| {kind.upper()} summaries' share of the run's CPU per record | {figures[f'{kind}_summaries_cpu_share']['median']:.3f} |" for kind in sizes]
    document = {"rounds": rounds, "sizes": sizes, "figures": figures, "ratios": ratios}
    save_results(args.results, "summaries-quick" if args.quick else "summaries", document, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
