"""Greedy request batching: whenever a model slot is free, run everything queued (up to a size limit) at once.

There is no timer. Under load, requests pile up while batches run, so batches grow with load by themselves;
an idle service answers a lone request at once. Up to `concurrency` batches run at a time, in worker threads,
so one batch's logging and answer overlap the next one's forward pass. BentoML's adaptive dispatcher instead
waits for a time it learns from past queueing delay, so after a burst it keeps the model idle between
batches, and it counts requests, not images, against its size limit (BENCHMARKS.md, serving).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job(Generic[T, R]):
    item: T
    size: int
    future: asyncio.Future = field(repr=False)


class GreedyBatcher(Generic[T, R]):
    """Collects requests from the event loop and runs `run(items) -> results` in worker threads, at most
    `concurrency` batches at a time. `size(item)` is an item's share of `max_size` (images per request); an item
    is never split."""

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        max_size: int,
        size: Callable[[T], int] = lambda _: 1,
        observe: Callable[[int, int], None] | None = None,
        concurrency: int = 1,
    ) -> None:
        if concurrency < 1 or max_size < 1:
            raise ValueError(f"concurrency and max_size must be >= 1, got {concurrency} and {max_size}")
        self.run = run
        self.concurrency = concurrency
        self.max_size = max_size
        self.size = size
        self.observe = observe  # (requests, size) of each batch, for metrics
        self._queue: deque[_Job[T, R]] = deque()
        self._ready: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    def queued(self) -> int:
        """Size (images) of what waits for a model slot."""
        return sum(job.size for job in self._queue)

    async def submit(self, item: T) -> R:
        """Queue one item and wait for its result (or the exception its batch raised)."""
        n = self.size(item)
        if n > self.max_size:
            raise ValueError(f"an item of size {n} exceeds the batch limit of {self.max_size}")
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._slots = asyncio.Semaphore(self.concurrency)
            self._task = asyncio.get_running_loop().create_task(self._dispatch())
        job = _Job(item, n, asyncio.get_running_loop().create_future())
        self._queue.append(job)
        self._ready.set()
        return await job.future

    def _take(self) -> list[_Job[T, R]]:
        """The oldest jobs that fit in one batch, first come first served."""
        jobs, total = [], 0
        while self._queue and total + self._queue[0].size <= self.max_size:
            job = self._queue.popleft()
            if job.future.done():  # its caller went away
                continue
            jobs.append(job)
            total += job.size
        return jobs

    async def _dispatch(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._queue:
                await self._slots.acquire()  # take the queue only once a slot is free: batches grow with load
                jobs = self._take()
                if not jobs:
                    self._slots.release()
                    break
                task = asyncio.get_running_loop().create_task(self._run_batch(jobs))
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _run_batch(self, jobs: list[_Job[T, R]]) -> None:
        try:
            results = await asyncio.to_thread(self.run, [j.item for j in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"batch returned {len(results)} results for {len(jobs)} items")
        except Exception as err:  # every caller in the batch gets the error
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(err)
            return
        finally:
            self._slots.release()
        for j, r in zip(jobs, results):
            if j.future.done():
                continue
            if isinstance(r, BaseException):  # this item alone failed
                j.future.set_exception(r)
            else:
                j.future.set_result(r)
        if self.observe is not None:
            self.observe(len(jobs), sum(j.size for j in jobs))
