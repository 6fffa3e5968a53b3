#!/usr/bin/env python
"""How soon a heavy job shows records done, and what the reader's batch ramp costs a cheap one
(issue 26 item 5).

    python bench/first_progress.py               # 2 interleaved rounds
    python bench/first_progress.py --rounds 1

The reader's first batches are 16, 128, 1,024 records, growing eightfold up to --batch-size
(transforms.read.BatchRamp). Two sides, in this process (DirectRunner, the launcher's own
counter polled every 50 ms, as the progress line reads it):

* ramp: as shipped (FIRST_BATCH_RECORDS = 16);
* one_batch: without the ramp (FIRST_BATCH_RECORDS = the batch size: the behaviour before).

Jobs: heavy = 310 upsampled digits (28x28x1) through bench/throughput.py's CNN with integrated
gradients (64 points, the default); cheap = bench/default_job.py's default job on 200k rows (MLP).
Reports seconds from the call to the first record done, and the whole run; writes
bench/results/first_progress.json and .md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

from default_job import build_model, write_data  # noqa: E402
from throughput import REPO, build_models, dataset, save_results, summarize, write_parquet  # noqa: E402

sys.path.insert(0, REPO)


def timed_run(model: str, data: str, output: str, extra: dict) -> tuple[float, float]:
    """(seconds to the first record done, seconds in all) of one in-process run."""
    from pipeline.config import RunConfig
    from pipeline.run import run_attribution
    from transforms import progress

    shutil.rmtree(output, ignore_errors=True)
    before = progress.records_done()
    first = []
    stop = threading.Event()
    start = time.perf_counter()

    def watch():
        while not stop.wait(0.05):
            if progress.records_done() > before:
                first.append(time.perf_counter() - start)
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    manifest = run_attribution(RunConfig(model=model, input=(data,), output=output, quality_rows=0, **extra))
    total = time.perf_counter() - start
    stop.set()
    watcher.join()
    assert manifest["status"] == "complete", manifest["status"]
    return (first[0] if first else total), total


def main(argv=None) -> int:
    import transforms.read as read

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="attribution-bench-progress-")
    cnn = build_models(workdir, ("cnn",))["cnn"]
    images = os.path.join(workdir, "images.parquet")
    write_parquet(images, dataset("cnn", 310))
    mlp = os.path.join(workdir, "mlp20.keras")
    build_model(mlp)
    rows = os.path.join(workdir, "rows.parquet")
    write_data(rows, 200_000)
    jobs = {"heavy": (cnn, images, {"inputs": {"pixels": "pixels"}}), "cheap": (mlp, rows, {})}
    sides = {"ramp": read.FIRST_BATCH_RECORDS, "one_batch": 1 << 30}
    samples: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for job, (model, data, extra) in jobs.items():
            for side in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                read.FIRST_BATCH_RECORDS = sides[side]
                first, total = timed_run(model, data, os.path.join(workdir, f"out-{job}-{side}"), extra)
                samples.setdefault(f"{job}_{side}_first_done_s", []).append(first)
                samples.setdefault(f"{job}_{side}_total_s", []).append(total)
                print(f"round {r + 1} {job} {side}: first record done {first:.2f} s, all {total:.2f} s", flush=True)
    figures = {name: summarize(values) for name, values in samples.items()}
    lines = ["| figure | median | min | max |", "|---|---|---|---|"]
    lines += [f"| {name} | {f['median']:.2f} s | {f['min']:.2f} | {f['max']:.2f} |" for name, f in sorted(figures.items())]
    ratio = figures["cheap_ramp_total_s"]["median"] / figures["cheap_one_batch_total_s"]["median"]
    lines += ["", f"cheap job, ramp / one_batch wall: {ratio:.3f}"]
    save_results(args.results, "first_progress", {"rounds": args.rounds, "figures": figures, "cheap_ratio": ratio}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
