#!/usr/bin/env python
"""Runner benchmark: the in-process runner (DirectRunner) against Prism, on the same jobs.

    python bench/runners.py                  # 3 interleaved rounds (~15 min on 2 cores)
    python bench/runners.py --quick          # 1 round, 100k MLP records (smoke run)

Needs a Prism binary ($ATTRIBUTION_PRISM_BIN or the install step in docs/runners.md). Runners, each a CLI
run launch to exit (a subprocess, like a user's):
- `in_process`: the default, `--runner=DirectRunner` (Beam's FnApiRunner in the launcher);
- `prism`: `--runner=PrismRunner --prism_location=BIN` (Beam starts Prism; the SDK worker runs in
  the launcher, LOOPBACK);
- `prism_external`: one `prism --job_port P` job server and one `worker_pool_main` SDK worker pool
  started once for the whole benchmark, `--runner=PortableRunner --environment_type=EXTERNAL`
  (each job gets a fresh SDK worker process from the pool).

Jobs: the demo's digits job (its CNN and 1,797 images as made by `python -m pipeline demo`;
integrated gradients, 32 steps, TFRecord -> Parquet), and the MLP of bench/throughput.py on 10
and 1M Parquet records (gradient, 4,096 records per batch). Per runner: the fixed cost is the
10-record run's wall; the 1M-record wall after the fixed cost is wall(1M) - wall(10). Rounds are
interleaved (each round runs every runner on every job), and ratios are of medians; the machine
is shared with other work, so read the min-max too.

Results: bench/results/runners.json and runners.md.
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
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pipeline.processes import free_port, stop_session, wait_for_port  # noqa: E402
from throughput import BATCH_SIZES, build_models, dataset, save_results, summarize, write_parquet  # noqa: E402

RUNNERS = ("in_process", "prism", "prism_external")
ENV = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}


class ExternalServices:
    """A Prism job server and an SDK worker pool, each in its own session, stopped by PID."""

    def __init__(self, prism: str, log_path: str):
        self.job_port, self.pool_port = free_port(), free_port()
        self._log = open(log_path, "w")
        self._processes = []
        try:
            self._processes.append(subprocess.Popen(
                [prism, "--job_port", str(self.job_port), "--serve_http=false"], stdout=self._log,
                stderr=subprocess.STDOUT, start_new_session=True))
            self._processes.append(subprocess.Popen(
                [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={self.pool_port}"],
                env=ENV, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True))
            wait_for_port(self.job_port, self._processes[0])
            wait_for_port(self.pool_port, self._processes[1])
        except BaseException:
            self.stop()
            raise

    @property
    def pool_pid(self) -> int:
        """The SDK worker pool's PID: the SDK workers it starts are its children."""
        return self._processes[1].pid

    def flags(self) -> list[str]:
        return ["--wait", "--runner=PortableRunner", f"--job_endpoint=localhost:{self.job_port}",
                "--environment_type=EXTERNAL", f"--environment_config=localhost:{self.pool_port}"]

    def stop(self) -> None:
        for process in reversed(self._processes):
            stop_session(process)
        self._log.close()


def timed_run(args: list[str], output: str, timeout: float = 900) -> dict:
    """One CLI run, launch to exit (bounded); its wall and manifest."""
    command = [sys.executable, "-m", "pipeline", "run", *args, "--output", output, "--overwrite", "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"run failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    with open(os.path.join(output, "manifest.json")) as handle:
        manifest = json.load(handle)
    return {"wall": wall, "pipeline": manifest["timings"]["pipeline_seconds"], "records": manifest["counts"]["records_attributed"]}


def required_prism(parser: argparse.ArgumentParser) -> str:
    """The Prism binary (pipeline.prism.find_prism), or the parser's error saying how to build one."""
    from pipeline.prism import find_prism, install_command

    prism = find_prism()
    if prism is None:
        parser.error(f"no Prism binary: set $ATTRIBUTION_PRISM_BIN or build one with: {install_command()}")
    return prism


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round, 100k MLP records instead of 1M")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    parser.add_argument("--workdir", default=None, help="where models and data go (default: a temporary dir)")
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    prism = required_prism(parser)
    rounds = args.rounds or (1 if args.quick else 3)
    large = 100_000 if args.quick else 1_000_000
    workdir = args.workdir or tempfile.mkdtemp(prefix="attribution-bench-runners-")
    os.makedirs(workdir, exist_ok=True)
    print(f"workdir {workdir}; rounds {rounds}; prism {prism}", flush=True)

    from pipeline.demo import make_digits_assets

    mlp = build_models(workdir, kinds=("mlp",))["mlp"]
    data = {}
    for n in (10, large):
        data[n] = os.path.join(workdir, f"mlp-{n}.parquet")
        write_parquet(data[n], dataset("mlp", n))
    digits = make_digits_assets(os.path.join(workdir, "digits"))
    batch = str(BATCH_SIZES["mlp"])
    jobs = {
        "digits_ig": ["--model", digits["model"], "--input", os.path.join(workdir, "digits", "digits-*.tfrecord"),
                      "--method", "integrated_gradients", "--steps", "32", "--key-column", "id",
                      "--passthrough-columns", "label", "--slice-columns", "label"],
        **{f"mlp_{n}": ["--model", mlp, "--input", data[n], "--method", "gradient", "--batch-size", batch,
                        "--chunk-size", batch] for n in (10, large)},
    }
    print("models and data ready", flush=True)

    services = ExternalServices(prism, os.path.join(workdir, "services.log"))
    flags = {"in_process": [], "prism": ["--runner=PrismRunner", f"--prism_location={prism}"],
             "prism_external": services.flags()}
    samples: dict[str, list[float]] = {}
    try:
        for r in range(rounds):
            for job, job_args in jobs.items():
                for runner in RUNNERS:
                    run = timed_run(job_args + flags[runner], os.path.join(workdir, f"out-{runner}-{job}"))
                    samples.setdefault(f"{runner}/{job}", []).append(run["wall"])
                    samples.setdefault(f"{runner}/{job}/pipeline", []).append(run["pipeline"])
                    print(f"round {r + 1} {runner:15s} {job:12s} wall {run['wall']:6.1f} s, pipeline {run['pipeline']:6.1f} s "
                          f"({run['records']} records)", flush=True)
    finally:
        services.stop()
    return report(samples, large, rounds, args)


def report(samples: dict[str, list[float]], large: int, rounds: int, args) -> int:
    figures = {name: summarize(values) for name, values in samples.items()}
    med = {name: f["median"] for name, f in figures.items()}
    jobs = ("digits_ig", "mlp_10", f"mlp_{large}")

    def cell(name: str) -> str:
        f = figures[name]
        return f"{f['median']:.1f} s ({f['min']:.1f}–{f['max']:.1f})"

    lines = [f"# Runners: in-process vs Prism ({rounds} interleaved rounds, medians (min–max); machine shared)", "",
             "wall = CLI launch to exit; pipeline = the manifest's pipeline_seconds (graph submitted to job done, "
             "job server start included)", "", "| job | " + " | ".join(RUNNERS) + " |", "|---|" + "---|" * len(RUNNERS)]
    for job in jobs:
        lines.append(f"| {job} wall | " + " | ".join(cell(f"{r}/{job}") for r in RUNNERS) + " |")
        lines.append(f"| {job} pipeline | " + " | ".join(cell(f"{r}/{job}/pipeline") for r in RUNNERS) + " |")
    after_fixed = {kind: {r: med[f"{r}/mlp_{large}{suffix}"] - med[f"{r}/mlp_10{suffix}"] for r in RUNNERS}
                   for kind, suffix in (("wall", ""), ("pipeline", "/pipeline"))}
    for kind in after_fixed:
        lines.append(f"| mlp_{large} {kind} after the fixed cost (minus mlp_10) | "
                     + " | ".join(f"{after_fixed[kind][r]:.1f} s" for r in RUNNERS) + " |")
    lines += ["", "| ratio to in-process (of medians) | prism | prism_external |", "|---|---|---|"]
    ratios = {}
    for job in jobs:
        for kind, suffix in (("wall", ""), ("pipeline", "/pipeline")):
            ratios[f"{job} {kind}"] = {r: med[f"{r}/{job}{suffix}"] / med[f"in_process/{job}{suffix}"] for r in RUNNERS[1:]}
    for kind in after_fixed:
        ratios[f"mlp_{large} {kind} after the fixed cost (target <= 1.3)"] = {
            r: after_fixed[kind][r] / after_fixed[kind]["in_process"] for r in RUNNERS[1:]}
    for name, values in ratios.items():
        lines.append(f"| {name} | " + " | ".join(f"{values[r]:.2f}" for r in RUNNERS[1:]) + " |")
    document = {"rounds": rounds, "large": large, "quick": args.quick, "figures": figures, "ratios": ratios,
                "samples": samples, "after_fixed_seconds": after_fixed, "cpus": os.cpu_count(),
                "note": "2-core machine shared with other work; interleaved rounds"}
    save_results(args.results, "runners" + ("_quick" if args.quick else ""), document, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
