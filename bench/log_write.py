"""Decision-log write cost per batch: Store.record (bulk INSERT ... RETURNING) against row-by-row inserts.

The row-by-row reference is how Store.record logged a batch before (one INSERT per decision and per task).
Both run in one process on a fresh SQLite file and a fresh database on the PostgreSQL server at
127.0.0.1:5432, with service-like batches: a third deferred (image kept), 5% audited, real CIFAR JPEG bytes.
Prints one line per backend, batch size and method: milliseconds per batch (median of the repeats).
Usage: python -m bench.log_write [--batches 1,64,256] [--repeats 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from teaming.datasets import default_test_jpegs
from teaming.ops.log import NewDecision, decision_row
from teaming.ops.queue import task_row
from teaming.ops.review import keeps_image, review_tasks
from teaming.ops.schema import decisions, tasks
from teaming.ops.store import Store
from tests.support.common import drop_postgres, scratch_postgres


def row_by_row(store: Store, items: Sequence[NewDecision]) -> None:
    """The reference: one INSERT per decision and per review task, in one transaction."""
    now = time.time()
    with store.engine.begin() as conn:
        for d in items:
            did = conn.execute(decisions.insert().values(**decision_row(d, now))).inserted_primary_key[0]
            for kind in d.tasks:
                conn.execute(tasks.insert().values(**task_row(did, kind, now)))


def batch(n: int, images: list[bytes], rng: random.Random) -> list[NewDecision]:
    out = []
    for k in range(n):
        deferred, audited = rng.random() < 1 / 3, rng.random() < 0.05
        out.append(
            NewDecision(
                f"bench/{rng.random()}",
                "deferred" if deferred else "auto",
                3,
                0.6,
                [0.1] * 10,
                "model@1",
                "threshold-0",
                audited,
                images[k % len(images)] if keeps_image(deferred, audited) else None,
                "image/jpeg",
                review_tasks(deferred, audited),
            )
        )
    return out


def median_ms(write: Callable[[list[NewDecision]], object], n: int, images: list[bytes], repeats: int) -> float:
    rng = random.Random(n)
    times = []
    for _ in range(repeats):
        items = batch(n, images, rng)
        start = time.perf_counter()
        write(items)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batches", default="1,64,256")
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    images = default_test_jpegs(range(64))
    print(f"# log_write, {time.strftime('%Y-%m-%d')}; median of {args.repeats} batches")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("sqlite", "postgresql"):
            url = f"sqlite:///{Path(tmp) / 'log.db'}" if backend == "sqlite" else scratch_postgres("teaming_bench")
            store = Store(url)
            try:
                for n in (int(x) for x in args.batches.split(",")):
                    for name, write in (("record", store.log.record), ("row-by-row", partial(row_by_row, store))):
                        ms = median_ms(write, n, images, args.repeats)
                        print(f"{backend:<10s} batch={n:<4d} {name:<11s} ms/batch={ms:8.2f}", flush=True)
            finally:
                store.dispose()
                if backend == "postgresql":
                    drop_postgres(url)


if __name__ == "__main__":
    main()
