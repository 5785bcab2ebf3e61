"""The decision log and the human review queue, in SQL (SQLite by default, PostgreSQL to scale out).

Decisions are an append-only log; each opens the review tasks its caller names (ops/review.py says which).
A reviewer is never given two tasks of one item. Claims hold an expiring lease; a lease id must come back with
the label, so a reviewer whose lease lapsed cannot overwrite anyone. The store keeps no rule of what the
labels mean: that is the caller's.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy import and_, create_engine, event, func, or_, select, update
from sqlalchemy.engine import Engine

from teaming._validation import TeamingError
from teaming.ops.schema import decisions, policies, reviews, tasks, upgrade


class StoreError(TeamingError):
    """A request the queue refuses."""


class NotFound(StoreError):
    """No such task or decision."""


class Conflict(StoreError):
    """The row is not in a state that allows this: resolved already, or the caller's lease is not live."""


@dataclass
class NewDecision:
    """One classified item, ready to log."""

    item_id: str
    outcome: str
    machine_label: int
    confidence: float
    probs: list[float]
    model_version: str
    policy_version: str
    audit: bool = False
    image: bytes | None = None  # kept for people to look at; None when nobody will
    content_type: str | None = None
    tasks: tuple[str, ...] = ()  # review tasks to open, by kind


@dataclass
class Review:
    kind: str
    label: int
    reviewer: str
    created_at: float


@dataclass
class Outcome:
    """A logged decision and what people said about it so far."""

    decision_id: int
    item_id: str
    outcome: str
    machine_label: int
    confidence: float
    model_version: str
    policy_version: str
    audit: bool
    open_tasks: int
    reviews: list[Review]


@dataclass
class Claim:
    task_id: int
    decision_id: int
    item_id: str
    kind: str
    lease_id: str
    lease_expires_at: float


def decision_row(d: NewDecision, now: float) -> dict:
    """The decisions-table row for one item."""
    return {
        "item_id": d.item_id,
        "created_at": now,
        "outcome": d.outcome,
        "machine_label": d.machine_label,
        "confidence": d.confidence,
        "probs": d.probs,
        "model_version": d.model_version,
        "policy_version": d.policy_version,
        "audit": d.audit,
        "image": d.image,
        "content_type": d.content_type,
    }


def task_row(decision_id: int, kind: str, now: float) -> dict:
    """A new, open review task of `kind` for one logged decision."""
    return {"decision_id": decision_id, "kind": kind, "status": "open", "skips": 0, "created_at": now}


def _held(task_id: int, lease_id: str, reviewer: str, now: float) -> tuple:
    """Conditions under which `reviewer` still holds a live lease on the task."""
    return (
        tasks.c.id == task_id,
        tasks.c.status == "claimed",
        tasks.c.lease_id == lease_id,
        tasks.c.claimed_by == reviewer,
        tasks.c.lease_expires_at >= now,
    )


def _claimable(now: float):
    """Tasks a reviewer may take: open, or claimed under a lease that has run out."""
    return or_(tasks.c.status == "open", and_(tasks.c.status == "claimed", tasks.c.lease_expires_at < now))


def connect(url: str) -> Engine:
    """An engine for `url`; SQLite files run in WAL mode with a busy timeout so readers never block writers."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != url and not path.startswith(":memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)  # a new log folder, e.g. runs/
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn, _record) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class Store:
    """Decision log, review queue, reviews and policy versions behind one SQLAlchemy engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = connect(url)
        upgrade(self.engine)  # alembic: a new database gets the schema, an older one its missing migrations
        self.postgres = self.engine.dialect.name == "postgresql"

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except Exception:
            return False

    def record(self, items: Sequence[NewDecision]) -> list[tuple[int, list[int]]]:
        """Log decisions and open their review tasks in one transaction: (decision id, task ids in the order of
        its `tasks`) per item.

        Two bulk INSERT ... RETURNING statements per batch, whatever its size: row-by-row inserts cost more
        than the model's forward pass on a CPU.
        """
        if not items:
            return []
        now = time.time()
        rows = [decision_row(d, now) for d in items]
        with self.engine.begin() as conn:
            ids = conn.execute(decisions.insert().returning(decisions.c.id, sort_by_parameter_order=True), rows)
            ids = ids.scalars().all()
            owners, task_rows = [], []
            for i, (did, d) in enumerate(zip(ids, items)):
                for kind in d.tasks:
                    owners.append(i)
                    task_rows.append(task_row(did, kind, now))
            task_ids: list[list[int]] = [[] for _ in items]
            if task_rows:
                new = conn.execute(tasks.insert().returning(tasks.c.id, sort_by_parameter_order=True), task_rows)
                for i, tid in zip(owners, new.scalars().all()):
                    task_ids[i].append(tid)
        return list(zip(ids, task_ids))

    def claim(self, reviewer: str, lease_seconds: float) -> Claim | None:
        """Atomically take the oldest claimable task (deferrals first) this reviewer has not seen for its item."""
        now = time.time()
        mine = (
            select(reviews.c.decision_id)
            .where(reviews.c.reviewer == reviewer)
            .union(
                select(tasks.c.decision_id).where(
                    and_(tasks.c.claimed_by == reviewer, tasks.c.status == "claimed", tasks.c.lease_expires_at >= now)
                )
            )
        )
        claimable = _claimable(now)
        pick = (
            select(tasks.c.id)
            .where(claimable, tasks.c.decision_id.not_in(mine))
            .order_by((tasks.c.kind == "defer").desc(), tasks.c.id)
            .limit(1)
        )
        lease = uuid.uuid4().hex
        expires = now + lease_seconds
        with self.engine.begin() as conn:
            if self.postgres:
                row = conn.execute(pick.with_for_update(skip_locked=True)).first()
                if row is None:
                    return None
                task_id = row[0]
                conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id)
                    .values(status="claimed", claimed_by=reviewer, lease_id=lease, lease_expires_at=expires)
                )
            else:  # SQLite runs one writer at a time: the guarded UPDATE is atomic
                row = conn.execute(
                    update(tasks)
                    .where(tasks.c.id == pick.scalar_subquery(), claimable)
                    .values(status="claimed", claimed_by=reviewer, lease_id=lease, lease_expires_at=expires)
                    .returning(tasks.c.id)
                ).first()
                if row is None:
                    return None
                task_id = row[0]
            t = conn.execute(
                select(tasks.c.decision_id, tasks.c.kind, decisions.c.item_id)
                .join(decisions, decisions.c.id == tasks.c.decision_id)
                .where(tasks.c.id == task_id)
            ).one()
        return Claim(task_id, t.decision_id, t.item_id, t.kind, lease, expires)

    def _refuse(self, conn, task_id: int, lease_id: str, reviewer: str) -> StoreError:
        t = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
        if t is None:
            return NotFound(f"unknown review task {task_id}")
        if t.status == "done":
            return Conflict(f"review task {task_id} is already resolved")
        if t.lease_id != lease_id or t.claimed_by != reviewer:
            return Conflict(f"lease on task {task_id} is not yours (expired and claimed again?)")
        return Conflict(f"lease on task {task_id} expired; claim the next item")

    def submit(self, task_id: int, lease_id: str, reviewer: str, label: int) -> tuple[int, float]:
        """Resolve a claimed task with a label -> (review id, seconds since the decision).

        Refused (Conflict, NotFound) unless the caller holds a live lease on an unresolved task.
        """
        now = time.time()
        with self.engine.begin() as conn:
            res = conn.execute(update(tasks).where(*_held(task_id, lease_id, reviewer, now)).values(status="done"))
            if res.rowcount != 1:
                raise self._refuse(conn, task_id, lease_id, reviewer)
            did, created = conn.execute(
                select(decisions.c.id, decisions.c.created_at)
                .join(tasks, tasks.c.decision_id == decisions.c.id)
                .where(tasks.c.id == task_id)
            ).one()
            review_id = conn.execute(
                reviews.insert().values(
                    task_id=task_id,
                    decision_id=did,
                    reviewer=reviewer,
                    label=label,
                    created_at=now,
                    latency_s=now - created,
                )
            ).inserted_primary_key[0]
        return review_id, now - created

    def skip(self, task_id: int, lease_id: str, reviewer: str) -> None:
        """Give a claimed task back to the queue."""
        with self.engine.begin() as conn:
            res = conn.execute(
                update(tasks)
                .where(*_held(task_id, lease_id, reviewer, time.time()))
                .values(status="open", claimed_by=None, lease_id=None, lease_expires_at=None, skips=tasks.c.skips + 1)
            )
            if res.rowcount != 1:
                raise self._refuse(conn, task_id, lease_id, reviewer)

    def image(self, task_id: int) -> tuple[bytes, str]:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(decisions.c.image, decisions.c.content_type)
                .join(tasks, tasks.c.decision_id == decisions.c.id)
                .where(tasks.c.id == task_id)
            ).first()
        if row is None or row.image is None:
            raise NotFound(f"unknown review task {task_id}")
        return row.image, row.content_type or "application/octet-stream"

    def stats(self) -> dict:
        now = time.time()
        with self.engine.connect() as conn:
            by = dict(conn.execute(select(decisions.c.outcome, func.count()).group_by(decisions.c.outcome)).all())
            open_ = conn.execute(select(func.count()).where(_claimable(now))).scalar_one()
            claimed = conn.execute(
                select(func.count()).where(tasks.c.status == "claimed", tasks.c.lease_expires_at >= now)
            ).scalar_one()
            done = conn.execute(select(func.count()).where(tasks.c.status == "done")).scalar_one()
            latency = conn.execute(select(func.avg(reviews.c.latency_s))).scalar_one()
        total = sum(by.values())
        return {
            "decisions": total,
            "auto": by.get("auto", 0),
            "deferred": by.get("deferred", 0),
            "deferral_rate": by.get("deferred", 0) / total if total else 0.0,
            "queue_open": open_,
            "queue_claimed": claimed,
            "reviews_done": done,
            "mean_review_latency_s": latency,
        }

    def outcome(self, decision_id: int) -> Outcome:
        """A logged decision with its reviews (oldest first) and how many of its tasks are still open."""
        with self.engine.connect() as conn:
            d = conn.execute(select(decisions).where(decisions.c.id == decision_id)).first()
            if d is None:
                raise NotFound(f"unknown decision {decision_id}")
            rows = conn.execute(
                select(tasks.c.kind, reviews.c.label, reviews.c.reviewer, reviews.c.created_at)
                .join(tasks, tasks.c.id == reviews.c.task_id)
                .where(reviews.c.decision_id == decision_id)
                .order_by(reviews.c.id)
            ).all()
            pending = conn.execute(
                select(func.count()).where(tasks.c.decision_id == decision_id, tasks.c.status != "done")
            ).scalar_one()
        return Outcome(
            d.id,
            d.item_id,
            d.outcome,
            d.machine_label,
            d.confidence,
            d.model_version,
            d.policy_version,
            d.audit,
            pending,
            [Review(*r) for r in rows],
        )

    def audit_labels(self) -> list[tuple[list[float], list[int]]]:
        """(probabilities, audit labels oldest first) for every audited decision with at least one audit label."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(decisions.c.id, decisions.c.probs, reviews.c.label)
                .join(reviews, reviews.c.decision_id == decisions.c.id)
                .join(tasks, tasks.c.id == reviews.c.task_id)
                .where(decisions.c.audit.is_(True), tasks.c.kind == "audit")
                .order_by(decisions.c.id, reviews.c.id)
            ).all()
        by: dict[int, tuple[list[float], list[int]]] = {}
        for did, probs, label in rows:
            by.setdefault(did, (probs, []))[1].append(label)
        return list(by.values())

    def add_policy(self, body: dict, activate: bool = True) -> str:
        with self.engine.begin() as conn:
            exists = conn.execute(select(policies.c.version).where(policies.c.version == body["version"])).first()
            if activate:
                conn.execute(update(policies).values(active=False))
            if exists:
                conn.execute(update(policies).where(policies.c.version == body["version"]).values(active=activate))
            else:
                conn.execute(
                    policies.insert().values(
                        version=body["version"], created_at=time.time(), body=body, active=activate
                    )
                )
        return body["version"]

    def decisions_for(self, item_ids: Sequence[str]) -> dict[str, tuple[list[float], str]]:
        """Latest logged (probs, outcome) per item id among `item_ids`."""
        wanted = set(item_ids)
        out = {}
        with self.engine.connect() as conn:
            for item, probs, outcome in conn.execute(
                select(decisions.c.item_id, decisions.c.probs, decisions.c.outcome).order_by(decisions.c.id)
            ):
                if item in wanted:
                    out[item] = (probs, outcome)
        return out

    def active_policy_version(self) -> str | None:
        """The active policy's version id alone: cheap enough for every replica to poll."""
        with self.engine.connect() as conn:
            return conn.execute(select(policies.c.version).where(policies.c.active.is_(True))).scalar()

    def active_policy(self) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(policies.c.body).where(policies.c.active.is_(True))).first()
        return None if row is None else row.body
