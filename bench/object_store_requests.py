#!/usr/bin/env python
"""What a run over a bucket costs in requests and bytes, with Parquet pre-buffering on and off.

    python bench/object_store_requests.py                 # 1M rows, 2 rounds
    python bench/object_store_requests.py --rows 200000 --rounds 1

An S3 server (moto, the 'test' extra) runs in this process behind a WSGI layer that counts every
request by method and the bytes it sent and received. The same Parquet file (20 float32 columns,
the default job's shape) is written twice, with pyarrow's default row groups (1,048,576 rows) and
with 65,536-row groups, and is read:

* from the bucket: `--input s3://...`, output and model local, so the requests counted are the
  input's (a listing or two on the launcher, the footer reads, the row groups);
* from local disk, for the memory and time of the same modes.

Each run is a whole `python -m pipeline run --method gradient` process (plain gradient: the read
path weighs most); the table gives GET requests, MiB served, wall seconds and peak RSS per mode
(`--parquet-pre-buffer` / `--no-parquet-pre-buffer`). Writes bench/results/object_store_requests.md.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import sys
import tempfile
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from default_job import COLUMNS, build_model  # noqa: E402
from throughput import REPO, timed  # noqa: E402

BUCKET = "bench-requests"
MODES = {"pre-buffer on": "--parquet-pre-buffer", "pre-buffer off (1 MiB streams)": "--no-parquet-pre-buffer"}


class CountingApp:
    """WSGI middleware: requests by method, bytes received and sent."""

    def __init__(self, app):
        self._app, self._lock = app, threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.requests: collections.Counter = collections.Counter()
        self.bytes_sent = self.bytes_received = 0

    def __call__(self, environ, start_response):
        with self._lock:
            self.requests[environ["REQUEST_METHOD"]] += 1
            self.bytes_received += int(environ.get("CONTENT_LENGTH") or 0)
        body = self._app(environ, start_response)
        try:
            for chunk in body:
                with self._lock:
                    self.bytes_sent += len(chunk)
                yield chunk
        finally:
            if hasattr(body, "close"):
                body.close()


def start_s3_server() -> tuple[str, CountingApp]:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    counting = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, counting, True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", counting


def s3_flags(endpoint: str) -> list[str]:
    return ["--s3_endpoint_url", endpoint, "--s3_access_key_id", "bench", "--s3_secret_access_key", "bench",
            "--s3_region_name", "us-east-1"]


def write_data(path: str, rows: int, row_group_size: int) -> None:
    values = np.random.default_rng(0).normal(size=(rows, len(COLUMNS))).astype(np.float32)
    pq.write_table(pa.table({c: values[:, j] for j, c in enumerate(COLUMNS)}), path, row_group_size=row_group_size)


def run_once(model: str, data: str, output: str, flag: str, extra: list[str]) -> dict:
    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "pipeline", "run", "--model", model, "--input", data, "--output", output,
               "--method", "gradient", "--quiet", flag, *extra]
    return timed(command)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    import boto3

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    endpoint, counting = start_s3_server()
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                          region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    work = tempfile.mkdtemp(prefix="bench-requests-")
    rows_out = []
    try:
        model = os.path.join(work, "model.keras")
        build_model(model)
        for groups in (1_048_576, 65_536):
            local = os.path.join(work, f"data-{groups}.parquet")
            write_data(local, args.rows, groups)
            size_mib = os.path.getsize(local) / 2**20
            client.upload_file(local, BUCKET, f"in-{groups}/data.parquet")
            for name, flag in MODES.items():
                samples = []
                for _ in range(args.rounds):
                    counting.reset()
                    bucket = run_once(model, f"s3://{BUCKET}/in-{groups}/*.parquet", os.path.join(work, "out"), flag,
                                      s3_flags(endpoint))
                    requests, sent = dict(counting.requests), counting.bytes_sent
                    on_disk = run_once(model, local, os.path.join(work, "out"), flag, [])
                    samples.append((requests, sent, bucket, on_disk))
                requests, sent = samples[-1][0], samples[-1][1]
                row = {
                    "row_groups": groups, "mode": name, "file_mib": size_mib, "get": requests.get("GET", 0),
                    "requests": sum(requests.values()), "mib_sent": sent / 2**20,
                    "bucket_wall": [s[2]["wall_seconds"] for s in samples], "bucket_rss": [s[2]["peak_rss_mib"] for s in samples],
                    "local_wall": [s[3]["wall_seconds"] for s in samples], "local_rss": [s[3]["peak_rss_mib"] for s in samples],
                }
                rows_out.append(row)
                print(row, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [f"# Requests and bytes per run, Parquet pre-buffering on and off ({args.rows:,} rows x {len(COLUMNS)} float32, "
             f"plain gradient, {args.rounds} round(s); ranges are min-max)", "",
             "| row group rows | mode | file MiB | GET requests | all requests | MiB served | bucket wall s | bucket peak RSS MiB "
             "| local wall s | local peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    span = lambda v, f: f"{min(v):{f}}" if len(v) == 1 else f"{min(v):{f}}-{max(v):{f}}"  # noqa: E731
    for r in rows_out:
        lines.append(f"| {r['row_groups']:,} | {r['mode']} | {r['file_mib']:.1f} | {r['get']} | {r['requests']} | {r['mib_sent']:.1f} "
                     f"| {span(r['bucket_wall'], '.1f')} | {span(r['bucket_rss'], '.0f')} | {span(r['local_wall'], '.1f')} "
                     f"| {span(r['local_rss'], '.0f')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(os.path.join(BENCH, "results"), exist_ok=True)
    with open(os.path.join(BENCH, "results", "object_store_requests.md"), "w") as handle:
        handle.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
