"""The fault drills' building blocks, run by `python -m bench.faults` and, bounded, by tests/service/test_faults.py:
SIGKILL under load, PostgreSQL restarted under load, two replicas on one database. Each drill starts real
service processes on 127.0.0.1, drives them over HTTP with bounded loops, and checks the log afterwards: every
decision a client got an answer for is there, no queue item is lost or stuck, and no item was claimed twice."""

from __future__ import annotations

import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx
from sqlalchemy import func, select

from teaming.client import ApiError, TeamingClient
from teaming.datasets import default_test_jpegs
from teaming.ops.schema import decisions, reviews, tasks
from teaming.ops.store import Store
from teaming.policy import policy_from_dict
from tests.support.common import drop_postgres, jpeg_payloads, scratch_postgres
from tests.support.process import ServiceProcess

REVIEWERS = {"r1": "t1", "r2": "t2", "r3": "t3", "r4": "t4"}
POLICY_POLL_SECONDS = 1.0


def service_env(db: str, tmp: Path, lease: float = 3.0, name: str = "service") -> dict[str, str]:
    """Settings for one service process; each `name` gets its own BENTOML_HOME (and so its own metrics)."""
    return {
        "TEAMING_DB_URL": db,
        "TEAMING_AUDIT_RATE": "0.2",
        "TEAMING_LEASE_SECONDS": str(lease),
        "TEAMING_REVIEWER_TOKENS": ",".join(f"{k}:{v}" for k, v in REVIEWERS.items()),
        "TEAMING_ADMIN_TOKEN": "admin",
        "TEAMING_POLICY_POLL_SECONDS": str(POLICY_POLL_SECONDS),
        "BENTOML_HOME": str(tmp / f"bentoml-{name}"),
    }


class Workers:
    """Threads started together and told to stop by one event: the drills' callers and reviewers."""

    threads: list[threading.Thread]
    _stop: threading.Event

    def start(self) -> Self:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join()


class Load(Workers):
    """Client threads posting 4-image requests until stopped, remembering every answer they received."""

    def __init__(self, urls: list[str], clients: int = 4, max_requests: int = 5000) -> None:
        self.items = jpeg_payloads(400)
        self.answered: list[dict] = []
        self.failures = 0
        self.server_errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._left = max_requests
        self.threads = [threading.Thread(target=self._run, args=(urls[k % len(urls)], k)) for k in range(clients)]

    def _run(self, url: str, k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            i = k * 4
            while not self._stop.is_set():
                with self._lock:
                    if self._left <= 0:
                        return
                    self._left -= 1
                body = {"images": [self.items[(i + j) % len(self.items)] for j in range(4)]}
                i += 16
                try:
                    r = c.post("/classify", json=body)
                except httpx.HTTPError:
                    with self._lock:
                        self.failures += 1
                    time.sleep(0.05)
                    continue
                with self._lock:
                    if r.status_code == 200:
                        self.answered += r.json()
                    elif r.status_code >= 500:
                        self.server_errors += 1


@dataclass
class LogCheck:
    answered: int
    missing: int
    tasks: int
    open_or_stuck_after_drain: int
    double_claims: int
    server_errors: int = 0  # 5xx answers the clients saw during the drill
    refused: int = 0  # requests that got no answer at all (connection refused or reset)
    policy_followed: bool | None = None  # replicas: a policy reloaded on one replica reached every replica


def drain(urls: list[str], lease: float) -> list[int]:
    """Work the queue with all reviewers (spread over the replicas) until it stays empty past a lease."""

    def work(token: str, url: str) -> list[int]:
        done, empty_since = [], None
        with TeamingClient(url, token, timeout=30) as c:
            while True:
                task = c.claim().task
                if task is None:
                    empty_since = empty_since or time.time()
                    if time.time() - empty_since > lease + 1:
                        return done
                    time.sleep(0.2)
                    continue
                empty_since = None
                try:
                    c.label(task.task_id, task.lease_id, 0)
                except ApiError:  # the lease ran out meanwhile: the task comes round again
                    continue
                done.append(task.task_id)

    with ThreadPoolExecutor(len(REVIEWERS)) as pool:
        futures = [pool.submit(work, t, urls[k % len(urls)]) for k, t in enumerate(REVIEWERS.values())]
        return [tid for f in futures for tid in f.result()]


def switch_policy(db: str, urls: list[str]) -> bool:
    """Activate a new policy version (as `teaming retune` does), reload it on the first replica only, and
    check that every replica decides with it once the poll interval has passed."""
    store = Store(db)
    model = store.log.latest_model()
    policy = policy_from_dict(store.active_policy(model))
    policy.threshold_ = min(1.0, policy.threshold_ + 0.01)
    version = store.add_policy(policy.to_dict(), model)
    store.dispose()
    with TeamingClient(urls[0], "admin") as admin:
        admin.reload_policy()
    time.sleep(POLICY_POLL_SECONDS + 0.5)
    image = default_test_jpegs([0])[0]
    seen = []
    for u in urls:
        with TeamingClient(u, timeout=30) as c:
            seen.append(c.classify([("policy-check", image)])[0].policy_version)
    return all(v == version for v in seen)


def check_log(db: str, load: Load, resolved: list[int]) -> LogCheck:
    store = Store(db)
    with store.engine.connect() as conn:
        logged = dict(conn.execute(select(decisions.c.id, decisions.c.item_id)).all())
        n_tasks = conn.execute(select(func.count()).select_from(tasks)).scalar_one()
        done = conn.execute(select(func.count()).where(tasks.c.status == "done")).scalar_one()
        stuck = conn.execute(select(func.count()).where(tasks.c.status.in_(("open", "claimed")))).scalar_one()
        n_reviews = conn.execute(select(func.count()).select_from(reviews)).scalar_one()
    store.dispose()
    missing = sum(1 for d in load.answered if logged.get(d["decision_id"]) != d["item_id"])
    dupes = len(resolved) - len(set(resolved)) + (n_reviews - done)
    return LogCheck(len(load.answered), missing, n_tasks, stuck, dupes, load.server_errors, load.failures)


def kill_under_load(tmp: Path, seconds: float = 6.0, lease: float = 3.0) -> LogCheck:
    """SIGKILL the service mid-load with items claimed but unresolved, restart it, drain, check the log."""
    db = f"sqlite:///{tmp / 'kill.db'}"
    svc = ServiceProcess(service_env(db, tmp, lease), tmp / "kill.log").start()
    load = Load([svc.url]).start()
    time.sleep(seconds / 2)
    # a reviewer holds an item when the service dies: its lease must expire and the item come back
    with TeamingClient(svc.url, "t1") as holder:
        holder.claim()
    time.sleep(seconds / 2)
    svc.kill()
    load.stop()
    svc.start()
    resolved = drain([svc.url], lease)
    svc.stop()
    return check_log(db, load, resolved)


def replicas(tmp: Path, seconds: float = 6.0, lease: float = 3.0) -> LogCheck:
    """Two service processes on one PostgreSQL database, clients and reviewers spread over both."""
    db = scratch_postgres("teaming_faults")
    try:
        a = ServiceProcess(service_env(db, tmp, lease, "a"), tmp / "replica-a.log").start()
        b = ServiceProcess(service_env(db, tmp, lease, "b"), tmp / "replica-b.log").start()
        load = Load([a.url, b.url]).start()
        time.sleep(seconds)
        load.stop()
        followed = switch_policy(db, [a.url, b.url])
        resolved = drain([a.url, b.url], lease)
        a.stop()
        b.stop()
        check = check_log(db, load, resolved)
        check.policy_followed = followed
        return check
    finally:
        drop_postgres(db)


def pg_restart(tmp: Path, seconds: float = 6.0, lease: float = 3.0) -> tuple[LogCheck, int, bool]:
    """Restart the PostgreSQL server under load: (log check, /readyz non-200 answers seen, recovered)."""
    db = scratch_postgres("teaming_faults")
    try:
        svc = ServiceProcess(service_env(db, tmp, lease), tmp / "pg.log").start()
        load = Load([svc.url]).start()
        time.sleep(seconds / 2)
        not_ready = 0
        restart = subprocess.Popen(["pg_ctlcluster", "15", "main", "restart"])
        while restart.poll() is None:
            try:
                not_ready += httpx.get(f"{svc.url}/readyz", timeout=2).status_code != 200
            except httpx.HTTPError:
                not_ready += 1
            time.sleep(0.05)
        time.sleep(seconds / 2)
        load.stop()
        recovered = httpx.get(f"{svc.url}/readyz", timeout=5).status_code == 200
        resolved = drain([svc.url], lease)
        svc.stop()
        return check_log(db, load, resolved), not_ready, recovered
    finally:
        drop_postgres(db)
