"""Gradient calls side by side (attributions.concurrency): same results as one call at a time, in
order, bounded in flight, failures re-raised."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tensorflow as tf

from attributions.concurrency import ordered_map, split_rows
from attributions.expected_gradients import expected_gradients
from attributions.gradient import gradient
from attributions.integrated_gradients import integrated_gradients
from attributions.model_functions import build_model_functions
from attributions.smoothgrad import smoothgrad

W1 = tf.constant(np.random.default_rng(0).normal(size=(5, 16)), tf.float32)
W2 = tf.constant(np.random.default_rng(1).normal(size=(16, 3)), tf.float32)


def relu_net(calls: int):
    """x (B, 5) -> relu(x W1) W2, (B, 3), with `calls` calls at once."""
    return build_model_functions(lambda x: tf.nn.relu(x[0] @ W1) @ W2, [(5,)], 3, concurrent_calls=calls)


@pytest.fixture(scope="module")
def nets():
    return relu_net(1), relu_net(2), relu_net(3)


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(2).normal(size=(37, 5)).astype(np.float32)


def test_split_rows_halves_the_chunk_until_every_call_has_rows():
    assert split_rows(4096, 1024, 2) == 1024  # 4 calls already
    assert split_rows(1024, 1024, 2) == 512
    assert split_rows(10, 1024, 2) == 8  # 8 + 2
    assert split_rows(1, 1024, 4) == 1
    assert split_rows(100, 1024, 1) == 1024  # one thread: the chunk as given


def test_a_batch_shares_the_threads_with_the_batches_attributed_beside_it(nets, rows):
    from dataclasses import replace

    one, two, _ = nets
    assert two.rows_per_call(4096, 65536) == 2048  # alone: a call per thread
    beside_another = replace(two, calls_per_batch=1)  # two batches at once fill both threads
    assert beside_another.rows_per_call(4096, 65536) >= 4096  # the whole batch in one call
    targets = np.zeros(len(rows), np.int32)
    np.testing.assert_array_equal(gradient(beside_another, [rows], targets, 8).attributions[0], gradient(one, [rows], targets, 8).attributions[0])


def test_ordered_map_keeps_the_order_and_bounds_what_runs_at_once():
    running, most = 0, 0
    lock = threading.Lock()

    def work(i):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01 * (i % 3))  # later items often finish first
        with lock:
            running -= 1
        return i * i

    with ThreadPoolExecutor(4) as executor:
        assert list(ordered_map(work, range(12), executor, 2)) == [i * i for i in range(12)]
    assert most == 2


def test_ordered_map_reraises_a_failure_and_runs_inline_without_an_executor():
    def work(i):
        if i == 3:
            raise ValueError("item 3 is bad")
        return i

    with ThreadPoolExecutor(2) as executor, pytest.raises(ValueError, match="item 3"):
        list(ordered_map(work, range(6), executor, 2))
    caller = threading.get_ident()
    assert list(ordered_map(lambda i: threading.get_ident() == caller, range(3), None, 2)) == [True] * 3


def test_every_method_gives_the_same_values_with_calls_side_by_side(nets, rows):
    """Chunks of 8 examples: the 37 rows split the same way for 1, 2 and 3 threads, so each call
    sees the same rows and the values are bit for bit those of one call at a time."""
    targets = np.arange(len(rows), dtype=np.int32) % 3
    seeds = np.arange(len(rows), dtype=np.uint64)
    background = rows[:7] * 0.5
    results = []
    for fns in nets:
        results.append([
            gradient(fns, [rows], targets, chunk_size=8).attributions[0],
            integrated_gradients(fns, [rows], [np.zeros(5, np.float32)], targets, steps=16, chunk_size=8 * 16).attributions[0],
            smoothgrad(fns, [rows], targets, seeds, samples=10, chunk_size=8 * 10).attributions[0],
            expected_gradients(fns, [rows], [background], targets, seeds, samples=10, chunk_size=8 * 10).attributions[0],
            fns.predict([rows], chunk_size=8),
        ])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_a_batch_smaller_than_the_chunk_still_matches_one_call(nets, rows):
    """With 2 threads the 37 rows go in calls of 32 and 5 instead of one of 37: same values to
    float32 rounding (each row's values depend only on its own inputs)."""
    one, two, _ = nets
    targets = np.zeros(len(rows), np.int32)
    a = integrated_gradients(one, [rows], [np.zeros(5, np.float32)], targets, steps=16, chunk_size=4096 * 16)
    b = integrated_gradients(two, [rows], [np.zeros(5, np.float32)], targets, steps=16, chunk_size=4096 * 16)
    np.testing.assert_allclose(b.attributions[0], a.attributions[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(two.predict([rows], 4096), one.predict([rows], 4096), rtol=1e-6, atol=1e-7)
