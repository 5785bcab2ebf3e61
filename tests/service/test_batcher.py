"""GreedyBatcher: batches grow with load, never exceed the size limit, keep order, and route errors."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batcher import GreedyBatcher


class Model:
    """A slow batch function that records the batches it saw."""

    def __init__(self, seconds: float = 0.05, fail_on: str | None = None) -> None:
        self.seconds = seconds
        self.fail_on = fail_on
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.active = self.most_active = 0
        self.lock = threading.Lock()

    def __call__(self, items: list[list[str]]) -> list[list[str]]:
        with self.lock:
            self.threads.add(threading.get_ident())
            self.batches.append([x for req in items for x in req])
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(self.seconds)
        with self.lock:
            self.active -= 1
        if self.fail_on is not None and any(self.fail_on in req for req in items):
            raise RuntimeError(f"bad item {self.fail_on}")
        return [[x.upper() for x in req] for req in items]


def test_lone_request_runs_at_once_and_load_grows_batches():
    model = Model(seconds=0.1)
    observed = []
    b = GreedyBatcher(model, max_size=8, size=len, observe=lambda r, n: observed.append((r, n)))

    async def main():
        start = time.perf_counter()
        assert await b.submit(["a"]) == ["A"]
        lone = time.perf_counter() - start
        # 12 requests of 2 items arrive while the first is running: they ride in batches of at most 8 items
        results = await asyncio.gather(*(b.submit([f"x{k}", f"y{k}"]) for k in range(12)))
        return lone, results

    lone, results = asyncio.run(main())
    assert lone < 0.5  # no timer holds a lone request back
    assert results == [[f"X{k}", f"Y{k}"] for k in range(12)]  # each caller gets its own answers, in order
    sizes = [len(batch) for batch in model.batches]
    assert sizes[0] == 1 and max(sizes) == 8 and all(s <= 8 for s in sizes)
    assert [x for batch in model.batches[1:] for x in batch] == [f"{c}{k}" for k in range(12) for c in "xy"]
    assert observed[0] == (1, 1) and sum(n for _, n in observed) == 25 and max(r for r, _ in observed) == 4
    assert threading.get_ident() not in model.threads  # the model runs off the event loop
    assert model.most_active == 1  # concurrency 1: one batch at a time


def test_concurrent_batches_overlap_up_to_the_limit():
    model = Model(seconds=0.2)
    b = GreedyBatcher(model, max_size=2, size=len, concurrency=2)

    async def main():
        start = time.perf_counter()
        await asyncio.gather(*(b.submit([f"r{k}"]) for k in range(6)))  # 3 batches of 2
        return time.perf_counter() - start

    elapsed = asyncio.run(main())
    assert model.most_active == 2 and [len(x) for x in model.batches] == [2, 2, 2]
    assert elapsed < 3 * 0.2  # two ran side by side
    with pytest.raises(ValueError, match="concurrency and max_size"):
        GreedyBatcher(model, max_size=2, concurrency=0)


def test_an_error_reaches_only_its_own_batch():
    model = Model(seconds=0.05, fail_on="bad")
    b = GreedyBatcher(model, max_size=2, size=len)

    async def main():
        return await asyncio.gather(
            b.submit(["ok1"]), b.submit(["bad"]), b.submit(["ok2"]), b.submit(["ok3"]), return_exceptions=True
        )

    first, second, third, fourth = asyncio.run(main())
    assert model.batches == [["ok1", "bad"], ["ok2", "ok3"]]  # all four were queued before the first ran
    assert isinstance(first, RuntimeError) and isinstance(second, RuntimeError) and "bad item" in str(second)
    assert third == ["OK2"] and fourth == ["OK3"]


def test_oversized_item_is_refused_and_cancelled_callers_are_skipped():
    model = Model(seconds=0.1)
    b = GreedyBatcher(model, max_size=4, size=len)

    async def main():
        with pytest.raises(ValueError, match="exceeds the batch limit of 4"):
            await b.submit(["a", "b", "c", "d", "e"])
        first = asyncio.ensure_future(b.submit(["first"]))
        await asyncio.sleep(0.02)  # the first batch is running
        gone = asyncio.ensure_future(b.submit(["gone"]))
        kept = asyncio.ensure_future(b.submit(["kept"]))
        await asyncio.sleep(0)
        gone.cancel()  # the caller hung up while queued
        return await first, await kept

    assert asyncio.run(main()) == (["FIRST"], ["KEPT"])
    assert ["gone"] not in model.batches and all("gone" not in batch for batch in model.batches)


def test_wrong_result_count_is_an_error():
    b = GreedyBatcher(lambda items: [], max_size=4)

    async def main():
        await b.submit("x")

    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        asyncio.run(main())
