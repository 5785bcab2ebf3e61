"""Review-queue throughput: claims + resolutions per second with 1, 8 and 32 concurrent reviewers.

Runs on a fresh SQLite file and a fresh database on the PostgreSQL server at 127.0.0.1:5432, in one run.
Each reviewer is a thread looping claim -> label until the queue is empty. Afterwards it checks that no
task was claimed twice and none was lost. Prints one line per backend and reviewer count.
Usage: python -m bench.queue_load [--items 2000] [--reviewers 1,8,32]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

from teaming.ops.log import NewDecision
from teaming.ops.store import Store
from tests.support.common import drop_postgres, scratch_postgres


def fresh_url(backend: str, tmp: Path) -> str:
    return f"sqlite:///{tmp / (uuid.uuid4().hex + '.db')}" if backend == "sqlite" else scratch_postgres("teaming_bench")


def run(url: str, items: int, reviewers: int) -> tuple[float, int, int, int]:
    """(operations/s, tasks done, duplicate claims, tasks left) for `reviewers` threads draining `items` tasks."""
    store = Store(url)
    probs = [0.1] * 10
    store.log.record(
        [NewDecision(f"i/{k}", "deferred", 0, 0.1, probs, "m", "p", tasks=("defer",)) for k in range(items)]
    )
    done: list[int] = []
    lock = threading.Lock()

    def reviewer(name: str) -> None:
        while (c := store.queue.claim(name, 60)) is not None:
            store.queue.submit(c.task_id, c.lease_id, name, 1)
            with lock:
                done.append(c.task_id)

    threads = [threading.Thread(target=reviewer, args=(f"r{k}",)) for k in range(reviewers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    left = store.log.stats(3)["queue_open"]
    store.dispose()
    return 2 * len(done) / elapsed, len(done), len(done) - len(set(done)), left


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=2000)
    p.add_argument("--reviewers", default="1,8,32")
    p.add_argument("--backends", default="sqlite,postgresql")
    args = p.parse_args()
    print(f"# queue_load, {time.strftime('%Y-%m-%d')}: {args.items} deferred items, claim + label per item")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            for n in (int(x) for x in args.reviewers.split(",")):
                url = fresh_url(backend, Path(tmp))
                try:
                    ops, done, dupes, left = run(url, args.items, n)
                finally:
                    if url.startswith("postgresql"):
                        drop_postgres(url)
                ok = "ok" if dupes == 0 and left == 0 and done == args.items else "FAILED"
                print(
                    f"{backend:<10s} reviewers={n:<3d} ops/s={ops:8.1f}  (claims + labels)  done={done} "
                    f"double_claims={dupes} left={left} {ok}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
