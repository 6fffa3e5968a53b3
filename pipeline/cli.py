"""Command line: `attribution-pipeline run|compare|report|finalize|demo ...` (also `python -m pipeline`).

`run` takes every RunConfig setting as a flag (`key_column` -> `--key-column`), or from
`--config FILE.yaml`; flags override the file. Flags this program does not know are Beam
pipeline options (`--runner`, `--project`, `--temp_location`, ...) and go to `PipelineOptions`.
A user error prints one line saying what is wrong and how to fix it, and exits with status 2
(a traceback only with --debug); a run that fails its checks exits 3, `compare --fail-on-drift`
exits 4 on drift, a bucket whose storage cannot be reached exits 5, a finished run whose quality
audit is past a --quality-limit exits 6 (its results are written: the limit judges them).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import errno
import logging
import os
import shlex
import sys
import tempfile
from typing import Any, Optional, Sequence

from pipeline.errors import RunFailedError, StorageUnavailableError
from pipeline.storage_fault import STORAGE_WORDS
from pipeline.terminal import printable

__all__ = ["main", "run_program", "build_parser", "config_from_args", "configure_logging"]

EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 3
EXIT_DRIFT = 4
EXIT_STORAGE_UNAVAILABLE = 5
EXIT_QUALITY_LIMIT = 6


def _input_map(value: str) -> tuple[str, Any]:
    name, sep, columns = value.partition("=")
    if not sep or not name or not columns:
        raise argparse.ArgumentTypeError(f"--inputs expects NAME=COLUMN, NAME=COL1,COL2,... or NAME='GLOB*'; got {value!r}")
    parts = [c for c in columns.split(",") if c]
    return name, parts[0] if len(parts) == 1 and "," not in columns else parts


def _image(value: str) -> tuple[str, Any]:
    from transforms.images import parse_image_flag

    try:
        return parse_image_flag(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _vocabulary(value: str) -> tuple[str, str]:
    column, sep, path = value.partition("=")
    if not sep or not column or not path:
        raise argparse.ArgumentTypeError(f"expected COLUMN=FILE (e.g. island=islands.txt), got {value!r}")
    return column, path


def _param(value: str) -> tuple[str, str]:
    name, sep, text = value.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--param expects NAME=VALUE (e.g. --param region=eu); got {value!r}")
    return name, text


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    def add(*names: str, **options) -> None:
        # Every dashed flag also answers to its underscore spelling (Beam's style, and the only
        # one Dataflow Flex Template parameter names allow), e.g. --key-column / --key_column.
        # The first name is the setting's own (as in YAML); later ones are older spellings.
        flags = []
        for flag in names:
            flags += [flag, "--" + flag[2:].replace("-", "_")] if "-" in flag[2:] else [flag]
        parser.add_argument(*flags, **options)

    add("--config", metavar="FILE.yaml", help="YAML file with settings (flags override it); see configs/.")
    add("--model", metavar="PATH", help="Keras .keras/.h5 file or TensorFlow SavedModel directory (local or gs://).")
    add("--input", action="append", metavar="PATH_OR_GLOB", help="Parquet or TFRecord file or glob (local or gs://); repeat for several.")
    add("--output", metavar="FOLDER", help="output directory for Parquet files, dead letters and manifest.json.")
    add("--input-format", choices=["auto", "tfrecord", "parquet"], help="default: from the extension.")
    add("--method", metavar="METHOD", help="gradient | gradient_x_input | integrated_gradients (default) | smoothgrad | expected_gradients | grad_cam "
        "| sampled_shapley | kernel_shap | occlusion (the last three need no gradient: any model).")
    add("--target", metavar="TARGET", help="predicted (default) | INDEX | label:COLUMN | top_k:K.")
    add("--class-names", dest="class_names", metavar="NAMES",
        help="names of the output's classes in index order, 'cat,dog,bird' or a text file with one per line: written "
             "as target_name beside each row's target and used by summaries, compare and report.")
    add("--vocabulary", action="append", type=_vocabulary, dest="vocabularies", metavar="COLUMN=FILE",
        help="names of an integer id column's categories/tokens, one per line (line 1 = id 0), for a model without "
             "its own vocabulary: summaries, report and compare show them instead of ids; repeat per column.")
    add("--key-column", metavar="COLUMN", help="column carried to the output as the key (default: '<file>:<index>').")
    add("--passthrough-columns", "--passthrough", action="append", dest="passthrough_columns", metavar="COLUMN",
        help="column copied to every output row; repeat or comma-separate (--passthrough also works).")
    add("--inputs", "--input-map", action="append", type=_input_map, dest="inputs", metavar="INPUT=COLUMNS",
        help="which columns a model input reads: INPUT=COLUMN (a list/tensor column), INPUT=COL1,COL2,... (scalar "
             "columns, in order) or a glob INPUT='f*' (file order); repeat per input. Default: the column named like the "
             "input, or for a (k,) input the k numeric columns that are not key/pass-through/label/slice (--input-map also works).")
    add("--image", action="append", type=_image, dest="images", metavar="COLUMN:HxWxC[:PRESET|:SCALE,OFFSET]",
        help="COLUMN holds encoded JPEG/PNG images (a TFRecord bytes feature such as image/encoded, or a Parquet binary "
             "column): decode them, resize to HxW (bilinear) with C channels and scale: pixel = value * SCALE + OFFSET, or a "
             "PRESET: unit (1/255, 0; the default), symmetric (1/127.5, -1), raw (1, 0). An image that does not decode or has "
             "another channel count is dead-lettered. Repeat per column (config: images: {COLUMN: {size: [H, W], channels: C, ...}}).")
    add("--layer", action="append", dest="layers", metavar="NAME",
        help="attribute at this layer's output (e.g. an Embedding) instead of at the model input it stands for; one value per "
             "position, summed over the layer's last axis; repeat for several inputs. Default: none for float inputs; for an "
             "integer/string input, the first float layer after it (its Embedding or one-hot). grad_cam: the convolutional "
             "layer (4-D output) whose activations are weighted (default: the last such layer before the output).")
    add("--output-name", metavar="NAME", help="which model output to explain (multi-output models).")
    add("--explain-logits", action=argparse.BooleanOptionalAction, default=None,
        help="explain the output before a final softmax/sigmoid (default: yes for grad_cam, as published, when the model ends "
             "in one; no for the other methods); --no-explain-logits explains the probabilities.")
    add("--unsafe-deserialization", action="store_true", default=None, help="load Keras files with safe_mode=False and SavedModels without the side-effect-free op allowlist (only for models you trust).")
    add("--overwrite", action="store_true", default=None, help="replace the results already in --output.")
    add("--check-duplicate-keys", action="store_true", default=None, help="count keys seen more than once (manifest counts; costs a shuffle).")
    add("--batch-timeout-seconds", type=float, metavar="SECONDS",
        help="fail the run when one batch is still attributing after this long (default 3600).")
    add("--lock-lease-seconds", type=float, metavar="SECONDS",
        help="object stores: a lock its run has not renewed for this long is taken over (default 300).")
    add("--parquet-pre-buffer", action=argparse.BooleanOptionalAction, default=None,
        help="read each Parquet row group ahead in a few large requests (default: on for object stores, off for local files).")
    add("--max-dead-letter-fraction", type=float, metavar="FRACTION", help="fail the run when more than this share of records is dead-lettered (default 0.1).")
    add("--batch-size", type=int, metavar="RECORDS", help="records per pipeline element (default 4096).")
    add("--chunk-size", type=int, metavar="ROWS", help="most rows (examples x steps/samples) per gradient call (default: "
        "automatic, the most that fit --chunk-memory-mib for this model, at most 65,536).")
    add("--chunk-memory-mib", type=int, metavar="MIB", help="memory budget of the gradient calls when --chunk-size is not "
        "given, in MiB per worker process, shared by the --compute-threads calls (default 512).")
    add("--compute-threads", type=int, metavar="N", help="gradient calls run side by side per worker process, each op on "
        "one thread (default: one per core on local runners; 1, TensorFlow's own threading, on remote runners).")
    add("--xla", choices=("auto", "on", "off"), help="XLA for the gradient calls: auto (default: compiled whole, model "
        "included, kept when on the first batch it agrees with TensorFlow's kernels within the completeness bound and is faster; "
        "the manifest's xla says what was used and why) | on (no check) | off.")
    add("--steps", type=int, metavar="N", help="integrated gradients: points on the path (default 64).")
    add("--rule", metavar="RULE", help="integrated gradients: gausslegendre (default) | riemann_left | riemann_right | riemann_middle | riemann_trapezoid.")
    add("--completeness-target", type=float, metavar="ERROR",
        help="integrated gradients: re-integrate rows whose completeness_error is over ERROR (e.g. 0.01) with more points, "
             "up to --max-steps (default off: --steps points for every row).")
    add("--max-steps", type=int, metavar="N", help="integrated gradients with --completeness-target: most gradient evaluations per row (default 1024).")
    add("--baseline", metavar="BASELINE", help="integrated gradients: auto (default: median for scalar float columns, zeros for "
        "images and tensors) | median | mean (per feature, of --baseline-sample-size sampled rows) | blur (each image blurred, "
        "--blur-sigma) | zeros | constant:VALUE | file:PATH.")
    add("--blur-sigma", type=float, metavar="PIXELS", help="--baseline blur: the Gaussian's std in pixels (default: a tenth of "
        "the image's smaller side).")
    add("--baseline-sample-size", type=int, metavar="ROWS", help="rows sampled from the input for median/mean baselines and the "
        "baseline check (default 1024).")
    add("--quality-rows", type=int, metavar="ROWS", help="rows of the input the quality audit explains again under its tests "
        "(model randomisation, input dominance, deletion/insertion, infidelity, sensitivity; docs/quality.md); 0 turns it off (default 256).")
    add("--quality-seed", type=int, metavar="N", help="seed of the quality audit's random draws (default 0).")
    add("--quality-perturbations", type=int, metavar="N", help="perturbed copies per audited row for infidelity and sensitivity-max (default 10).")
    add("--quality-steps", type=int, metavar="N", help="points of the audit's deletion and insertion curves (default 16).")
    add("--quality-patch", type=int, metavar="PIXELS", help="side of the image patches the deletion curves remove (default: an eighth of the smaller side).")
    add("--quality-noise", type=float, metavar="FRACTION", help="infidelity's Gaussian perturbation std, as a fraction of each value's std (default 0.1).")
    add("--quality-radius", type=float, metavar="FRACTION", help="sensitivity-max's perturbation radius, as a fraction of each value's std (default 0.02).")
    add("--quality-limit", action="append", dest="quality_limits", metavar="NAME<=X",
        help="exit with status 6 when a quality number is past X, e.g. randomisation<=0.5, deletion_gap>=0.05; repeat for several "
             "(names: randomisation, input_dominance, deletion_gap, insertion_gap, infidelity, sensitivity, baseline_sensitivity).")
    add("--layer-baseline", metavar="BASELINE", help="integrated gradients at a layer: zeros (default, a zero activation) | "
        "id:N (the layer's output for id N at every position, e.g. id:0 for padding).")
    add("--smoothgrad-variant", metavar="VARIANT", help="smoothgrad (default) | smoothgrad_sq | vargrad.")
    add("--noise-fraction", type=float, metavar="FRACTION", help="SmoothGrad noise std as a fraction of each input's range (default 0.15).")
    add("--samples", type=int, metavar="N", help="SmoothGrad (default 50) / expected gradients (default 200) samples per record; "
        "sampled_shapley: permutations (default 24, in antithetic pairs); kernel_shap: coalitions (default 2 x players + 2048).")
    add("--seed", type=int, metavar="N", help="seed of the sampling methods (default 0).")
    add("--background", metavar="PATH", help="expected gradients, kernel_shap: Parquet/TFRecord file of background rows.")
    add("--groups", "--group", action="append", dest="groups", metavar="NAME=COL,COL",
        help="sampled_shapley, kernel_shap, occlusion: these columns move together as one player (default: one per column, "
             "per element of a list column, per image patch); repeat per group.")
    add("--patch", type=int, metavar="PIXELS", help="sampled_shapley, kernel_shap, occlusion: side of the square image patches "
        "that are the players of an image input (default: an eighth of the smaller side).")
    add("--background-clusters", type=int, metavar="K", help="kernel_shap: summarize the background rows by k-means to K weighted "
        "rows (as shap.kmeans; default: every row, each coalition costs one model evaluation per background row).")
    add("--window", type=int, metavar="PIXELS", help="occlusion of images: sliding window side (Captum's Occlusion; with --stride).")
    add("--stride", type=int, metavar="PIXELS", help="occlusion of images: the sliding window's step (with --window).")
    add("--summaries", action=argparse.BooleanOptionalAction, default=None, help="write summary.json and summary_*.parquet in the same pass (default on).")
    add("--slice-columns", "--slice-column", action="append", dest="slice_columns", metavar="COLUMN",
        help="also summarize per value of this column (e.g. country); repeat or comma-separate (--slice-column also works).")
    add("--summary-sample-size", type=int, metavar="ROWS", help="rows kept per summary group for approximate quantiles (default 2048).")
    add("--bootstrap-replicates", type=int, metavar="B", help="Poisson bootstrap replicates behind the 95 %% intervals of "
        "every group's per-feature means in summary.json (default 200; 0 turns them off).")
    add("--completeness-threshold", type=float, metavar="FRACTION", help="relative completeness error counted as too large in summaries (default 0.05).")
    add("--max-slice-values", type=int, metavar="N", help="distinct values summarized per slice column, the rest pooled as __other__ (default 1000).")
    add("--date", metavar="YYYY-MM-DD", help="fills {date} in --model/--input/--output/--background/--baseline paths.")
    add("--param", action="append", type=_param, dest="params", metavar="NAME=VALUE", help="NAME=VALUE: fills {NAME} in those paths; repeat for several.")
    add("--dry-run", action="store_true", default=None, help="check everything, time the method on a sample of the input and "
        "print the records/s and the worker-hours and cost per million records on Dataflow-like workers; writes nothing.")
    add("--vcpu-hour-price", type=float, metavar="USD", help="--dry-run: price of a worker vCPU-hour (default 0.056, Dataflow "
        "batch, us-central1).")
    add("--gb-hour-price", type=float, metavar="USD", help="--dry-run: price of a worker GB-hour of memory (default 0.003557).")
    add("--wait", action="store_true", default=None, help="on a remote runner, wait for the job and finalize it (default: return with the job id).")
    add("--quiet", action="store_true", help="no progress line while the run goes (the summary at the end is still printed).")
    add("--debug", action="store_true", help=_DEBUG_HELP)


def _threshold_arguments(parser: argparse.ArgumentParser) -> None:
    from audit.compare import THRESHOLD_HELP, DriftThresholds

    group = parser.add_argument_group("drift thresholds", "when two runs count as drifted (a group is judged only with --min-group-rows rows in both)")
    for f in dataclasses.fields(DriftThresholds):
        metavar, what, unit = THRESHOLD_HELP[f.name]
        group.add_argument("--" + f.name.replace("_", "-"), type=type(f.default), dest=f"threshold_{f.name}", metavar=metavar,
                           help=f"{what} (default {f.default}; unit: {unit}).".replace("%", "%%"))
    parser.add_argument("--allow-different", action="store_true",
                        help="compare runs that differ in method, target or explained output instead of refusing "
                             f"(exit {EXIT_USER_ERROR}); the output then says what the comparison spans. Runs of different "
                             "models (a retrained one against the last) are compared without it, the model change said first.")


def _thresholds(args: argparse.Namespace):
    from audit.compare import DriftThresholds

    given = {k[len("threshold_"):]: v for k, v in vars(args).items() if k.startswith("threshold_") and v is not None}
    return DriftThresholds(**given)


def _compare(args: argparse.Namespace) -> int:
    from audit.compare import compare_runs, format_comparison
    from audit.json_safe import dumps
    from audit.runs import load_run

    if args.json_path:
        _prepare_output_file(args.json_path, "--json", "comparison.json")
    if args.table_path:
        _prepare_output_file(args.table_path, "--table", "drift.parquet")
    document = compare_runs(load_run(args.run_a, _run_reader(args.run_a)), load_run(args.run_b, _run_reader(args.run_b)),
                            _thresholds(args), allow_different=args.allow_different)
    _print(format_comparison(document))
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as handle:
            handle.write(dumps(document, indent=1))
    if args.table_path:
        import pyarrow.parquet as pq

        from audit.compare import drift_table

        pq.write_table(drift_table(document), args.table_path)
    return EXIT_DRIFT if document["drift"] and args.fail_on_drift else 0


def _prepare_output_file(path: str, flag: str, example: str) -> None:
    """A local file the command writes: its folder is created; a folder at `path` is an error."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path!r} is a folder; give the path of a file to write, e.g. {os.path.join(path, example)!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{flag} {path!r}: cannot create its folder {folder!r} ({error.strerror}); choose another path.") from None


def _finalize(args: argparse.Namespace) -> int:
    from pipeline.manifest import finalize_run
    from pipeline.output_lock import OutputLock
    from pipeline.paths import normalized_path

    output = normalized_path(args.output, "OUTPUT")
    with OutputLock(output, create=False) as lock:  # not while a run is writing into the same folder
        manifest = finalize_run(output, before_commit=lock.verify)
    _print_summary(manifest)
    return _quality_status(manifest)


def _report(args: argparse.Namespace) -> int:
    from audit.report import write_report
    from audit.runs import load_run

    _prepare_output_file(args.out, "--out", "report.html")
    baseline = load_run(args.baseline, _run_reader(args.baseline)) if args.baseline else None
    write_report(load_run(args.run, _run_reader(args.run)), args.out, baseline, _thresholds(args), allow_different=args.allow_different)
    _print(f"report: {args.out}")
    return 0


_RUN_EPILOG = """\
Every setting is also a YAML key with the same name (--key-column <-> key_column):
configs/example.yaml lists them all with their defaults; flags override the file.

Flags this program does not know are Apache Beam pipeline options and go to the runner, e.g.
  --runner=DataflowRunner --project=P --region=R --temp_location=gs://B/tmp
  --direct_num_workers=2 --direct_running_mode=multi_processing
(see docs/running-at-scale.md). A flag neither knows is an error, with a suggestion.

Exit status: 0 done, 2 a user error (one line; --debug for the traceback), 3 the run failed its
checks (counts, dead letters, storage)."""

_DEBUG_HELP = "show the traceback of a user error (normally one line)."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attribution-pipeline", description=__doc__.split("\n")[0], allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    _run_arguments(commands.add_parser(
        "run", help="attribute a dataset", allow_abbrev=False, epilog=_RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ))
    compare = commands.add_parser("compare", help="compare two runs' summaries and flag drift", allow_abbrev=False)
    compare.add_argument("run_a", metavar="RUN_A", help="the reference run's output directory")
    compare.add_argument("run_b", metavar="RUN_B", help="the run to check against it")
    compare.add_argument("--fail-on-drift", action="store_true", help=f"exit with status {EXIT_DRIFT} when drift exceeds a threshold.")
    compare.add_argument("--json", dest="json_path", metavar="FILE", help="also write the comparison as JSON to this file.")
    compare.add_argument("--table", dest="table_path", metavar="FILE", help="also write the drift table as Parquet (one row per "
                         "group and feature: before, after, change, its 95 %% interval, flagged, reason), for dashboards.")
    _threshold_arguments(compare)
    compare.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    finalize = commands.add_parser("finalize", help="commit a finished remote job's output and write its manifest", allow_abbrev=False)
    finalize.add_argument("output", metavar="OUTPUT", help="the run's output directory")
    finalize.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    report = commands.add_parser("report", help="write a self-contained HTML report of a run", allow_abbrev=False)
    report.add_argument("run", metavar="RUN", help="the run's output directory")
    report.add_argument("--baseline", metavar="RUN", help="an earlier run to show drift against")
    report.add_argument("--out", required=True, metavar="FILE", help="the HTML file to write")
    _threshold_arguments(report)
    report.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    demo = commands.add_parser("demo", help="train four small models on real data shipped with scikit-learn and palmerpenguins "
                               "(digits as floats and as PNG, breast cancer, penguins) and attribute them", allow_abbrev=False)
    demo.add_argument("--output", default="demo_output", help="directory for the demo's models, data and results.")
    demo.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    return parser


def options_to_args(options: Any) -> list[str]:
    """A YAML `pipeline_options` mapping as Beam flags: true -> --name, false -> left out,
    a list -> --name=item for each, anything else -> --name=value."""
    if not isinstance(options, dict):
        raise ValueError(f"pipeline_options must map Beam option names to values (e.g. runner: DataflowRunner); got {options!r}.")
    args = []
    for name, value in options.items():
        if value is True:
            args.append(f"--{name}")
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            args += [f"--{name}={item}" for item in value]
        else:
            args.append(f"--{name}={value}")
    return args


def config_from_args(args: argparse.Namespace):
    """Merges --config (if any) with the flags given (flags win) into a validated RunConfig.
    A `pipeline_options` mapping in the YAML is not a setting: see `yaml_pipeline_args`."""
    from pipeline.config import RunConfig, load_yaml_config

    values = load_yaml_config(args.config) if args.config else {}
    values.pop("pipeline_options", None)
    flags = {k: v for k, v in vars(args).items()
             if k not in ("config", "command", "debug", "wait", "quiet", "dry_run", "vcpu_hour_price", "gb_hour_price") and v is not None}
    for name in ("passthrough_columns", "slice_columns"):
        if name in flags:
            flags[name] = [c for item in flags[name] for c in item.split(",") if c]
    if "inputs" in flags:
        flags["inputs"] = dict(flags["inputs"])
    if "vocabularies" in flags:
        configured = values.get("vocabularies") if isinstance(values.get("vocabularies"), dict) else {}
        flags["vocabularies"] = {**configured, **dict(flags["vocabularies"])}
    if "images" in flags:
        configured = values.get("images") if isinstance(values.get("images"), dict) else {}
        flags["images"] = {**configured, **dict(flags["images"])}
    if "params" in flags:
        configured = values.get("params") if isinstance(values.get("params"), dict) else {}
        flags["params"] = {**configured, **dict(flags["params"])}
    values.update(flags)
    source = f"--config {args.config} and flags" if args.config else "the flags"
    return RunConfig.from_mapping(values, source=source)


def check_pipeline_flags_quickly(beam_args: Sequence[str], own_parser: argparse.ArgumentParser) -> None:
    """The same check as check_pipeline_args for flags, against Beam's flags as listed in
    pipeline.beam_flags: a mistyped flag is reported without importing Beam."""
    from pipeline.beam_flags import BEAM_FLAGS

    flags = [arg.split("=", 1)[0] for arg in beam_args if arg.startswith("-")]
    unknown = [flag for flag in flags if flag not in BEAM_FLAGS]
    if unknown:
        known = [*BEAM_FLAGS, *(o for p in _subparsers(own_parser) for a in p._actions for o in a.option_strings)]
        _raise_unknown(unknown, unknown[0], known)


def _raise_unknown(unknown: list, flag: Optional[str], known: list) -> None:
    suggestion = difflib.get_close_matches(flag, known, n=1) if flag else []
    hint = f" Did you mean {suggestion[0]}?" if suggestion else ""
    raise ValueError(
        f"unknown argument(s) {unknown}: not a setting of this program (see --help) nor a Beam "
        f"pipeline option.{hint}"
    )


def check_pipeline_args(beam_args: Sequence[str], own_parser: argparse.ArgumentParser) -> None:
    """Flags that neither this program nor any Beam PipelineOptions knows are errors (Beam would
    only log and drop them, so a typo like --stpes would silently run with the default)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    beam_parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(beam_parser)  # pylint: disable=protected-access
    _, unknown = beam_parser.parse_known_args(list(beam_args))
    flags = [arg.split("=", 1)[0] for arg in unknown if arg.startswith("-")]
    if not unknown:
        return
    known = [o for p in (beam_parser, *_subparsers(own_parser)) for a in p._actions for o in a.option_strings]
    _raise_unknown(unknown, flags[0] if flags else None, known)


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    return [p for a in parser._actions if isinstance(a, argparse._SubParsersAction) for p in a.choices.values()]


# Warnings Beam logs while it is imported that say nothing about the user's run (e.g. without the
# gcp extra, every command printed the first one). Matched from the start of the message, exactly.
_IMPORT_NOISE = (
    "apitools not found, and bigquery client libraries are not available",
)


class _DropTracebacksSaidInOneLine(logging.Filter):
    """Beam logs a failed bundle with its whole traceback; when the storage refused a write (full
    disk, quota, file-size limit) or a batch ran past batch_timeout_seconds, the run ends with one
    line saying so (pipeline.run), and the tracebacks above it say nothing more."""

    _WORDS = (*(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)), "(batch_timeout_seconds)", *STORAGE_WORDS)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.name.startswith("apache_beam"):
            return True
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info and record.exc_info[1] else "")
        return not any(word in text for word in self._WORDS)


class _RetriesInOneLine(logging.Filter):
    """Beam logs each retry of a storage request with the whole traceback of what failed (seven of
    them in the minutes an S3 read retries); the first line says what is retried and why."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "apache_beam.utils.retry" and "Traceback for above exception" in str(record.msg):
            record.msg, record.args = record.getMessage().split(" Traceback for above exception", 1)[0].strip(), None
        return True


class _DropRetracingNotes(logging.Filter):
    """TensorFlow's 'N out of the last M calls to <function ...> triggered tf.function retracing'
    warning: each model-function object traces once by design (shape-free signatures; the quality
    audit builds its own), which the warning counts as retracing. Kept with --debug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("tensorflow") and "triggered tf.function retracing" in str(record.msg))


class _DropImportNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.WARNING and str(record.msg).startswith(_IMPORT_NOISE))


def _print(text: str, file=None) -> None:
    """print() for anything that may carry names from the data (see pipeline.terminal)."""
    print(printable(str(text)), file=file)


_LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


class _PrintableFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))


def configure_logging(debug: bool = False) -> None:
    """WARNING and above on stderr, one line each, without Beam's import-time noise (nor, unless
    `debug`, TensorFlow's retracing notes)."""
    logging.basicConfig(level=logging.WARNING, format=_LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        if type(handler.formatter) is logging.Formatter and handler.formatter._fmt == _LOG_FORMAT:  # basicConfig's
            handler.setFormatter(_PrintableFormatter(_LOG_FORMAT))
        if not any(isinstance(f, _DropImportNoise) for f in handler.filters):
            handler.addFilter(_DropImportNoise())
            handler.addFilter(_DropTracebacksSaidInOneLine())
            handler.addFilter(_RetriesInOneLine())
        if not debug and not any(isinstance(f, _DropRetracingNotes) for f in handler.filters):
            handler.addFilter(_DropRetracingNotes())


def _use_filesystem_flags_only(args: argparse.Namespace, beam_args: Sequence[str], parser: argparse.ArgumentParser) -> None:
    """compare, report and finalize take Beam's filesystem options (for runs in buckets) and no
    other pipeline flag; the options are given to Beam's file layer here."""
    if not beam_args:
        return
    from pipeline.filesystem_options import filesystem_options, use_filesystem_options

    check_pipeline_args(beam_args, parser)
    accepted = {f"--{name}" for name in filesystem_options(beam_args)}
    others = [arg for arg in beam_args if arg.startswith("-") and arg.split("=", 1)[0] not in accepted]
    if others:
        parser.error(f"unrecognized arguments: {' '.join(others)} (this command takes only Beam's filesystem options, "
                     f"e.g. --s3_endpoint_url)")
    use_filesystem_options(beam_args)
    from pipeline.storage_check import check_storage_reachable

    paths = [getattr(args, name, None) for name in ("run", "run_a", "run_b", "baseline", "output")]
    check_storage_reachable([p for p in paths if isinstance(p, str)], beam_args)


def _run_reader(path: str):
    """How `load_run` reads `path`: Beam's filesystems for a bucket (they take the filesystem
    options given), pyarrow's for a local folder."""
    if "://" not in path:
        return None
    from transforms.storage import read_file_or_none

    return read_file_or_none


def _print_summary(manifest: dict) -> None:
    counts = manifest["counts"]
    _print(
        f"attributed {counts['records_attributed']} of {counts['records_read']} records "
        f"({counts['records_dead_lettered']} dead-lettered) in {manifest['timings']['total_seconds']:.1f} s"
    )
    for f in manifest["output"]["attributions"]:
        _print(f"  {f['path']}  ({f['rows']} rows)")
    for f in manifest["output"]["dead_letters"]:
        if f["rows"]:
            _print(f"  dead letters: {f['path']}  ({f['rows']} rows)")


def _quality_status(manifest: dict) -> int:
    """EXIT_QUALITY_LIMIT when the run's quality audit is past a --quality-limit (said in one line
    per limit), else 0."""
    limits = (manifest.get("quality") or {}).get("limits") or {}
    failed = {name: result for name, result in limits.items() if not result["passed"]}
    for name, result in failed.items():
        value = "not computed" if result["value"] is None else f"{result['value']:.4g}"
        _print(f"quality limit failed: {name} {value}, limit {result['limit']} (summary.json: quality)", file=sys.stderr)
    return EXIT_QUALITY_LIMIT if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    configure_logging(debug=bool(getattr(args, "debug", False)))
    try:
        if args.command == "demo":
            if beam_args:
                parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
            _import_tensorflow_without_sklearn()  # its start-up lines dropped, as for `run`
            from pipeline.demo import run_demo

            run_demo(args.output)
            return 0
        if args.command in ("compare", "report", "finalize"):
            _use_filesystem_flags_only(args, beam_args, parser)  # runs in buckets: --s3_endpoint_url ...
            return {"compare": _compare, "report": _report, "finalize": _finalize}[args.command](args)
        if args.config:  # Beam options from the YAML first, so that flags override them
            from pipeline.config import load_yaml_config

            beam_args = options_to_args(load_yaml_config(args.config).get("pipeline_options") or {}) + beam_args
        # Everything that can be checked without TensorFlow or Beam first: answers in a second.
        config = config_from_args(args)
        check_pipeline_flags_quickly(beam_args, parser)
        from pipeline.quick_checks import check_quickly

        check_quickly(config)  # a missing model, a local folder not ours, a mistyped column: before Beam and TensorFlow load
        check_pipeline_args(beam_args, parser)
        from pipeline.filesystem_options import use_filesystem_options
        from pipeline.output_dir import check_output
        from pipeline.storage_check import check_storage_reachable

        use_filesystem_options(beam_args)
        check_storage_reachable(config.paths(), beam_args)

        if args.dry_run:
            return _dry_run(args, config, beam_args)
        elif args.vcpu_hour_price is not None or args.gb_hour_price is not None:
            raise ValueError("--vcpu-hour-price and --gb-hour-price price the estimate of --dry-run; add --dry-run or drop them.")
        check_output(config.output, config.overwrite)  # the same for a folder in a bucket: said before TensorFlow loads
        _import_tensorflow_without_sklearn()
        from pipeline.run import run_attribution

        manifest = run_attribution(config, beam_args, wait=args.wait, progress=not args.quiet)
        if manifest["status"] == "submitted":
            _print(f"submitted to {manifest['runner']}: job {manifest['job_id']}" + (f"  {manifest['job_url']}" if manifest["job_url"] else ""))
            _print(f"when it has finished: attribution-pipeline finalize {config.output}")
            return 0
        _print_summary(manifest)
        _print(f"manifest: {config.output.rstrip('/')}/manifest.json")
        if config.summaries:
            output = shlex.quote(config.output.rstrip("/"))
            _print(f"report:   attribution-pipeline report {output} --out {output}/report.html")
        return _quality_status(manifest)
    except ValueError as error:
        if args.debug:
            raise
        _print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except RunFailedError as error:
        _print(f"error: {error}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except StorageUnavailableError as error:
        _print(f"error: {error}", file=sys.stderr)
        return EXIT_STORAGE_UNAVAILABLE


def _dry_run(args: argparse.Namespace, config, beam_args: list[str]) -> int:
    """`run --dry-run`: the launcher's checks, a timed sample, the estimate (pipeline.estimate)."""
    _import_tensorflow_without_sklearn()
    from pipeline.estimate import GB_HOUR_PRICE, VCPU_HOUR_PRICE, Prices, estimate_run, format_estimate

    prices = Prices(args.vcpu_hour_price if args.vcpu_hour_price is not None else VCPU_HOUR_PRICE,
                    args.gb_hour_price if args.gb_hour_price is not None else GB_HOUR_PRICE)
    for name, value in (("vcpu-hour-price", prices.vcpu_hour), ("gb-hour-price", prices.gb_hour)):
        if not (value >= 0 and value < float("inf")):
            raise ValueError(f"--{name} must be a price >= 0 in USD; got {value!r}.")
    _print(format_estimate(estimate_run(config, beam_args, prices)))
    return 0


# Imported by Keras at import time for features this program never uses: scikit-learn (and SciPy)
# for its scikit-learn wrappers, 1-3 s of every run's start when installed (the demo and test
# extras install it); matplotlib.pyplot for `keras.visualization`, 0.4 s.
_HIDDEN_DURING_KERAS_IMPORT = ("sklearn", "matplotlib")


def _import_tensorflow_without_sklearn() -> None:
    """Imports TensorFlow and Keras with scikit-learn and matplotlib hidden (see above). They are
    importable again afterwards (the report draws with matplotlib); only Keras' wrappers and
    visualization helpers, in this process, see them as missing."""
    if "tensorflow" in sys.modules:
        return
    hidden = [name for name in _HIDDEN_DURING_KERAS_IMPORT if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # makes `import name` raise ImportError
    try:
        with _tensorflow_start_up_lines_dropped():
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    finally:
        for name in hidden:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


# What TensorFlow's C++ side prints to stderr while it is imported, whatever TF_CPP_MIN_LOG_LEVEL
# says (absl logs before it is initialized): four lines before every answer, none about the run.
_TF_START_UP_LINES = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "port.cc:153] oneDNN custom operations are on",
    "cpu_feature_guard.cc",
    "To enable the following instructions:",
)


@contextlib.contextmanager
def _tensorflow_start_up_lines_dropped():
    """Captures file descriptor 2 while TensorFlow is imported and writes back every line but its
    known start-up lines (anything else, e.g. a real error, still reaches stderr)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(marker in line for marker in _TF_START_UP_LINES)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def run_program() -> None:
    """Entry point of the `attribution-pipeline` script and `python -m pipeline`.

    Exits without the interpreter's teardown, which TensorFlow and Beam's threads stretch to
    ~1.4 s here after the work is done; output streams and log handlers are flushed first. That
    also skips Beam's exit handlers, which stop the job servers and workers a runner started:
    whatever of those is still running is stopped here, so no process of ours outlives the command.
    """
    code = main()
    from pipeline.processes import stop_child_processes

    stop_child_processes()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
