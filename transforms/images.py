"""Image columns: encoded JPEG/PNG (GIF, BMP, WebP) bytes decoded, resized and scaled into a model
input, a whole batch per call (no Beam).

A column named in the config's `images` section (or by `--image`) holds one encoded image per
record: a TFRecord bytes feature (the usual layout: `image/encoded`) or a Parquet binary column.
Each image is decoded at its own channel count, resized to (H, W) with bilinear interpolation
(`tf.image.resize`, half-pixel centers, no antialiasing; an image already H x W is not resampled)
and scaled:

    pixel = resize(decoded uint8 values as float32) * scale + offset        float32 (H, W, C)

Presets name the usual (scale, offset): `unit` [0, 1] (1/255, 0; the default), `symmetric`
[-1, 1] (1/127.5, -1), `raw` [0, 255] (1, 0). An image with another channel count than C, or bytes
that do not decode, dead-letters its record with the reason; see `decode_images`.

An image is measured from its header before it is decoded (PNG, GIF, BMP, WebP from their fixed
fields, JPEG with `tf.image.extract_jpeg_shape`): one over MAX_DECODED_PIXELS is dead-lettered
without being decoded (a 23 KB PNG declaring 20000 x 20000 pixels took 2.84 GB of memory).
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["ImageSpec", "PRESETS", "DEFAULT_PRESET", "image_spec", "parse_image_flag", "decode_images"]

PRESETS: dict[str, tuple[float, float]] = {"unit": (1 / 255, 0.0), "symmetric": (1 / 127.5, -1.0), "raw": (1.0, 0.0)}
DEFAULT_PRESET = "unit"
MAX_SIDE = 8192  # a (8192, 8192, 4) float32 image is 1 GiB: larger would not fit a batch
# Largest image decoded (8192 x 8192, 256 MiB as uint8 RGBA); larger ones are refused from their header.
MAX_DECODED_PIXELS = 8192 * 8192
_KEYS = ("size", "channels", "scale", "offset", "preset")
_FLAG = re.compile(r"^(?P<column>.+):(?P<h>\d+)x(?P<w>\d+)x(?P<c>\d+)(?::(?P<rest>[^:]+))?$")
_FLAG_FORM = "COLUMN:HxWxC, COLUMN:HxWxC:PRESET or COLUMN:HxWxC:SCALE,OFFSET (e.g. image/encoded:28x28x1:unit)"


@dataclass(frozen=True)
class ImageSpec:
    """How one image column becomes a model input: (height, width, channels) after decoding and
    resizing, and pixel = value * scale + offset (value: 0..255 as float32)."""

    height: int
    width: int
    channels: int
    scale: float
    offset: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def describe(self) -> dict[str, Any]:
        """The YAML/JSON form (`image_spec` reads it back)."""
        return {"size": [self.height, self.width], "channels": self.channels, "scale": self.scale, "offset": self.offset}


def image_spec(column: str, value: Any) -> ImageSpec:
    """An `images:` entry ({size: [H, W], channels: C, scale/offset or preset}) -> ImageSpec.
    Raises ValueError naming the column, the value seen and the fix."""
    if isinstance(value, ImageSpec):
        return value
    where = f"images[{column!r}]"
    example = "{size: [28, 28], channels: 1, preset: unit} or {size: [224, 224], channels: 3, scale: 0.00784, offset: -1}"
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping like {example}; got {value!r}.")
    unknown = sorted(set(value) - set(_KEYS))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; expected {list(_KEYS)}, e.g. {example}.")
    size = value.get("size")
    if (
        not isinstance(size, (list, tuple)) or len(size) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIDE for s in size)
    ):
        raise ValueError(f"{where}.size must be [HEIGHT, WIDTH], two integers in 1..{MAX_SIDE}; got {size!r}.")
    channels = value.get("channels")
    if isinstance(channels, bool) or channels not in (1, 2, 3, 4):
        raise ValueError(f"{where}.channels must be 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); got {channels!r}.")
    preset = value.get("preset")
    if preset is not None and ("scale" in value or "offset" in value):
        raise ValueError(f"{where} gives both preset {preset!r} and scale/offset; keep one (a preset is a named scale and offset).")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"{where}.preset {preset!r} is not valid; expected one of {list(PRESETS)} ({_preset_help()}).")
    scale, offset = PRESETS[preset or DEFAULT_PRESET]
    scale, offset = value.get("scale", scale), value.get("offset", offset)
    for name, number in (("scale", scale), ("offset", offset)):
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise ValueError(f"{where}.{name} must be a finite number (pixel = value * scale + offset); got {number!r}.")
    if scale == 0:
        raise ValueError(f"{where}.scale is 0: every pixel would be the offset and every gradient meaningless; use e.g. 1/255.")
    return ImageSpec(int(size[0]), int(size[1]), int(channels), float(scale), float(offset))


def parse_image_flag(text: str) -> tuple[str, dict[str, Any]]:
    """`--image COLUMN:HxWxC[:PRESET | :SCALE,OFFSET]` -> (column, the `images:` entry)."""
    match = _FLAG.match(text)
    if not match:
        raise ValueError(f"--image expects {_FLAG_FORM}; got {text!r}.")
    entry: dict[str, Any] = {"size": [int(match["h"]), int(match["w"])], "channels": int(match["c"])}
    rest = match["rest"]
    if rest is not None and "," in rest:
        scale, _, offset = rest.partition(",")
        try:
            entry.update(scale=float(scale), offset=float(offset))
        except ValueError:
            raise ValueError(f"--image {text!r}: SCALE,OFFSET must be two numbers (e.g. 0.00392,0); got {rest!r}.") from None
    elif rest is not None:
        entry["preset"] = rest
    return match["column"], entry


def _preset_help() -> str:
    return ", ".join(f"{name}: scale {s:.6g}, offset {o:g}" for name, (s, o) in PRESETS.items())


@functools.lru_cache(maxsize=16)
def _batch_decoder(spec: ImageSpec):
    """The compiled decoder of one spec: string (n,) -> (pixels float32 (n, H, W, C), channels
    int32 (n,)); an image whose channel count is not C gives zeros and its own count."""
    import tensorflow as tf

    height, width, channels = spec.shape

    def decoded(data):
        image = tf.io.decode_image(data, channels=0, dtype=tf.uint8, expand_animations=False)  # (h, w, c)
        found = tf.shape(image)[2]

        def fitted():
            h, w = tf.shape(image)[0], tf.shape(image)[1]
            x = tf.cast(tf.reshape(image, [h, w, channels]), tf.float32)  # (h, w, C)
            x = tf.cond(
                (h == height) & (w == width),
                lambda: x,  # resampling at the same size would be the identity: skip it
                lambda: tf.image.resize(x, (height, width), method="bilinear"),
            )
            return tf.reshape(x, [height, width, channels]) * tf.constant(spec.scale, tf.float32) + tf.constant(spec.offset, tf.float32)

        pixels = tf.cond(tf.equal(found, channels), fitted, lambda: tf.zeros([height, width, channels], tf.float32))
        return pixels, found

    def one(data):
        size = _header_size(tf, data)  # int64 (2,): (height, width) from the header, (0, 0) if unknown
        too_large = size[0] * size[1] > MAX_DECODED_PIXELS
        pixels, found = tf.cond(too_large, lambda: (tf.zeros([height, width, channels], tf.float32), tf.constant(-1)),
                                lambda: decoded(data))
        return pixels, found, size

    @tf.function(input_signature=[tf.TensorSpec((None,), tf.string)])
    def decode(encoded):
        return tf.map_fn(
            one, encoded,
            fn_output_signature=(tf.TensorSpec((height, width, channels), tf.float32), tf.TensorSpec((), tf.int32),
                                 tf.TensorSpec((2,), tf.int64)),
        )

    return decode


def _header_size(tf, data):
    """(height, width) int64 that an encoded image's header declares; (0, 0) for an unknown format."""
    head = tf.strings.substr(tf.strings.join([data, tf.constant(b"\0" * 32)]), 0, 32)  # never shorter than 32 bytes
    raw = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)  # (32,)

    def little(start, count):
        return sum(raw[start + i] * (256**i) for i in range(count))

    def big(start, count):
        return sum(raw[start + i] * (256 ** (count - 1 - i)) for i in range(count))

    def field(start, count):
        return tf.strings.substr(head, start, count)

    def signed32(value):
        return tf.abs(tf.where(value >= 2**31, value - 2**32, value))  # BMP: a negative height is top-down

    webp = tf.equal(field(0, 4), b"RIFF") & tf.equal(field(8, 4), b"WEBP")
    formats = [  # (is this format, (height, width))
        (tf.equal(field(0, 8), b"\x89PNG\r\n\x1a\n"), (big(20, 4), big(16, 4))),
        (tf.equal(field(0, 4), b"GIF8"), (little(8, 2), little(6, 2))),
        (tf.equal(field(0, 2), b"BM"), (signed32(little(22, 4)), signed32(little(18, 4)))),
        (webp & tf.equal(field(12, 4), b"VP8X"), (little(27, 3) + 1, little(24, 3) + 1)),
        (webp & tf.equal(field(12, 4), b"VP8 "), (little(28, 2) % 16384, little(26, 2) % 16384)),
        (webp & tf.equal(field(12, 4), b"VP8L"),
         ((raw[22] // 64 + raw[23] * 4 + (raw[24] % 16) * 1024) + 1, (raw[21] + (raw[22] % 64) * 256) + 1)),
    ]
    size = tf.constant([0, 0], tf.int64)
    for is_format, (h, w) in reversed(formats):
        size = tf.where(is_format, tf.stack([h, w]), size)
    is_jpeg = tf.equal(field(0, 2), b"\xff\xd8")
    return tf.cond(is_jpeg, lambda: tf.cast(tf.image.extract_jpeg_shape(data)[:2], tf.int64), lambda: size)


def decode_images(encoded: Sequence[bytes], spec: ImageSpec) -> tuple[np.ndarray, dict[int, str]]:
    """Decodes, resizes and scales a batch of encoded images (module docstring).

    encoded: (n,) bytes (a list, an object array or a tf.string tensor).
    Returns (pixels float32 (n, H, W, C), {index: reason} for the images that could not be used;
    their pixels are 0). The batch is decoded in one compiled call; only when an image in it does
    not decode is it split to find which.
    """
    import tensorflow as tf

    decode = _batch_decoder(spec)
    n = len(encoded)
    if n == 0:
        return np.zeros((0, *spec.shape), np.float32), {}
    tensor = encoded if isinstance(encoded, tf.Tensor) else tf.constant(list(encoded), tf.string)
    pixels = np.zeros((n, *spec.shape), np.float32)
    found = np.full(n, spec.channels, np.int32)
    sizes = np.zeros((n, 2), np.int64)
    reasons: dict[int, str] = {}
    # The whole batch in one call; a range holding an image that does not decode is halved until
    # that image is alone: about 2 log2(n) calls per bad image, instead of n calls one by one.
    pending = [(0, n)]
    while pending:
        start, end = pending.pop()
        try:
            part_pixels, part_found, part_sizes = decode(tensor[start:end])
        except tf.errors.InvalidArgumentError as error:
            if end - start == 1:
                reasons[start] = f"is not a decodable image ({_reason(error.message)})"
            else:
                middle = (start + end) // 2
                pending += [(middle, end), (start, middle)]
            continue
        pixels[start:end], found[start:end], sizes[start:end] = part_pixels.numpy(), part_found.numpy(), part_sizes.numpy()
    for i in np.flatnonzero(found == -1):
        h, w = (int(v) for v in sizes[i])
        reasons[int(i)] = (f"image is {h} x {w} pixels by its header ({h * w:,}), over the limit of {MAX_DECODED_PIXELS:,} "
                           f"decoded pixels; not decoded")
    for i in np.flatnonzero(found != spec.channels):
        reasons.setdefault(int(i), f"image has {found[i]} channel(s), expected {spec.channels}")
    return pixels, reasons


def _reason(message: str) -> str:
    """TensorFlow's reason in an error message, without the graph's trace ('Graph execution
    error', 'Detected at node', 'File ...', '[[{{node ...}}]]')."""
    noise = ("Graph execution error", "Detected at node", "File ", "[[")
    lines = [line.strip() for line in message.splitlines()]
    lines = [re.sub(r"\s*\[\[.*$|\s*\[Op:.*$|\{\{function_node [^}]*\}\}\s*", "", line) for line in lines if line and not line.startswith(noise)]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "unknown error"
