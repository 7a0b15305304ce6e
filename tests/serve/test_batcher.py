"""The micro-batcher: order, splitting, sharing of model calls, one call at a time, failure isolation."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from paravec.items import Item
from paravec.serve.batcher import BatchFailed, MicroBatcher


def reference_vector(item: Item) -> np.ndarray:
    """A vector that identifies its item: [number in the text, length of the text]."""
    return np.array([float(item.text.split()[-1]), len(item.text)], dtype=np.float32)


class RecordingEncoder:
    """Encodes with :func:`reference_vector`, recording batch sizes, threads and overlap of calls."""

    def __init__(self, delay_s: float = 0.0, poison: str | None = None) -> None:
        self.delay_s = delay_s
        self.poison = poison
        self.batch_sizes: list[int] = []
        self.threads: set[int] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def __call__(self, items: list[Item]) -> np.ndarray:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.threads.add(threading.get_ident())
            self.batch_sizes.append(len(items))
            time.sleep(self.delay_s)
            if self.poison is not None and any(item.text == self.poison for item in items):
                raise RuntimeError("poisoned batch")
            return np.stack([reference_vector(item) for item in items])
        finally:
            with self._lock:
                self.in_flight -= 1


def texts(prefix: str, count: int) -> list[Item]:
    return [Item(text=f"{prefix} {index}") for index in range(count)]


def expected(items: list[Item]) -> np.ndarray:
    return np.stack([reference_vector(item) for item in items])


def run(coroutine_factory):
    """Run a scenario; a lost request fails it by timeout instead of hanging the suite."""
    return asyncio.run(asyncio.wait_for(coroutine_factory(), timeout=30))


def test_large_request_is_split_and_reassembled_in_order():
    encoder = RecordingEncoder()
    batcher = MicroBatcher(encoder, max_batch_size=4, max_wait_s=0.001)
    items = texts("item", 11)

    async def scenario():
        try:
            return await batcher.embed(items)
        finally:
            await batcher.close()

    np.testing.assert_array_equal(run(scenario), expected(items))
    assert sorted(encoder.batch_sizes) == [3, 4, 4]
    assert batcher.stats.items == 11 and batcher.stats.batches == 3


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_vectors():
    encoder = RecordingEncoder(delay_s=0.02)
    batcher = MicroBatcher(encoder, max_batch_size=8, max_wait_s=0.05)
    requests = [texts(f"request{r}" + "x" * r, 1 + r % 3) for r in range(24)]

    async def scenario():
        try:
            return await asyncio.gather(*(batcher.embed(items) for items in requests))
        finally:
            await batcher.close()

    results = run(scenario)
    for items, vectors in zip(requests, results):
        np.testing.assert_array_equal(vectors, expected(items))
    total = sum(len(items) for items in requests)
    assert sum(encoder.batch_sizes) == total
    assert max(encoder.batch_sizes) <= 8
    assert len(encoder.batch_sizes) < len(requests)  # batching happened
    assert batcher.stats.as_dict()["largest_batch"] == max(encoder.batch_sizes)


def test_model_runs_in_one_worker_thread_one_call_at_a_time_and_the_loop_stays_free():
    encoder = RecordingEncoder(delay_s=0.05)
    batcher = MicroBatcher(encoder, max_batch_size=2, max_wait_s=0.0)

    async def scenario():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        try:
            await asyncio.gather(*(batcher.embed(texts(f"r{r}", 2)) for r in range(6)))
        finally:
            done.set()
            await tick_task
            await batcher.close()
        return ticks

    ticks = run(scenario)
    assert len(encoder.batch_sizes) == 6  # 6 calls of 50 ms each: 300 ms of model time
    assert ticks >= 20  # the event loop kept running while the model worked
    assert encoder.max_in_flight == 1
    assert len(encoder.threads) == 1 and threading.get_ident() not in encoder.threads


def test_a_lone_request_does_not_wait_for_company():
    encoder = RecordingEncoder()
    batcher = MicroBatcher(encoder, max_batch_size=8, max_wait_s=30.0)

    async def scenario():
        try:
            return await asyncio.wait_for(batcher.embed(texts("alone", 1)), timeout=5)
        finally:
            await batcher.close()

    run(scenario)
    assert encoder.batch_sizes == [1]


def test_a_batch_waits_for_an_announced_request():
    encoder = RecordingEncoder()
    batcher = MicroBatcher(encoder, max_batch_size=8, max_wait_s=30.0)

    async def scenario():
        try:
            with batcher.incoming():  # a second request is being received...
                first = asyncio.ensure_future(batcher.embed(texts("first", 1)))
                await asyncio.sleep(0.2)
                assert not first.done()  # ...so the first one waits for it
            second = await batcher.embed(texts("second", 2))
            return await first, second
        finally:
            await batcher.close()

    first, second = run(scenario)
    np.testing.assert_array_equal(second, expected(texts("second", 2)))
    assert encoder.batch_sizes == [3]


def test_a_batch_leaves_when_full_or_when_the_wait_is_over():
    encoder = RecordingEncoder()

    async def scenario(max_wait_s: float, count: int) -> float:
        batcher = MicroBatcher(encoder, max_batch_size=4, max_wait_s=max_wait_s)
        try:
            with batcher.incoming():  # announced, never arrives
                start = time.perf_counter()
                await asyncio.gather(*(batcher.embed(texts(f"r{r}", 1)) for r in range(count)))
                return time.perf_counter() - start
        finally:
            await batcher.close()

    assert run(lambda: scenario(30.0, count=4)) < 5  # full: no wait
    assert encoder.batch_sizes == [4]
    assert 0.25 <= run(lambda: scenario(0.25, count=2)) < 5  # not full: waits max_wait_s
    assert encoder.batch_sizes == [4, 2]


def test_a_failing_input_fails_only_its_own_request_and_the_batcher_keeps_going():
    encoder = RecordingEncoder(delay_s=0.01, poison="bad 0")
    batcher = MicroBatcher(encoder, max_batch_size=16, max_wait_s=0.05)
    good = [texts(f"good{r}", 2) for r in range(5)]

    async def scenario():
        try:
            outcomes = await asyncio.gather(
                *(batcher.embed(items) for items in good[:3]),
                batcher.embed([Item(text="bad 0")]),
                *(batcher.embed(items) for items in good[3:]),
                return_exceptions=True,
            )
            after = await batcher.embed(texts("after", 3))
            return outcomes, after
        finally:
            await batcher.close()

    outcomes, after = run(scenario)
    assert isinstance(outcomes[3], BatchFailed)
    assert "poisoned" not in str(outcomes[3])  # the cause stays in the server log
    for items, vectors in zip(good, outcomes[:3] + outcomes[4:]):
        np.testing.assert_array_equal(vectors, expected(items))
    np.testing.assert_array_equal(after, expected(texts("after", 3)))
    assert encoder.batch_sizes[0] == 11  # all six requests shared the first, failing call
    assert batcher.stats.failed_batches == 2  # that call, then the poisoned request alone


def test_close_fails_running_and_queued_requests_and_a_later_request_restarts_the_worker():
    encoder = RecordingEncoder(delay_s=0.2)
    batcher = MicroBatcher(encoder, max_batch_size=1, max_wait_s=0.0)

    async def scenario():
        running = asyncio.ensure_future(batcher.embed(texts("running", 1)))
        queued = asyncio.ensure_future(batcher.embed(texts("queued", 1)))
        await asyncio.sleep(0.05)
        await batcher.close()
        outcomes = await asyncio.gather(running, queued, return_exceptions=True)
        try:
            again = await asyncio.wait_for(batcher.embed(texts("again", 1)), timeout=5)
        finally:
            await batcher.close()
        return outcomes, again

    outcomes, again = run(scenario)
    assert [type(outcome) for outcome in outcomes] == [BatchFailed, BatchFailed]
    np.testing.assert_array_equal(again, expected(texts("again", 1)))


def test_wrong_output_shape_from_the_model_is_a_failure():
    batcher = MicroBatcher(lambda items: np.zeros((len(items) + 1, 2)), max_batch_size=4)

    async def scenario():
        try:
            await batcher.embed(texts("x", 2))
        finally:
            await batcher.close()

    with pytest.raises(BatchFailed):
        run(scenario)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(RecordingEncoder(), max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        MicroBatcher(RecordingEncoder(), max_wait_s=-1)
