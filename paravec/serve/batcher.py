"""Micro-batching: concurrent requests share forward passes, one model call at a time.

A model on a CPU or GPU embeds 32 inputs in far less than 32 times the cost of one, so requests
that arrive close together are queued and embedded together: a batch is sent to the model when it
holds ``max_batch_size`` items or when its first request has waited ``max_wait_s``. While the model
runs, new requests keep queueing, so under load batches fill without any waiting.

The wait is only spent on requests known to be on their way: the server announces each request
while its body is read and parsed (:meth:`MicroBatcher.incoming`). With nothing on its way, a
batch leaves at once, so a lone client pays no batching delay.

The model runs in one dedicated worker thread: the event loop stays free to accept and parse
requests, and the embedder, which is not assumed thread-safe, never sees two calls at once.
A request larger than ``max_batch_size`` is split into chunks that may ride in different batches;
its vectors are put back together in input order.

If a batch fails, each request in it is retried alone, so a bad input fails its own request
(:class:`BatchFailed`) and no other.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from paravec.items import Item

logger = logging.getLogger(__name__)

EncodeFn = Callable[[list[Item]], np.ndarray]


class BatchFailed(Exception):
    """The model raised on a request's inputs; the cause is logged, not sent to the client."""


@dataclass
class BatchStats:
    """Counters of model calls, exposed by ``GET /health`` to show that batching happens."""

    batches: int = 0
    items: int = 0
    failed_batches: int = 0
    size_counts: Counter = field(default_factory=Counter)

    def record(self, size: int, ok: bool) -> None:
        self.batches += 1
        self.items += size
        self.size_counts[size] += 1
        if not ok:
            self.failed_batches += 1

    def as_dict(self) -> dict:
        return {
            "batches": self.batches,
            "items": self.items,
            "failed_batches": self.failed_batches,
            "largest_batch": max(self.size_counts, default=0),
            "mean_batch_size": self.items / self.batches if self.batches else 0.0,
            "batch_sizes": {str(size): count for size, count in sorted(self.size_counts.items())},
        }


@dataclass
class _Chunk:
    """Consecutive items of one request, answered through ``future``."""

    items: list[Item]
    future: asyncio.Future


class MicroBatcher:
    """Queue items from concurrent callers and embed them in shared batches off the event loop."""

    def __init__(self, encode: EncodeFn, *, max_batch_size: int = 32, max_wait_s: float = 0.005) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {max_wait_s}")
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        self._encode = encode
        self._executor: Optional[ThreadPoolExecutor] = None
        self._queue: Optional[asyncio.Queue[_Chunk]] = None
        self._worker: Optional[asyncio.Task] = None
        self._held_over: Optional[_Chunk] = None
        self._running: list[_Chunk] = []  # the batch the model is working on
        self._incoming = 0  # requests being received or parsed, soon to call embed()
        self._queued_items = 0  # items waiting for a batch

    @property
    def queued_items(self) -> int:
        """Items waiting for a batch: the depth of the queue, a measure of load."""
        return self._queued_items

    @contextmanager
    def incoming(self) -> Iterator[None]:
        """Mark a request as on its way to :meth:`embed`, so forming batches wait for it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    async def embed(self, items: Sequence[Item]) -> np.ndarray:
        """Embed ``items`` (in order) as part of whatever batches form; raises :class:`BatchFailed`."""
        if not items:
            raise ValueError("nothing to embed")
        queue = self._start()
        loop = asyncio.get_running_loop()
        step = self.max_batch_size
        chunks = [_Chunk(list(items[i : i + step]), loop.create_future()) for i in range(0, len(items), step)]
        for chunk in chunks:
            queue.put_nowait(chunk)
            self._queued_items += len(chunk.items)
        try:
            parts = await asyncio.gather(*(chunk.future for chunk in chunks))
        finally:
            for chunk in chunks:  # a caller that gave up frees its queued chunks
                chunk.future.cancel()
        return np.concatenate(parts, axis=0)

    async def close(self) -> None:
        """Stop the worker; requests still queued get :class:`BatchFailed`. A later call restarts it."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        pending = self._running + ([self._held_over] if self._held_over else [])
        while self._queue is not None and not self._queue.empty():
            pending.append(self._queue.get_nowait())
        for chunk in pending:
            if not chunk.future.done():
                chunk.future.set_exception(BatchFailed("the server is shutting down"))
        self._queue = self._held_over = None
        self._running = []
        self._queued_items = 0
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _start(self) -> asyncio.Queue:
        """Start the worker on first use, in the event loop of the server that uses it."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paravec-encode")
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="paravec-batcher")
        return self._queue

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if batch:
                await self._encode_and_answer(batch)

    async def _collect(self) -> list[_Chunk]:
        """Wait for a first chunk, then add chunks until the batch is full, or the wait is over, or
        no request is on its way."""
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first = self._held_over or await self._queue.get()
        self._held_over = None
        batch = [first]
        size = len(first.items)
        self._queued_items -= size
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch_size:
            if self._queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0 or not self._incoming:
                    break
                try:
                    chunk = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            else:
                chunk = self._queue.get_nowait()
            if size + len(chunk.items) > self.max_batch_size:
                self._held_over = chunk  # first in line for the next batch
                break
            batch.append(chunk)
            size += len(chunk.items)
            self._queued_items -= len(chunk.items)
        return [chunk for chunk in batch if not chunk.future.done()]

    async def _encode_and_answer(self, batch: list[_Chunk]) -> None:
        items = [item for chunk in batch for item in chunk.items]
        loop = asyncio.get_running_loop()
        self._running = batch
        try:
            vectors = await loop.run_in_executor(self._executor, self._encode_checked, items)
        except Exception as error:
            self.stats.record(len(items), ok=False)
            if len(batch) > 1:
                logger.warning("a batch of %d requests failed (%r); retrying each alone", len(batch), error)
                for chunk in batch:
                    await self._encode_and_answer([chunk])
                return
            logger.error("embedding failed for a request of %d items", len(items), exc_info=error)
            _answer(batch[0], error=BatchFailed(f"{type(error).__name__} while embedding"))
            return
        self.stats.record(len(items), ok=True)
        start = 0
        for chunk in batch:
            _answer(chunk, result=vectors[start : start + len(chunk.items)])
            start += len(chunk.items)

    def _encode_checked(self, items: list[Item]) -> np.ndarray:
        vectors = np.asarray(self._encode(items))
        if vectors.ndim != 2 or vectors.shape[0] != len(items):
            raise RuntimeError(f"the embedder returned shape {vectors.shape} for {len(items)} items")
        return vectors


def _answer(chunk: _Chunk, *, result: Optional[np.ndarray] = None, error: Optional[Exception] = None) -> None:
    if chunk.future.done():  # the caller went away
        return
    if error is not None:
        chunk.future.set_exception(error)
    else:
        chunk.future.set_result(result)
