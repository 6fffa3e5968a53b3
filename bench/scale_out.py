#!/usr/bin/env python
"""Scale-out on Prism (issue 29): the default job's rows/s with 1 and with 2 SDK workers.

    python bench/scale_out.py                # 200k and 2M rows, 3 interleaved rounds (~15 min on 2 cores)
    python bench/scale_out.py --quick        # 20k and 200k rows, 1 round (smoke run)
    python bench/scale_out.py --smoke        # 4k rows, 1 round, 1_worker and 2_workers only (the test's mode)

Needs a Prism binary ($ATTRIBUTION_PRISM_BIN or the install step in docs/runners.md). The job is
bench/default_job.py's: `python -m pipeline run --model M --input D --output O` with its defaults
(integrated gradients, 64 Gauss-Legendre points, summaries and quality audit on), on its Dense
20-32-16-3 MLP trained on digits, each run a whole CLI process (launch to exit). Every run goes to
one `prism --job_port P` job server and one `worker_pool_main` SDK worker pool, started once for the
whole benchmark (bench/runners.py's ExternalServices; `--runner=PortableRunner
--environment_type=EXTERNAL`): the pool starts one SDK worker process per job it is asked for.

How there are 2 SDK workers. Prism 2.77 starts exactly one SDK worker per environment of a job
(prism/internal/execute.go: one `MakeWorker` per environment; a job's bundles, up to 8 at once, all
go to it) and reads no worker-count option: `--sdk_worker_parallelism=2` is accepted by Beam's
Python SDK and ignored (one worker process seen under the pool). A single job gets a second worker
only if some of its transforms run in a second environment (e.g. distinct resource hints: a toy
pipeline with two hinted branches got 3 workers), which would change the pipeline. So 2 workers here
are 2 jobs side by side on the same job server and pool, each on one half of the input: the input is
written as 2 Parquet files of N/2 rows, the 1-worker job reads both (a glob), and each of the 2
jobs reads one. While each run goes, the pool's child processes are sampled (/proc): the result
records how many SDK workers ran and the CPU seconds of each, and every job's rows written are
checked against its input rows.

Configurations (compute threads: gradient calls side by side in a worker, attributions/concurrency.py):
- `1_worker`: one job, one call per core (what the job chooses on a local runner; on
  PortableRunner it chooses 1, the worker's cores being unknown to the launcher);
- `1_worker_1thread`: one job, `--compute-threads 1` (PortableRunner's own default);
- `2_workers`: two jobs, one call per core in each (4 calls in flight on 2 cores);
- `2_workers_1thread`: two jobs, `--compute-threads 1` each (one call per core in all).

Per configuration and round: the wall (first launch to last exit) at each size, the whole-run rate
N / wall, and the steady-state rate (N2 - N1) / (T2 - T1) between the two sizes (the fixed cost --
imports, plan, quality audit, job submission, worker start -- cancels). Rounds are interleaved (each
round runs every configuration at every size, in an order rotated by round); medians with min-max;
ratios to `1_worker` of medians and per round. Results: bench/results/scale_out.json and .md
(scale_out-quick.*, scale_out-smoke.*).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import pyarrow.parquet as pq  # noqa: E402

from default_job import build_model, pipeline_command, write_data  # noqa: E402
from runners import ENV, ExternalServices, required_prism  # noqa: E402
from throughput import REPO, git_commit, save_results, summarize, utc_now  # noqa: E402

from attributions.concurrency import available_cores  # noqa: E402
from pipeline.processes import descendants, stop_session  # noqa: E402

CORES = available_cores()
# name -> (SDK workers = jobs side by side, compute threads per worker)
CONFIGS = {"1_worker": (1, CORES), "1_worker_1thread": (1, 1), "2_workers": (2, CORES), "2_workers_1thread": (2, 1)}
SMOKE_CONFIGS = ("1_worker", "2_workers")
RUN_TIMEOUT_SECONDS = 900
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_halves(workdir: str, n: int) -> list[str]:
    """bench/default_job.py's n rows, written as two Parquet files of n / 2 rows each (rows [0, n/2)
    and [n/2, n) of its one file), so that two jobs can each take one. Returns both paths."""
    whole = os.path.join(workdir, f"rows-{n}.parquet")
    write_data(whole, n)
    table = pq.read_table(whole)
    half = n // 2
    paths = []
    for i, (start, length) in enumerate(((0, half), (half, n - half))):
        paths.append(os.path.join(workdir, f"rows-{n}-part-{i}.parquet"))
        pq.write_table(table.slice(start, length), paths[-1])
    os.remove(whole)
    return paths


class WorkerSampler:
    """Samples the SDK worker processes under the pool every `interval` s while a run goes: which
    ran, and each one's CPU seconds (user + sys, from /proc; the last reading before it ended)."""

    def __init__(self, pool_pid: int, interval: float = 0.2):
        self._pool_pid, self._interval = pool_pid, interval
        self.cpu_seconds: dict[int, float] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "WorkerSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._done.is_set():
            for pid in descendants(self._pool_pid):
                try:
                    with open(f"/proc/{pid}/stat") as handle:
                        fields = handle.read().rsplit(")", 1)[1].split()
                except OSError:  # ended between the listing and the read
                    continue
                self.cpu_seconds[pid] = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime
            self._done.wait(self._interval)


def rows_in(paths: list[str]) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def run_jobs(model: str, parts: list[str], workers: int, threads: int, services: ExternalServices, out: str) -> dict:
    """`workers` CLI runs side by side, job i on parts[i::workers]; the wall from the first launch
    to the last exit, each job's counts, and the SDK workers the pool ran meanwhile."""
    jobs = []
    for i in range(workers):
        inputs = parts[i::workers]
        pattern = inputs[0] if len(inputs) == 1 else inputs[0].replace("-part-0.", "-part-*.")
        output = f"{out}-job{i}"
        command = pipeline_command(model, pattern, output) + [
            "--compute-threads", str(threads), "--overwrite", "--quiet", *services.flags()]
        jobs.append({"inputs": inputs, "output": output, "command": command})
    processes = []
    with WorkerSampler(services.pool_pid) as sampler:
        start = time.perf_counter()
        try:
            for job in jobs:
                processes.append(subprocess.Popen(job["command"], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL,
                                                  stderr=subprocess.PIPE, text=True, start_new_session=True))
            errors = [process.communicate(timeout=RUN_TIMEOUT_SECONDS)[1] for process in processes]
        finally:
            for process in processes:
                stop_session(process)  # a run that failed or timed out leaves nothing behind
        wall = time.perf_counter() - start
    for job, process, error in zip(jobs, processes, errors):
        if process.returncode != 0:
            raise RuntimeError(f"run failed ({' '.join(job['command'])}):\n{error[-3000:]}")
    results = []
    for job in jobs:
        with open(os.path.join(job["output"], "manifest.json")) as handle:
            manifest = json.load(handle)
        written = rows_in(sorted(glob.glob(os.path.join(job["output"], "attributions*.parquet"))))
        results.append({"input_rows": rows_in(job["inputs"]), "rows_written": written,
                        "records_attributed": manifest["counts"]["records_attributed"],
                        "pipeline_seconds": manifest["timings"]["pipeline_seconds"],
                        "compute_threads": manifest["job"]["compute_threads"]})
        if written != results[-1]["input_rows"] or results[-1]["records_attributed"] != written:
            raise RuntimeError(f"{job['output']}: {written} rows written, {results[-1]['records_attributed']} "
                               f"attributed, for {results[-1]['input_rows']} input rows")
    return {"wall": wall, "jobs": results, "sdk_workers": len(sampler.cpu_seconds),
            "sdk_worker_cpu_seconds": sorted(sampler.cpu_seconds.values(), reverse=True)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="20k and 200k rows, one round")
    mode.add_argument("--smoke", action="store_true", help="4k rows, one round, 1_worker and 2_workers (whole-run rates only)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick, --smoke)")
    parser.add_argument("--note", default="", help="what else the machine was doing, for the report")
    parser.add_argument("--workdir", default=None, help="where the model, data and outputs go (default: a temporary dir)")
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    prism = required_prism(parser)
    rounds = args.rounds or (1 if args.quick or args.smoke else 3)
    sizes = [4_000] if args.smoke else [20_000, 200_000] if args.quick else [200_000, 2_000_000]
    configs = list(SMOKE_CONFIGS if args.smoke else CONFIGS)
    workdir = args.workdir or tempfile.mkdtemp(prefix="attribution-bench-scale-out-")
    os.makedirs(workdir, exist_ok=True)
    model = os.path.join(workdir, "mlp20.keras")
    build_model(model)
    parts = {n: write_halves(workdir, n) for n in sizes}
    print(f"workdir {workdir}; sizes {sizes}; rounds {rounds}; configs {configs}; prism {prism}", flush=True)

    started, load_before, commit = utc_now(), os.getloadavg(), git_commit()  # the code measured, before any later edit
    services = ExternalServices(prism, os.path.join(workdir, "services.log"))
    runs = []
    try:
        for r in range(rounds):
            order = configs[r % len(configs):] + configs[:r % len(configs)]  # rotated: none always runs first
            for n in sizes:
                for name in order:
                    workers, threads = CONFIGS[name]
                    run = run_jobs(model, parts[n], workers, threads, services, os.path.join(workdir, f"out-{name}-{n}"))
                    runs.append({"round": r + 1, "config": name, "rows": n, **run})
                    print(f"round {r + 1} {n:>9,} rows {name:18s} wall {run['wall']:6.1f} s, {n / run['wall']:9,.0f} rows/s; "
                          f"SDK workers {run['sdk_workers']} (CPU s {', '.join(f'{c:.1f}' for c in run['sdk_worker_cpu_seconds'])})",
                          flush=True)
    finally:
        services.stop()
    context = {"started_utc": started, "finished_utc": utc_now(), "load_before": load_before,
               "load_after": os.getloadavg(), "note": args.note, "cpus": os.cpu_count(), "cores_available": CORES,
               "prism": prism, "commit": commit, "argv": sys.argv[1:] if argv is None else list(argv)}
    name = "scale_out" + ("-smoke" if args.smoke else "-quick" if args.quick else "")
    return report(runs, sizes, configs, rounds, context, args.results, name)


def report(runs: list[dict], sizes: list[int], configs: list[str], rounds: int, context: dict, results: str, name: str) -> int:
    big = sizes[-1]
    by = {(run["config"], run["rows"], run["round"]): run for run in runs}
    figures: dict[str, dict] = {}
    per_round: dict[str, dict[str, list[float]]] = {}
    for config in configs:
        walls = {n: [by[config, n, r]["wall"] for r in range(1, rounds + 1)] for n in sizes}
        rates = {"whole": [big / w for w in walls[big]]}
        if len(sizes) == 2:
            small = sizes[0]
            rates["steady"] = [(big - small) / (w2 - w1) for w1, w2 in zip(walls[small], walls[big])]
        per_round[config] = rates
        figures[config] = {
            "workers": CONFIGS[config][0], "compute_threads_per_worker": CONFIGS[config][1],
            **{f"wall_seconds_{n}": summarize(walls[n]) for n in sizes},
            **{f"rows_per_second_{kind}": summarize(values) for kind, values in rates.items()},
            "sdk_workers_seen": sorted({by[config, n, r]["sdk_workers"] for n in sizes for r in range(1, rounds + 1)}),
        }
    ratios = {}
    for config in configs[1:]:
        for kind in per_round[config]:
            ratios[f"{config} / 1_worker, {kind}"] = {
                "of_medians": figures[config][f"rows_per_second_{kind}"]["median"] / figures["1_worker"][f"rows_per_second_{kind}"]["median"],
                "per_round": summarize([a / b for a, b in zip(per_round[config][kind], per_round["1_worker"][kind])])}
    if "2_workers_1thread" in configs:  # the same threads per worker: what the second process alone buys
        for kind in per_round["2_workers_1thread"]:
            ratios[f"2_workers_1thread / 1_worker_1thread, {kind}"] = {
                "of_medians": figures["2_workers_1thread"][f"rows_per_second_{kind}"]["median"]
                / figures["1_worker_1thread"][f"rows_per_second_{kind}"]["median"],
                "per_round": summarize([a / b for a, b in zip(per_round["2_workers_1thread"][kind], per_round["1_worker_1thread"][kind])])}

    def cell(f: dict, digits: int = 1) -> str:
        return f"{f['median']:,.{digits}f} ({f['min']:,.{digits}f}–{f['max']:,.{digits}f})"

    load = ", ".join(f"{x:.2f}" for x in context["load_before"]), ", ".join(f"{x:.2f}" for x in context["load_after"])
    lines = [f"# Scale-out on Prism: the default job with 1 and 2 SDK workers ({rounds} interleaved round"
             f"{'s' if rounds > 1 else ''}, medians (min–max))", "",
             f"Measured {context['started_utc']} – {context['finished_utc']} (UTC), commit {context['commit']}, "
             f"{context['cpus']} CPUs; load average (1, 5, 15 min) {load[0]} before, {load[1]} after. "
             f"Machine: {context['note'] or 'not stated'}.", "",
             "2 SDK workers = 2 jobs side by side on one Prism job server and one SDK worker pool, each on half of "
             "the input (2 Parquet files of N/2 rows; the 1-worker job reads both): Prism 2.77 starts one SDK worker "
             "per environment of a job and ignores `--sdk_worker_parallelism`. wall = first launch to last exit; "
             "steady = (N2 − N1) / (T2 − T1) per round.", "",
             "| configuration | workers × compute threads | " + " | ".join(f"wall {n:,} rows (s)" for n in sizes)
             + f" | whole-run rate {big:,} rows (rows/s) | " + ("steady rate (rows/s) | " if len(sizes) == 2 else "")
             + "SDK workers seen |", "|---|---|" + "---|" * (len(sizes) + 2 + (len(sizes) == 2))]
    for config in configs:
        f = figures[config]
        lines.append(f"| {config} | {f['workers']} × {f['compute_threads_per_worker']} | "
                     + " | ".join(cell(f[f"wall_seconds_{n}"]) for n in sizes) + f" | {cell(f['rows_per_second_whole'], 0)} | "
                     + (f"{cell(f['rows_per_second_steady'], 0)} | " if len(sizes) == 2 else "")
                     + ", ".join(map(str, f["sdk_workers_seen"])) + " |")
    lines += ["", "| ratio of rates | of medians | per round: median (min–max) |", "|---|---|---|"]
    lines += [f"| {label} | {r['of_medians']:.2f} | {cell(r['per_round'], 2)} |" for label, r in ratios.items()]
    lines += ["", f"Reproduce: `ATTRIBUTION_PRISM_BIN=/path/to/prism {shlex.join(['python', 'bench/scale_out.py', *context['argv']])}`"]
    document = {"rounds": rounds, "sizes": sizes, "configs": {c: CONFIGS[c] for c in configs}, "figures": figures,
                "ratios": ratios, "runs": runs, **context,
                "pipeline_command": " ".join(pipeline_command("MODEL", "DATA", "OUT"))}
    save_results(results, name, document, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
