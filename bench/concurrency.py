#!/usr/bin/env python
"""Gradient calls side by side (attributions.concurrency) against one call at a time.

    python bench/concurrency.py              # 3 interleaved rounds
    python bench/concurrency.py --rounds 1

Each figure is measured in a fresh process, since TensorFlow's intra-op threading is set once per
process:

* ``threads 1``: one call at a time on TensorFlow's own thread pools (its default threading);
* ``threads N``: N calls at once (N = the cores this process may use), each op single-threaded:
  what the pipeline does on local runners.

Workloads, on models trained on real data (scikit-learn's digits):
* ``ig_mlp20``: integrated gradients (64 Gauss-Legendre points) of the default-job bench's Dense
  20-32-16-3 MLP (bench/default_job.py), 4,096-row batches, chunks of 1,024 rows x 64 points;
* ``gradient_mlp``: the plain gradient of the throughput bench's 64-256-256-10 MLP, 4,096-row batches;
* ``gradient_cnn``: the plain gradient of its small CNN (28x28x1), 256-row batches.

Reports rows/s per workload and setting (median of rounds) and the speed-up threads N / threads 1,
plus the largest difference between the two settings' attributions (same chunks, so expected 0 or
float32 rounding). Writes bench/results/concurrency.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, BENCH)
sys.path.insert(0, REPO)

WORKLOADS = ("ig_mlp20", "gradient_mlp", "gradient_cnn")


def measure(workload: str, threads: int, workdir: str, seconds: float) -> dict:
    """In this (fresh) process: rows/s of `workload` with `threads` calls at once, and a checksum
    array saved to workdir for the agreement check."""
    import numpy as np

    from attributions.concurrency import run_ops_single_threaded

    if threads > 1:
        run_ops_single_threaded()
    from attributions.gradient import gradient
    from attributions.integrated_gradients import integrated_gradients
    from attributions.loading import load_model

    paths = models(workdir)
    if workload == "ig_mlp20":
        import default_job

        x, _ = default_job.real_rows()
        data = x[np.arange(4096) % len(x)]
        fns = load_model(paths["mlp20"], False, None).model_functions(None, False, threads)
        zeros = np.zeros(20, np.float32)

        def run():
            return integrated_gradients(fns, [data], [zeros], np.zeros(len(data), np.int32), 64, chunk_size=65536).attributions[0]
    else:
        import throughput

        kind = "mlp" if workload == "gradient_mlp" else "cnn"
        shape, rows = ((64,), 4096) if kind == "mlp" else ((28, 28, 1), 256)
        data = throughput.dataset(kind, rows).reshape(-1, *shape)
        fns = load_model(paths[kind], False, None).model_functions(None, False, threads)
        chunk = 65536 if kind == "mlp" else 1024

        def run():
            return gradient(fns, [data], np.full(len(data), -1, np.int32), chunk).attributions[0]

    result = run()  # warm: traces
    np.save(os.path.join(workdir, f"{workload}-{threads}.npy"), result)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    return {"rows_per_second": count * len(data) / (time.perf_counter() - start)}


def models(workdir: str) -> dict[str, str]:
    paths = {name: os.path.join(workdir, f"{name}.keras") for name in ("mlp20", "mlp", "cnn")}
    if not all(os.path.exists(p) for p in paths.values()):
        import default_job
        import throughput

        default_job.build_model(paths["mlp20"])
        throughput.build_models(workdir, ("mlp", "cnn"))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per figure")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="attribution-bench-concurrency-")
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), workdir, args.seconds)))
        return 0

    import numpy as np

    from attributions.concurrency import available_cores
    from throughput import save_results, summarize

    models(workdir)
    cores = available_cores()
    samples: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for workload in WORKLOADS:
            for threads in ((1, cores) if r % 2 == 0 else (cores, 1)):
                command = [sys.executable, __file__, "--workdir", workdir, "--seconds", str(args.seconds),
                           "--one", workload, str(threads)]
                out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                rate = json.loads(out.strip().splitlines()[-1])["rows_per_second"]
                samples.setdefault(f"{workload}_threads_{threads}", []).append(rate)
                print(f"round {r + 1} {workload} threads {threads}: {rate:,.0f} rows/s", flush=True)

    figures = {name: summarize(values) for name, values in samples.items()}
    lines = [f"cores: {cores}", "", "| workload | threads 1 rows/s | threads N rows/s | speed-up | max abs difference |",
             "|---|---|---|---|---|"]
    speedups, differences = {}, {}
    for workload in WORKLOADS:
        one, many = figures[f"{workload}_threads_1"]["median"], figures[f"{workload}_threads_{cores}"]["median"]
        speedups[workload] = many / one
        a = np.load(os.path.join(workdir, f"{workload}-1.npy"))
        b = np.load(os.path.join(workdir, f"{workload}-{cores}.npy"))
        differences[workload] = float(np.abs(a - b).max())
        lines.append(f"| {workload} | {one:,.0f} | {many:,.0f} | {speedups[workload]:.2f} | {differences[workload]:.1e} |")
    document = {"cores": cores, "rounds": args.rounds, "figures": figures, "speedups": speedups,
                "max_abs_difference": differences}
    save_results(args.results, "concurrency", document, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
