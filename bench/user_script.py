#!/usr/bin/env python
"""The short script a user would write instead of the pipeline (issue #15's comparison point).

    python bench/user_script.py MODEL.keras INPUT.parquet OUTPUT.parquet [--rows-per-call 1024] [--steps 64]

Loads the Keras model, reads the Parquet file with pyarrow (float columns f0..f19, the model's
single input), computes integrated gradients of the predicted class against a baseline (zeros, or
the row in --baseline FILE.npy: bench/default_job.py passes the median row the pipeline's
default job used, from its manifest, so that both compute the same attributions) with
Gauss-Legendre quadrature (64 points) in one compiled tf.function over 1,024 rows per call, and
writes attr_f0..attr_f19 plus target and target_score as Parquet. Deliberately standalone (no
import from this repository): it is the baseline the pipeline's default job must beat.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--rows-per-call", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--baseline", default=None, help="a .npy file holding the baseline row (default zeros)")
    args = parser.parse_args()

    model = keras.saving.load_model(args.model)
    width = model.inputs[0].shape[-1]
    columns = [f"f{j}" for j in range(width)]
    table = pq.read_table(args.input, columns=columns)
    x = np.stack([table.column(c).to_numpy() for c in columns], axis=1).astype(np.float32)  # (N, F)

    baseline = np.load(args.baseline).astype(np.float32).reshape(width) if args.baseline else np.zeros(width, np.float32)
    base64 = tf.constant(baseline, tf.float64)  # (F,)
    nodes, weights = np.polynomial.legendre.leggauss(args.steps)
    alphas = tf.constant((nodes + 1) / 2, tf.float64)  # (S,) on [0, 1]
    weights = tf.constant(weights / 2, tf.float32)  # (S,) summing to 1

    @tf.function(input_signature=[tf.TensorSpec((None, width), tf.float32)])
    def integrated_gradients(batch):
        target = tf.argmax(model(batch, training=False), axis=1, output_type=tf.int32)  # (B,)
        # Interpolated in float64 and rounded once: on a ReLU net a point one float32 ulp across a
        # kink changes that point's gradient (seen: 6e-3 relative on 1 row in 20k).
        diff = tf.cast(batch, tf.float64) - base64  # (B, F)
        points = tf.cast(base64 + alphas[None, :, None] * diff[:, None, :], tf.float32)  # (B, S, F)
        flat = tf.reshape(points, (-1, width))  # (B*S, F)
        with tf.GradientTape() as tape:
            tape.watch(flat)
            out = model(flat, training=False)  # (B*S, C)
            score = tf.gather(out, tf.repeat(target, args.steps), axis=1, batch_dims=1)  # (B*S,)
        grads = tf.reshape(tape.gradient(score, flat), (-1, args.steps, width))  # (B, S, F)
        attributions = (batch - baseline) * tf.einsum("s,bsf->bf", weights, grads)  # (B, F)
        scores = tf.gather(model(batch, training=False), target, axis=1, batch_dims=1)  # (B,)
        return attributions, target, scores

    parts = [integrated_gradients(tf.constant(x[i : i + args.rows_per_call])) for i in range(0, len(x), args.rows_per_call)]
    attributions = np.concatenate([p[0].numpy() for p in parts])
    out = {"target": np.concatenate([p[1].numpy() for p in parts]), "target_score": np.concatenate([p[2].numpy() for p in parts])}
    out.update({f"attr_{c}": attributions[:, j] for j, c in enumerate(columns)})
    pq.write_table(pa.table(out), args.output)


if __name__ == "__main__":
    main()
