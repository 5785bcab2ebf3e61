"""The review queue in SQL: tasks, claims under expiring leases, answers and skips.

A reviewer is never given two tasks of one item. A claim holds a lease; the lease id must come back with the
answer, so a reviewer whose lease lapsed cannot overwrite anyone. On SQLite a claim is one guarded UPDATE; on
PostgreSQL a SELECT ... FOR UPDATE SKIP LOCKED and an update. Methods that take `conn` run inside the
caller's transaction (ops/loop.py composes them); the others open their own.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.engine import Connection, Engine

from teaming._validation import TeamingError
from teaming.ops.routing import Waiting
from teaming.ops.schema import decisions, reviews, skips, tasks

OPEN, CLAIMED, DONE, CANCELLED = "open", "claimed", "done", "cancelled"
Ranking = Callable[[list[Waiting]], list[int]]  # waiting deferrals -> their task ids, best first


class StoreError(TeamingError):
    """A request the log or the queue refuses."""


class NotFound(StoreError):
    """No such task or decision."""


class Conflict(StoreError):
    """The row is not in a state that allows this: resolved already, or the caller's lease is not live."""


@dataclass
class Claim:
    task_id: int
    decision_id: int
    item_id: str
    kind: str
    lease_id: str
    lease_expires_at: float
    probs: list[float]  # the model's, as logged: what a prediction set is drawn from
    defer_reason: str | None = None  # unsure | unfamiliar, for a deferred item


@dataclass
class Answered:
    answer_id: int
    decision_id: int
    latency_s: float  # decision logged -> answer submitted
    answered_at: float  # the correction window runs from here


@dataclass
class Corrected:
    answer_id: int
    decision_id: int
    task_id: int
    answered_at: float  # when it was first given: the correction window runs from here


def task_row(decision_id: int, kind: str, now: float) -> dict:
    """A new, open review task of `kind` for one logged decision."""
    return {"decision_id": decision_id, "kind": kind, "status": OPEN, "skips": 0, "created_at": now}


def _held(task_id: int, lease_id: str, reviewer: str, now: float) -> tuple:
    """Conditions under which `reviewer` still holds a live lease on the task."""
    return (
        tasks.c.id == task_id,
        tasks.c.status == CLAIMED,
        tasks.c.lease_id == lease_id,
        tasks.c.claimed_by == reviewer,
        tasks.c.lease_expires_at >= now,
    )


def _lock_key(*parts: str) -> int:
    """A stable signed 64-bit key for a PostgreSQL advisory lock."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def claimable(now: float):
    """Tasks a reviewer may take: open, or claimed under a lease that has run out."""
    return or_(tasks.c.status == OPEN, and_(tasks.c.status == CLAIMED, tasks.c.lease_expires_at < now))


def _seen_by(reviewer: str, now: float):
    """Items this reviewer has answered or holds a live lease on."""
    held = and_(tasks.c.claimed_by == reviewer, tasks.c.status == CLAIMED, tasks.c.lease_expires_at >= now)
    return (
        select(reviews.c.decision_id)
        .where(reviews.c.reviewer == reviewer)
        .union(select(tasks.c.decision_id).where(held))
    )


class ReviewQueue:
    """Claims, answers, skips and task bookkeeping on one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    def for_reviewer(self, reviewer: str, now: float):
        """The condition a task meets when `reviewer` may take it."""
        return and_(claimable(now), tasks.c.decision_id.not_in(_seen_by(reviewer, now)))

    def waiting_deferrals(self, reviewer: str, now: float, limit: int = 500) -> list[Waiting]:
        """The deferred tasks `reviewer` may take (the oldest `limit`), with what routing ranks them on."""
        skipped = exists().where(skips.c.task_id == tasks.c.id, skips.c.reviewer == reviewer)
        query = (
            select(tasks.c.id, decisions.c.probs, tasks.c.created_at, skipped.label("skipped"))
            .join(decisions, decisions.c.id == tasks.c.decision_id)
            .where(self.for_reviewer(reviewer, now), tasks.c.kind == "defer")
            .order_by(tasks.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Waiting(r.id, np.asarray(r.probs, dtype=np.float64), now - r.created_at, bool(r.skipped)) for r in rows]

    def claim(
        self, reviewer: str, lease_seconds: float, max_leases: int = 1, order: Ranking | None = None
    ) -> Claim | None:
        """Atomically take the next task this reviewer may take (ones they skipped last, deferrals first, oldest
        first, or in the order `order` ranks the waiting deferrals); a reviewer who already holds `max_leases`
        live leases gets their oldest one again.

        The database enforces both rules: on PostgreSQL one reviewer's claims run one at a time (an advisory lock
        on the reviewer), on SQLite the lease count and the pick are conditions of one UPDATE. A ranked task taken
        meanwhile by someone else is passed over for the next one.
        """
        now = time.time()
        skipped = exists().where(skips.c.task_id == tasks.c.id, skips.c.reviewer == reviewer)
        ranked = [] if order is None else order(self.waiting_deferrals(reviewer, now))
        positions = {tid: i for i, tid in enumerate(ranked)}
        by_rank = [case(positions, value=tasks.c.id, else_=len(ranked))] if ranked else []
        pick = (
            select(tasks.c.id)
            .where(self.for_reviewer(reviewer, now))
            .order_by(skipped.asc(), (tasks.c.kind == "defer").desc(), *by_rank, tasks.c.id)
            .limit(1)
        )
        live = and_(tasks.c.claimed_by == reviewer, tasks.c.status == CLAIMED, tasks.c.lease_expires_at >= now)
        lease = uuid.uuid4().hex
        expires = now + lease_seconds
        take = dict(status=CLAIMED, claimed_by=reviewer, lease_id=lease, lease_expires_at=expires)
        with self.engine.begin() as conn:
            if self.postgres:
                conn.execute(select(func.pg_advisory_xact_lock(_lock_key("claim", reviewer))))
                held = conn.execute(select(func.count()).where(live)).scalar_one()
                row = None if held >= max_leases else conn.execute(pick.with_for_update(skip_locked=True)).first()
                if row is not None:
                    conn.execute(update(tasks).where(tasks.c.id == row[0]).values(**take))
            else:  # SQLite runs one writer at a time: the guarded UPDATE is atomic
                under_cap = select(func.count()).where(live).scalar_subquery() < max_leases
                row = conn.execute(
                    update(tasks)
                    .where(tasks.c.id == pick.scalar_subquery(), claimable(now), under_cap)
                    .values(**take)
                    .returning(tasks.c.id)
                ).first()
            if row is None:
                held = conn.execute(
                    select(tasks.c.id, tasks.c.lease_id, tasks.c.lease_expires_at).where(live).order_by(tasks.c.id)
                ).first()
                if held is None:
                    return None
                row, lease, expires = (held.id,), held.lease_id, held.lease_expires_at
            item = (decisions.c.item_id, decisions.c.probs, decisions.c.defer_reason)
            t = conn.execute(
                select(tasks.c.decision_id, tasks.c.kind, *item)
                .join(decisions, decisions.c.id == tasks.c.decision_id)
                .where(tasks.c.id == row[0])
            ).one()
        return Claim(row[0], t.decision_id, t.item_id, t.kind, lease, expires, t.probs, t.defer_reason)

    def record_view(self, task_id: int, lease_id: str, view: str) -> None:
        """Note what the holder of this lease is shown: their answer will record it."""
        with self.engine.begin() as conn:
            conn.execute(update(tasks).where(tasks.c.id == task_id, tasks.c.lease_id == lease_id).values(view=view))

    def correct(
        self, conn: Connection, answer_id: int, lease_id: str, reviewer: str, verdict: str, label: int | None,
        window_seconds: float,
    ) -> Corrected:  # fmt: skip
        """Change one's own answer, given under `lease_id`, within `window_seconds` of giving it (the first answer
        is kept beside it); refused (NotFound, Conflict) otherwise."""
        now = time.time()
        row = conn.execute(
            select(reviews, tasks.c.lease_id.label("lease"))
            .join(tasks, tasks.c.id == reviews.c.task_id)
            .where(reviews.c.id == answer_id)
        ).first()
        if row is None or row.reviewer != reviewer:
            raise NotFound(f"no answer {answer_id} of yours")
        if row.lease != lease_id:
            raise Conflict(f"answer {answer_id} was given under another lease: send the lease_id it was given with")
        if now - row.created_at > window_seconds:
            raise Conflict(f"answer {answer_id} is final: it can be corrected within {window_seconds:g} s of giving it")
        self.lock_item(conn, row.task_id)
        first = {} if row.corrected_at is not None else {"first_verdict": row.verdict, "first_label": row.label}
        conn.execute(
            update(reviews)
            .where(reviews.c.id == answer_id)
            .values(verdict=verdict, label=label, corrected_at=now, **first)
        )
        return Corrected(answer_id, row.decision_id, row.task_id, row.created_at)

    def _refuse(self, conn: Connection, task_id: int, lease_id: str, reviewer: str) -> StoreError:
        t = conn.execute(select(tasks).where(tasks.c.id == task_id)).first()
        if t is None:
            return NotFound(f"unknown review task {task_id}")
        if t.status == DONE:
            return Conflict(f"review task {task_id} is already resolved")
        if t.status == CANCELLED:
            return Conflict(f"review task {task_id} was closed: its item needs no more answers")
        if t.status == OPEN:
            return Conflict(f"review task {task_id} is not claimed (never, or given back): claim an item first")
        if t.lease_id != lease_id or t.claimed_by != reviewer:
            return Conflict(f"lease on task {task_id} is not yours (expired and claimed again?)")
        return Conflict(f"lease on task {task_id} expired; claim the next item")

    def lock_item(self, conn: Connection, task_id: int) -> None:
        """Hold the task's decision row (PostgreSQL) before anything else of the item is written: answers to
        one item then apply one at a time, in one lock order, so they cannot deadlock."""
        if self.postgres:
            conn.execute(
                select(decisions.c.id)
                .join(tasks, tasks.c.decision_id == decisions.c.id)
                .where(tasks.c.id == task_id)
                .with_for_update(of=decisions)
            )

    def answer(
        self, conn: Connection, task_id: int, lease_id: str, reviewer: str, verdict: str, label: int | None
    ) -> Answered:
        """Resolve a claimed task with an answer; refused (Conflict, NotFound) unless the lease is live."""
        self.lock_item(conn, task_id)
        now = time.time()
        res = conn.execute(update(tasks).where(*_held(task_id, lease_id, reviewer, now)).values(status=DONE))
        if res.rowcount != 1:
            raise self._refuse(conn, task_id, lease_id, reviewer)
        did, created, view = conn.execute(
            select(decisions.c.id, decisions.c.created_at, tasks.c.view)
            .join(tasks, tasks.c.decision_id == decisions.c.id)
            .where(tasks.c.id == task_id)
        ).one()
        answer_id = conn.execute(
            reviews.insert().values(
                task_id=task_id,
                decision_id=did,
                reviewer=reviewer,
                verdict=verdict,
                label=label,
                created_at=now,
                latency_s=now - created,
                view=view,
            )
        ).inserted_primary_key[0]
        return Answered(answer_id, did, now - created, now)

    def submit(self, task_id: int, lease_id: str, reviewer: str, label: int, verdict: str = "class") -> Answered:
        """answer() in a transaction of its own, with no rule applied after it (benches and tests)."""
        with self.engine.begin() as conn:
            return self.answer(conn, task_id, lease_id, reviewer, verdict, label)

    def skip(self, task_id: int, lease_id: str, reviewer: str) -> None:
        """Give a claimed task back to the queue; the reviewer sees it again only once nothing else is left."""
        now = time.time()
        with self.engine.begin() as conn:
            res = conn.execute(
                update(tasks)
                .where(*_held(task_id, lease_id, reviewer, now))
                .values(status=OPEN, claimed_by=None, lease_id=None, lease_expires_at=None, skips=tasks.c.skips + 1)
            )
            if res.rowcount != 1:
                raise self._refuse(conn, task_id, lease_id, reviewer)
            conn.execute(skips.insert().values(task_id=task_id, reviewer=reviewer, created_at=now))

    def image(self, task_id: int, holder: str | None = None) -> tuple[bytes, str]:
        """The task's image and content type; with `holder`, only while that reviewer holds a live lease on it."""
        query = (
            select(decisions.c.image, decisions.c.content_type)
            .join(tasks, tasks.c.decision_id == decisions.c.id)
            .where(tasks.c.id == task_id)
        )
        if holder is not None:
            now = time.time()
            query = query.where(
                tasks.c.claimed_by == holder, tasks.c.status == CLAIMED, tasks.c.lease_expires_at >= now
            )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or row.image is None:
            raise NotFound(
                f"no image of task {task_id} for you: claim it first" if holder else f"unknown review task {task_id}"
            )
        return row.image, row.content_type or "application/octet-stream"

    def add_tasks(self, conn: Connection, decision_id: int, kinds: list[str]) -> list[int]:
        if not kinds:
            return []
        now = time.time()
        rows = [task_row(decision_id, kind, now) for kind in kinds]
        return list(conn.execute(tasks.insert().returning(tasks.c.id, sort_by_parameter_order=True), rows).scalars())

    def cancel(self, conn: Connection, task_ids: list[int]) -> None:
        """Close tasks nobody needs to answer any more (a claim on one can no longer be answered)."""
        if task_ids:
            conn.execute(update(tasks).where(tasks.c.id.in_(task_ids), tasks.c.status != DONE).values(status=CANCELLED))

    def answers(self, conn: Connection, decision_id: int) -> list:
        """(reviewer, task kind, verdict, label, view) rows of one item, oldest first."""
        return conn.execute(
            select(reviews.c.reviewer, tasks.c.kind, reviews.c.verdict, reviews.c.label, reviews.c.view)
            .join(tasks, tasks.c.id == reviews.c.task_id)
            .where(reviews.c.decision_id == decision_id)
            .order_by(reviews.c.id)
        ).all()

    def open_tasks(self, conn: Connection, decision_id: int) -> list[tuple[int, str]]:
        """(task id, kind) of an item's tasks that still wait for an answer."""
        rows = conn.execute(
            select(tasks.c.id, tasks.c.kind)
            .where(tasks.c.decision_id == decision_id, tasks.c.status.in_((OPEN, CLAIMED)))
            .order_by(tasks.c.id)
        ).all()
        return [(r.id, r.kind) for r in rows]

    def overdue(self, older_than: float) -> list[tuple[int, float]]:
        """(decision id, oldest open task's creation time) of items whose open tasks wait since before then."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(tasks.c.decision_id, func.min(tasks.c.created_at))
                .where(tasks.c.status.in_((OPEN, CLAIMED)))
                .group_by(tasks.c.decision_id)
                .having(func.min(tasks.c.created_at) < older_than)
            ).all()
        return [(r[0], r[1]) for r in rows]

    def oldest_waiting(self, kind: str) -> float | None:
        """The creation time of the oldest task of `kind` still open or claimed (None when none waits)."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.min(tasks.c.created_at)).where(tasks.c.kind == kind, tasks.c.status.in_((OPEN, CLAIMED)))
            ).scalar()

    def class_answers(self) -> list[tuple[int, str, int]]:
        """(decision id, reviewer, label) of every class answer, for reviewer skills and consensus."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(reviews.c.decision_id, reviews.c.reviewer, reviews.c.label).where(reviews.c.verdict == "class")
            ).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def work_counts(self) -> dict[str, dict[str, int]]:
        """Per reviewer: answers by verdict (class, none, unsure) and skips, for /v1/reviewers."""
        out: dict[str, dict[str, int]] = {}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(reviews.c.reviewer, reviews.c.verdict, func.count()).group_by(
                    reviews.c.reviewer, reviews.c.verdict
                )
            ).all()
            skipped = conn.execute(select(skips.c.reviewer, func.count()).group_by(skips.c.reviewer)).all()
        for reviewer, verdict, n in rows:
            out.setdefault(reviewer, {"class": 0, "none": 0, "unsure": 0, "skips": 0})[verdict] = int(n)
        for reviewer, n in skipped:
            out.setdefault(reviewer, {"class": 0, "none": 0, "unsure": 0, "skips": 0})["skips"] = int(n)
        return out

    def waiting_for(self, reviewer: str) -> int:
        """How many tasks this reviewer could claim now."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).where(self.for_reviewer(reviewer, time.time()))).scalar_one()
