"""Image columns: decoding, resizing and scaling (transforms.images), and image records in
decode_batch (transforms.records): the pixels against the originals, bad images dead-lettered."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from helpers import bilinear_resize
from pipeline.demo import encode_png
from transforms.images import ImageSpec, decode_images, image_spec, parse_image_flag
from transforms.records import ColumnSpec, FieldSpec, ModelInputSpec, RawBatch, RecordSchema, decode_batch


def _pixels(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_png_round_trip_is_exact_in_every_preset():
    images = [_pixels((8, 8, 3), seed) for seed in range(4)]
    encoded = [encode_png(i) for i in images]
    raw, _ = decode_images(encoded, ImageSpec(8, 8, 3, 1.0, 0.0))
    np.testing.assert_array_equal(raw, np.stack(images).astype(np.float32))  # PNG is lossless
    unit, reasons = decode_images(encoded, image_spec("c", {"size": [8, 8], "channels": 3}))
    assert reasons == {}
    np.testing.assert_array_equal(unit, np.stack(images).astype(np.float32) * np.float32(1 / 255))
    symmetric, _ = decode_images(encoded, image_spec("c", {"size": [8, 8], "channels": 3, "preset": "symmetric"}))
    np.testing.assert_array_equal(symmetric, np.stack(images).astype(np.float32) * np.float32(1 / 127.5) + np.float32(-1.0))


def test_jpeg_decodes_within_the_codecs_loss():
    import tensorflow as tf

    y, x = np.mgrid[0:32, 0:32]
    smooth = np.stack([(y * 8) % 256, (x * 8) % 256, ((x + y) * 4) % 256], axis=-1).astype(np.uint8)  # (32, 32, 3)
    jpeg = tf.io.encode_jpeg(smooth, quality=95).numpy()
    pixels, reasons = decode_images([jpeg], ImageSpec(32, 32, 3, 1.0, 0.0))
    assert reasons == {}
    error = np.abs(pixels[0] - smooth.astype(np.float32))
    assert error.mean() < 3.0 and error.max() < 40.0, (error.mean(), error.max())


@pytest.mark.parametrize("size", [(5, 7), (16, 12)])
def test_resizing_is_bilinear_with_half_pixel_centers(size):
    import tensorflow as tf

    image = _pixels((10, 9, 1), 3)
    pixels, _ = decode_images([encode_png(image)], ImageSpec(*size, 1, 1 / 255, 0.25))
    expected = bilinear_resize(image.astype(np.float64), *size) / 255 + 0.25  # written out in numpy
    np.testing.assert_allclose(pixels[0], expected, rtol=1e-5, atol=1e-6)
    resized = tf.image.resize(image.astype(np.float32), size, method="bilinear").numpy() * np.float32(1 / 255) + np.float32(0.25)
    np.testing.assert_allclose(pixels[0], resized, rtol=1e-6, atol=1e-7)


def test_undecodable_and_wrong_channel_images_get_a_reason_and_the_rest_decode():
    images = [_pixels((6, 6, 1), seed) for seed in range(5)]
    encoded = [encode_png(i) for i in images]
    encoded[1] = b"not an image at all"
    encoded[2] = encoded[2][:40]  # truncated PNG
    encoded[4] = encode_png(_pixels((6, 6, 3), 9))  # RGB where grey is expected
    pixels, reasons = decode_images(encoded, ImageSpec(6, 6, 1, 1.0, 0.0))
    assert sorted(reasons) == [1, 2, 4]
    assert reasons[1].startswith("is not a decodable image (Unknown image file format")
    assert reasons[2].startswith("is not a decodable image (")
    assert reasons[4] == "image has 3 channel(s), expected 1"
    for i in (0, 3):
        np.testing.assert_array_equal(pixels[i], images[i].astype(np.float32))
    assert not pixels[[1, 2, 4]].any()


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"size": [8, 8], "channels": 1, "colour": "rgb"}, r"unknown key\(s\) \['colour'\]; expected \['size', 'channels'"),
        ({"size": [8], "channels": 1}, r"size must be \[HEIGHT, WIDTH\].*got \[8\]"),
        ({"size": [8, 8], "channels": 5}, r"channels must be 1 \(grey\).*got 5"),
        ({"size": [8, 8], "channels": 1, "preset": "unit", "scale": 2}, "gives both preset 'unit' and scale/offset; keep one"),
        ({"size": [8, 8], "channels": 1, "preset": "imagenet"}, r"preset 'imagenet' is not valid; expected one of \['unit', 'symmetric', 'raw'\]"),
        ({"size": [8, 8], "channels": 1, "scale": float("nan")}, r"scale must be a finite number.*got nan"),
        ("28x28", "must be a mapping like"),
    ],
)
def test_image_settings_are_checked_with_the_fix(entry, message):
    with pytest.raises(ValueError, match=message):
        image_spec("image/encoded", entry)


def test_the_image_flag_forms():
    assert parse_image_flag("image/encoded:28x28x1") == ("image/encoded", {"size": [28, 28], "channels": 1})
    assert parse_image_flag("img:224x200x3:symmetric") == ("img", {"size": [224, 200], "channels": 3, "preset": "symmetric"})
    assert parse_image_flag("a:b:4x4x1:0.5,-1") == ("a:b", {"size": [4, 4], "channels": 1, "scale": 0.5, "offset": -1.0})
    with pytest.raises(ValueError, match=r"--image expects COLUMN:HxWxC.*got 'img:28x28'"):
        parse_image_flag("img:28x28")
    with pytest.raises(ValueError, match="SCALE,OFFSET must be two numbers"):
        parse_image_flag("img:2x2x1:a,b")


def _image_schema(input_format: str, spec: ImageSpec) -> RecordSchema:
    column = ColumnSpec("image/encoded", spec.height * spec.width * spec.channels, True, "bytes_list", image=spec)
    key = FieldSpec("id", pa.string(), "bytes_list")
    return RecordSchema(input_format, (ModelInputSpec("pixels", spec.shape, (column,)),), key=key, key_name="id")


def test_a_tfrecord_batch_of_images_decodes_and_dead_letters_the_bad_ones(tmp_path):
    from pipeline.demo import write_image_tfrecord
    from transforms.read import read_all

    images = [_pixels((4, 4, 1), seed) for seed in range(6)]
    encoded = [encode_png(i) for i in images]
    encoded[3] = encoded[3][:30]  # a PNG cut short
    path = write_image_tfrecord(tmp_path / "images.tfrecord", encoded, ids=[f"r{i}" for i in range(6)])
    spec = ImageSpec(4, 4, 1, 1.0, 0.0)
    schema = _image_schema("tfrecord", spec)
    decoded, dead = zip(*(decode_batch(raw, schema) for raw in read_all(path, schema)))
    good = [d for d in decoded if d is not None]
    letters = [letter for batch in dead for letter in batch]
    assert sum(d.num_records for d in good) + len(letters) == 6
    assert [(d.key, d.error) for d in letters] == [("r3", "column 'image/encoded' is not a decodable image (Invalid PNG. Failed to initialize decoder.)")]
    keys = [k for d in good for k in d.keys.to_pylist()]
    pixels = np.concatenate([d.inputs[0] for d in good])
    assert keys == ["r0", "r1", "r2", "r4", "r5"]
    np.testing.assert_array_equal(pixels, np.stack([images[i] for i in (0, 1, 2, 4, 5)]).astype(np.float32))


def test_a_parquet_binary_column_of_images_decodes_and_dead_letters_null_and_bad_images():
    images = [_pixels((3, 5, 3), seed) for seed in range(5)]
    encoded = [encode_png(i) for i in images]
    encoded[1] = None
    encoded[2] = encode_png(_pixels((3, 5, 1), 7))  # grey where RGB is expected
    table = pa.table({"id": [f"p{i}" for i in range(5)], "image/encoded": pa.array(encoded, pa.binary())})
    spec = ImageSpec(3, 5, 3, 1 / 255, 0.0)
    decoded, dead = decode_batch(RawBatch("f.parquet", "f.parquet", 0, table=table), _image_schema("parquet", spec))
    assert [(d.key, d.error) for d in dead] == [
        ("p1", "column 'image/encoded' is null"),
        ("p2", "column 'image/encoded' image has 1 channel(s), expected 3"),
    ]
    assert json.loads(dead[0].record)["id"] == "p1"
    assert decoded.keys.to_pylist() == ["p0", "p3", "p4"]
    expected = np.stack([images[i] for i in (0, 3, 4)]).astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(decoded.inputs[0], expected)


def test_bad_images_anywhere_in_a_large_batch_are_all_found_and_the_rest_decoded_exactly():
    images = [_pixels((4, 4, 1), seed) for seed in range(37)]
    encoded = [encode_png(i) for i in images]
    bad = [0, 17, 18, 36]
    for i in bad:
        encoded[i] = b"junk %d" % i
    pixels, reasons = decode_images(encoded, ImageSpec(4, 4, 1, 1.0, 0.0))
    assert sorted(reasons) == bad
    good = [i for i in range(37) if i not in bad]
    np.testing.assert_array_equal(pixels[good], np.stack([images[i] for i in good]).astype(np.float32))


def _png_header_only(width: int, height: int) -> bytes:
    """A small PNG whose header declares width x height (its pixel data is one short row)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_image_over_the_pixel_limit_by_its_header_is_refused_before_decoding():
    """A 20000 x 20000 PNG of a few hundred bytes took 2.84 GB to decode: it is dead-lettered from its header."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    good = encode_png(_pixels((8, 8, 1)))
    pixels, reasons = decode_images([good, _png_header_only(20000, 20000), good], ImageSpec(8, 8, 1, 1.0, 0.0))
    assert reasons == {1: "image is 20000 x 20000 pixels by its header (400,000,000), over the limit of 67,108,864 decoded "
                          "pixels; not decoded"}
    assert (pixels[1] == 0).all() and (pixels[0] == pixels[2]).all() and pixels[0].any()
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 400_000_000  # far from 400 MB of pixels


def test_header_sizes_of_every_format_match_what_they_declare():
    import struct

    import tensorflow as tf

    from transforms.images import _header_size

    def riff(chunk: bytes, payload: bytes) -> bytes:
        return b"RIFF" + struct.pack("<I", 100) + b"WEBP" + chunk + struct.pack("<I", 10) + payload + b"\0" * 16

    vp8l_bits = (999 - 1) | ((700 - 1) << 14)  # 14 bits width-1, 14 bits height-1
    declared = {
        "png": (_png_header_only(300, 200), (200, 300)),
        "jpeg": (tf.io.encode_jpeg(np.zeros((40, 50, 3), np.uint8)).numpy(), (40, 50)),
        "gif": (b"GIF89a" + struct.pack("<HH", 700, 500) + b"\0" * 30, (500, 700)),
        "bmp, top-down": (b"BM" + b"\0" * 16 + struct.pack("<ii", 300, -200) + b"\0" * 30, (200, 300)),
        "webp VP8X": (riff(b"VP8X", b"\0" * 4 + (40000 - 1).to_bytes(3, "little") + (30000 - 1).to_bytes(3, "little")), (30000, 40000)),
        "webp VP8": (riff(b"VP8 ", b"\0" * 6 + struct.pack("<HH", 640, 480)), (480, 640)),
        "webp VP8L": (riff(b"VP8L", b"\x2f" + vp8l_bits.to_bytes(4, "little")), (700, 999)),
        "unknown": (b"not an image", (0, 0)),
    }
    for name, (data, size) in declared.items():
        assert tuple(_header_size(tf, tf.constant(data)).numpy()) == size, name
