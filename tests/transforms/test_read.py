import threading

import pytest

from transforms.read import detect_format, key_prefixes, prefetched


def test_prefetched_yields_everything_in_order():
    assert list(prefetched(iter(range(50)), depth=3)) == list(range(50))


def test_prefetched_reraises_the_producers_error_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetched(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_prefetched_stops_its_thread_when_the_consumer_stops_early():
    before = threading.active_count()
    generator = prefetched(iter(range(10_000)), depth=2)
    assert next(generator) == 0
    generator.close()
    assert threading.active_count() == before


def test_format_from_extensions_and_mixed_input_is_refused():
    assert detect_format(["a.parquet", "b.pq"], "auto") == "parquet"
    assert detect_format(["a.tfrecord"], "auto") == "tfrecord"
    assert detect_format(["a.bin"], "tfrecord") == "tfrecord"
    with pytest.raises(ValueError, match="mixes Parquet and TFRecord"):
        detect_format(["a.parquet", "b.tfrecord"], "auto")


def test_key_prefixes_are_paths_below_the_common_directory():
    assert key_prefixes(["/d/x/a.parquet", "/d/y/a.parquet"]) == {"/d/x/a.parquet": "x/a.parquet", "/d/y/a.parquet": "y/a.parquet"}
    assert key_prefixes(["/d/x/a.parquet"]) == {"/d/x/a.parquet": "a.parquet"}
