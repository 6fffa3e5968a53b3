#!/usr/bin/env python
"""What checking TFRecord length headers before TensorFlow reads them costs (transforms.tfrecord_lengths).

    python bench/tfrecord_scan.py                 # 1,000,000 records of 20 floats, plain and GZIP
    python bench/tfrecord_scan.py --records 100000

Writes one file of tf.train.Example records (a 20-float 'features' list and a bytes 'id': the
bench MLP's shape), then times, interleaved over 3 rounds (medians): the header scan, TensorFlow's
own read of the same file in 4,096-record batches (what the pipeline does after the scan), and
`read_tfrecord_file` (scan + read). Prints the scan's share of the read, per file kind.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(path: str, records: int) -> None:
    import numpy as np
    import tensorflow as tf

    values = np.random.default_rng(0).normal(size=(records, 20)).astype(np.float32)
    with tf.io.TFRecordWriter(path) as writer:
        for i, row in enumerate(values):
            features = {"features": tf.train.Feature(float_list=tf.train.FloatList(value=row)),
                        "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(i).encode()]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())


def _tensorflow_read(path: str, compression: str) -> int:
    import tensorflow as tf

    return sum(int(batch.shape[0]) for batch in tf.data.TFRecordDataset([path], compression).batch(4096))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from transforms.read import read_tfrecord_file
    from transforms.tfrecord_lengths import first_impossible_length

    with tempfile.TemporaryDirectory() as folder:
        plain = os.path.join(folder, "data.tfrecord")
        _write(plain, args.records)
        compressed = plain + ".gz"
        with open(plain, "rb") as source, gzip.open(compressed, "wb", compresslevel=6) as target:
            target.write(source.read())
        for path, compression in ((plain, ""), (compressed, "GZIP")):
            times: dict[str, list[float]] = {"scan": [], "tensorflow": [], "read_tfrecord_file": []}
            for _ in range(args.rounds):
                for name, run in (("scan", lambda: first_impossible_length(path, compression)),
                                  ("tensorflow", lambda: _tensorflow_read(path, compression)),
                                  ("read_tfrecord_file", lambda: sum(b.num_records for b in read_tfrecord_file(path, "k", 4096)))):
                    start = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - start)
            median = {name: statistics.median(values) for name, values in times.items()}
            kind = "GZIP" if compression else "plain"
            print(f"{kind}: {args.records:,} records, {os.path.getsize(path) / 2**20:.0f} MiB: scan {median['scan']:.2f} s, "
                  f"TensorFlow's read {median['tensorflow']:.2f} s, read_tfrecord_file {median['read_tfrecord_file']:.2f} s; "
                  f"scan / TensorFlow's read = {median['scan'] / median['tensorflow']:.2f} "
                  f"({args.rounds} interleaved rounds, medians)")


if __name__ == "__main__":
    main()
