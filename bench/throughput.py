#!/usr/bin/env python
"""Throughput benchmark: the pipeline against the raw compute limit, the seed approach and PAIR.

    python bench/throughput.py               # full run (~10 min on 2 cores): 1M-record MLP runs
    python bench/throughput.py --quick       # smoke run (~2 min): smaller record counts, 1 round

Everything is built here, offline: an MLP (64-256-256-10) trained on scikit-learn's digits, a CNN
(28x28x1 conv32-conv64-pool-dense128-dense10) on the digits upsampled to 28x28, and the seed
article's model (784-10 relu-1). Measured in one process run, in interleaved rounds (medians with
min-max over rounds; these machines are shared and noisy):

1. seed approach: eager TensorFlow, one example per GradientTape;
2. raw limit: the same model's batched gradient in a compiled tf.function (the pipeline's own
   `ModelFunctions.gradients`), data already in memory, at BATCH_SIZES rows per call, including
   numpy -> tensor and back;
3. the pipeline end to end on DirectRunner with default settings (one worker, a subprocess per
   run, real files in and out): steady state = (N2 - N1) / (T2 - T1) between a small and a large run, using the
   pipeline's own wall time from its manifest; fixed cost = a 10-record CLI run, launch to exit;
4. integrated gradients through our method code vs PAIR `saliency` (its best setting: all steps
   of one example in one call, with the same compiled gradient function), checked equal;
5. peak RSS of pipeline runs (10k, 100k, 1M records; IG with 32 vs 512 steps).

Results: bench/results/latest.json (name, value, unit per figure) and latest.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

# Rows per gradient call of the raw limit for each model. The pipeline runs with its defaults (no
# --batch-size, --chunk-size or --no-summaries: what a user gets): 4,096 records per batch, and
# rows per call sized from its memory budget and the model's measured per-row cost. 4,096 ran
# 1.4x faster than 1,024 on the MLP here; the CNN's raw limit is measured at 1,024 rows per call.
BATCH_SIZES = {"mlp": 4096, "seed": 4096, "cnn": 1024}


# ------------------------------------------------------------------------------------------------
# Models and data


def build_models(directory: str, kinds: tuple[str, ...] = ("mlp", "cnn", "seed")) -> dict[str, str]:
    """Trains (fixed seed) and saves the models named in `kinds`; returns their paths."""
    import keras

    from pipeline.demo import digits_data

    keras.utils.set_random_seed(0)
    images, labels = digits_data()
    mlp = keras.Sequential([
        keras.Input((64,), name="pixels"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    mlp.compile("adam", "sparse_categorical_crossentropy")
    if "mlp" in kinds:
        mlp.fit(images.reshape(-1, 64), labels, epochs=5, batch_size=64, verbose=0)
    cnn = keras.Sequential([
        keras.Input((28, 28, 1), name="pixels"),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10),
    ])
    cnn.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    if "cnn" in kinds:
        cnn.fit(upsampled_digits(images), labels, epochs=1, batch_size=64, verbose=0)
    seed = keras.Sequential([
        keras.Input((784,), name="pixels"),
        keras.layers.Dense(10, activation="relu"),
        keras.layers.Dense(1),
    ])
    paths = {}
    for name, model in (("mlp", mlp), ("cnn", cnn), ("seed", seed)):
        if name not in kinds:
            continue
        paths[name] = os.path.join(directory, f"{name}.keras")
        model.save(paths[name])
    return paths


def upsampled_digits(images: np.ndarray) -> np.ndarray:
    """(n, 8, 8, 1) -> (n, 28, 28, 1): each pixel 4x4, cropped from 32x32."""
    big = np.kron(images[..., 0], np.ones((4, 4), np.float32))[:, 2:30, 2:30]
    return big[..., None].astype(np.float32)


def dataset(kind: str, n: int) -> np.ndarray:
    """n real digit images (tiled, with 1% noise so rows differ), flattened per record."""
    from pipeline.demo import digits_data

    images, _ = digits_data()
    if kind == "cnn" or kind == "seed":
        images = upsampled_digits(images)
    flat = images.reshape(len(images), -1)
    rows = flat[np.arange(n) % len(flat)]
    noise = np.random.default_rng(n).normal(scale=0.01, size=rows.shape).astype(np.float32)
    return rows + noise


def write_parquet(path: str, values: np.ndarray) -> None:
    column = pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    pq.write_table(pa.table({"pixels": column}), path, row_group_size=65536)


def write_tfrecord(path: str, values: np.ndarray) -> None:
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as writer:
        for row in values:
            feature = {"pixels": tf.train.Feature(float_list=tf.train.FloatList(value=row))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())


# ------------------------------------------------------------------------------------------------
# In-process measurements


def seed_approach_rate(model_path: str, values: np.ndarray, shape: tuple, count: int) -> float:
    """Examples/s of the seed article's loop: eager, one example per GradientTape."""
    import keras
    import tensorflow as tf

    model = keras.saving.load_model(model_path)
    start = time.perf_counter()
    for row in values[:count]:
        x = tf.convert_to_tensor(row.reshape(1, *shape))
        with tf.GradientTape() as tape:
            tape.watch(x)
            output = model(x, training=False)
            score = tf.reduce_max(output, axis=1)
        tape.gradient(score, x).numpy()
    return count / (time.perf_counter() - start)


def raw_limit_rate(fns, values: np.ndarray, shape: tuple, batch_size: int, batches: int) -> float:
    """Examples/s of the compiled batched gradient at `batch_size`, numpy in and out."""
    data = values.reshape(-1, *shape)
    targets = np.full(batch_size, -1, np.int32)
    fns.gradients([data[:batch_size]], targets)  # warm: trace once
    starts = [(i * batch_size) % (len(data) - batch_size + 1) for i in range(batches)]
    start = time.perf_counter()
    for s in starts:
        fns.gradients([data[s : s + batch_size]], targets)
    return batches * batch_size / (time.perf_counter() - start)


def integrated_gradients_comparison(fns, values: np.ndarray, steps: int, count: int) -> dict[str, float]:
    """Ours vs PAIR saliency on the same model, inputs and steps; checks they agree.

    PAIR averages the gradients at linspace(0, 1, n) with equal weights; our trapezoid rule uses
    the same points with half weights at both ends, so
        ours = (n * PAIR - (g(baseline) + g(x)) * (x - baseline) / 2) / (n - 1)
    exactly; the check applies that identity (tolerance 1e-4 x max |attribution|).
    """
    import saliency.core as saliency

    from attributions.integrated_gradients import integrated_gradients

    x = values[:count]
    baseline = np.zeros(x.shape[1], np.float32)
    targets = fns.predict([x]).argmax(axis=1).astype(np.int32)
    integrated_gradients(fns, [x[:4]], [baseline], targets[:4], steps=steps)  # warm

    start = time.perf_counter()
    ours = integrated_gradients(fns, [x], [baseline], targets, steps=steps, rule="riemann_trapezoid", chunk_size=4096)
    ours_seconds = time.perf_counter() - start

    def call_model(batch, call_model_args=None, expected_keys=None):
        target = call_model_args["target"]
        _, (grads,), _ = fns.gradients([batch], np.full(len(batch), target, np.int32))
        return {saliency.base.INPUT_OUTPUT_GRADIENTS: grads}

    pair = saliency.IntegratedGradients()
    start = time.perf_counter()
    pair_masks = np.stack([
        pair.GetMask(x[i], call_model, {"target": int(targets[i])}, x_baseline=baseline, x_steps=steps, batch_size=steps)
        for i in range(count)
    ])
    pair_seconds = time.perf_counter() - start

    _, (g_baseline,), _ = fns.gradients([np.zeros_like(x)], targets)
    _, (g_input,), _ = fns.gradients([x], targets)
    expected = (steps * pair_masks - (g_baseline + g_input) * (x - baseline) / 2) / (steps - 1)
    error = float(np.abs(ours.attributions[0] - expected).max() / np.abs(expected).max())
    return {"ours": count / ours_seconds, "pair": count / pair_seconds, "max_relative_difference": error}


# ------------------------------------------------------------------------------------------------
# Pipeline runs (subprocesses: real launch, real files, per-run peak RSS)


def _peak_rss_mib(pid: int) -> float:
    """The process's own high-water RSS (VmHWM). Not getrusage: ru_maxrss survives exec, so a
    child forked from this big benchmark process would report this process's peak."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def timed(command: list[str]) -> dict[str, float]:
    """Runs a whole process from the repository: wall seconds launch to exit, its peak RSS (MiB)
    and its CPU seconds (user + sys)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "PYTHONPATH": REPO})
        peak = 0.0
        while process.poll() is None:  # VmHWM only grows: the last reading is the peak to ~20 ms
            peak = max(peak, _peak_rss_mib(process.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            stderr.seek(0)
            raise RuntimeError(f"{' '.join(command)} failed:\n{stderr.read().decode(errors='replace')[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the child was reaped by poll()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_seconds": wall, "peak_rss_mib": peak, "cpu_seconds": cpu}


def pipeline_run(model: str, data: str, output: str, extra: list[str] | None = None) -> dict[str, float]:
    """One CLI run with default settings (plain gradient unless `extra` says otherwise)."""
    command = [sys.executable, "-m", "pipeline", "run", "--model", model, "--input", data, "--output", output,
               "--method", "gradient", "--overwrite", "--quiet", *(extra or [])]
    measured = timed(command)
    with open(os.path.join(output, "manifest.json")) as handle:
        manifest = json.load(handle)
    summaries_micros = manifest["metrics"].get("attribution/summaries_cpu_micro_secs", 0)
    return {**measured, "pipeline_seconds": manifest["timings"]["pipeline_seconds"],
            "records": manifest["counts"]["records_attributed"], "summaries_cpu_seconds": summaries_micros / 1e6}


# ------------------------------------------------------------------------------------------------


def summarize(samples: list[float]) -> dict[str, float]:
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small record counts and one round (smoke test)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3; 1 with --quick)")
    parser.add_argument("--workdir", default=None, help="where models and data go (default: a temporary dir)")
    parser.add_argument("--results", default=os.path.join(REPO, "bench", "results"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    sizes = {"mlp": (10_000, 100_000, 1_000_000), "cnn": (2_048, 10_240), "seed": (10_000, 100_000)}
    if args.quick:
        sizes = {"mlp": (2_000, 10_000, 40_000), "cnn": (1_024, 3_072), "seed": (2_000, 10_000)}
    workdir = args.workdir or tempfile.mkdtemp(prefix="attribution-bench-")
    os.makedirs(workdir, exist_ok=True)
    print(f"workdir {workdir}; rounds {rounds}; batch sizes {BATCH_SIZES}", flush=True)

    from attributions.loading import load_model

    models = build_models(workdir)
    shapes = {"mlp": (64,), "cnn": (28, 28, 1), "seed": (784,)}
    files: dict[str, str] = {}
    for kind, counts in sizes.items():
        for n in counts:
            files[f"{kind}-{n}.parquet"] = path = os.path.join(workdir, f"{kind}-{n}.parquet")
            write_parquet(path, dataset(kind, n))
    files["mlp-10.parquet"] = os.path.join(workdir, "mlp-10.parquet")
    write_parquet(files["mlp-10.parquet"], dataset("mlp", 10))
    for n in sizes["mlp"][1:]:
        files[f"mlp-{n}.tfrecord"] = path = os.path.join(workdir, f"mlp-{n}.tfrecord")
        write_tfrecord(path, dataset("mlp", n))
    fns = {kind: load_model(path).model_functions() for kind, path in models.items()}
    memory = {kind: dataset(kind, 8 * BATCH_SIZES[kind]) for kind in models}
    print("models and data ready", flush=True)

    samples: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    out = os.path.join(workdir, "out")
    for r in range(rounds):
        for kind in models:
            record(f"seed_approach_{kind}", seed_approach_rate(models[kind], memory[kind], shapes[kind], 200 if kind != "cnn" else 50))
            record(f"raw_limit_{kind}", raw_limit_rate(fns[kind], memory[kind], shapes[kind], BATCH_SIZES[kind], 16 if kind != "cnn" else 8))
        for kind, counts in sizes.items():
            extension_runs = [("parquet", counts)] + ([("tfrecord", counts[1:])] if kind == "mlp" else [])
            for extension, ns in extension_runs:
                timings = {}
                for n in ns:
                    run = pipeline_run(models[kind], files[f"{kind}-{n}.{extension}"], out)
                    timings[n] = run["pipeline_seconds"]
                    if kind == "mlp" and extension == "parquet":
                        record(f"pipeline_peak_rss_mlp_{n}", run["peak_rss_mib"])
                small, large = ns[-2], ns[-1]
                record(f"pipeline_steady_{kind}_{extension}", (large - small) / (timings[large] - timings[small]))
        fixed = pipeline_run(models["mlp"], files["mlp-10.parquet"], out)
        record("pipeline_fixed_cost_10_records", fixed["wall_seconds"])
        ig_data = files[f"mlp-{sizes['mlp'][0]}.parquet"]
        for steps in (32, 512):
            run = pipeline_run(models["mlp"], ig_data, out, ["--method", "integrated_gradients", "--steps", str(steps)])
            record(f"pipeline_peak_rss_ig_{steps}_steps", run["peak_rss_mib"])
        for steps in (32, 64):
            comparison = integrated_gradients_comparison(fns["mlp"], memory["mlp"], steps, 100 if args.quick else 300)
            record(f"ig_ours_{steps}_steps", comparison["ours"])
            record(f"ig_pair_{steps}_steps", comparison["pair"])
            record(f"ig_max_relative_difference_{steps}_steps", comparison["max_relative_difference"])
        print(f"round {r + 1}/{rounds} done", flush=True)

    return report(samples, sizes, rounds, args)


UNITS = {"seed_approach": "examples/s", "raw_limit": "examples/s", "pipeline_steady": "records/s",
         "pipeline_peak_rss": "MiB", "pipeline_fixed_cost": "s", "ig_ours": "examples/s", "ig_pair": "examples/s",
         "ig_max_relative_difference": "ratio"}


def _unit(name: str) -> str:
    return next(unit for prefix, unit in UNITS.items() if name.startswith(prefix))


def report(samples: dict[str, list[float]], sizes: dict, rounds: int, args) -> int:
    figures = {name: summarize(values) for name, values in samples.items()}
    med = {name: f["median"] for name, f in figures.items()}
    mlp = sizes["mlp"]
    ratios = [
        ("pipeline / raw limit, MLP, Parquet->Parquet", med["pipeline_steady_mlp_parquet"] / med["raw_limit_mlp"], ">=", 0.60),
        ("pipeline / raw limit, MLP, TFRecord->Parquet", med["pipeline_steady_mlp_tfrecord"] / med["raw_limit_mlp"], ">=", 0.45),
        ("pipeline / raw limit, CNN, Parquet->Parquet", med["pipeline_steady_cnn_parquet"] / med["raw_limit_cnn"], ">=", 0.90),
        ("pipeline / raw limit, seed model, Parquet->Parquet", med["pipeline_steady_seed_parquet"] / med["raw_limit_seed"], None, None),
        ("pipeline / seed approach, MLP", med["pipeline_steady_mlp_parquet"] / med["seed_approach_mlp"], ">=", 1000),
        ("fixed cost of a 10-record run (s)", med["pipeline_fixed_cost_10_records"], "<=", 4.0),
        ("IG ours / PAIR saliency, MLP, 32 steps", med["ig_ours_32_steps"] / med["ig_pair_32_steps"], ">=", 10),
        ("IG ours / PAIR saliency, MLP, 64 steps", med["ig_ours_64_steps"] / med["ig_pair_64_steps"], None, None),
        (f"peak RSS {mlp[2]:,} / {mlp[0]:,} records", med[f"pipeline_peak_rss_mlp_{mlp[2]}"] / med[f"pipeline_peak_rss_mlp_{mlp[0]}"], "<=", 1.15),
        ("peak RSS IG 512 / 32 steps", med["pipeline_peak_rss_ig_512_steps"] / med["pipeline_peak_rss_ig_32_steps"], "<=", 1.15),
    ]
    entries = [{"name": n, "value": f["median"], "min": f["min"], "max": f["max"], "unit": _unit(n), "rounds": rounds}
               for n, f in sorted(figures.items())]
    entries += [{"name": f"ratio: {label}", "value": value, "unit": "ratio", "target": None if op is None else f"{op} {target}",
                 "met": None if op is None else (value >= target if op == ">=" else value <= target)}
                for label, value, op, target in ratios]
    document = {"batch_sizes": BATCH_SIZES, "rounds": rounds, "sizes": sizes, "figures": entries}
    lines = ["| figure | median | min | max | unit |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {f['median']:,.4g} | {f['min']:,.4g} | {f['max']:,.4g} | {_unit(n)} |" for n, f in sorted(figures.items())]
    lines += ["", "| ratio | value | target | met |", "|---|---|---|---|"]
    for label, value, op, target in ratios:
        met = "" if op is None else ("yes" if (value >= target if op == ">=" else value <= target) else "**no**")
        lines.append(f"| {label} | {value:,.3g} | {'' if op is None else f'{op} {target}'} | {met} |")
    save_results(args.results, "quick" if args.quick else "latest", document, lines)
    return 0


def utc_now() -> str:
    """Now, UTC, to the second: when a measurement started or ended, for its result file."""
    import datetime

    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def git_commit() -> str:
    """The code measured (`git describe --always --dirty` of this checkout), read when a run starts."""
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def save_results(directory: str, name: str, document: dict, lines: list[str]) -> None:
    """Writes NAME.json and NAME.md (a Markdown table) into `directory` and prints the table."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"{name}.json"), "w") as handle:
        json.dump(document, handle, indent=2)
    with open(os.path.join(directory, f"{name}.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
