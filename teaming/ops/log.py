"""The decision log and its outcomes, in SQL: every decision as the model made it (append-only), and every time
an item's final answer is set, changes or closes (append-only too: an item's answer is its latest outcome row).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from teaming.ops.queue import CLAIMED, DONE, OPEN, NotFound, claimable, task_row
from teaming.ops.schema import decisions, outcomes, reviews, tasks
from teaming.ops.webhooks import count_backlog


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
    defer_reason: str | None = None  # unsure | unfamiliar, for deferred items
    unfamiliarity: float | None = None
    policy_score: float | None = None


class AuditedDecision(NamedTuple):
    """One audited decision as the log keeps it: what retune refits on."""

    decision_id: int
    probs: list[float]
    deferred: bool
    policy_version: str
    policy_score: float | None
    unfamiliarity: float | None


def decision_row(d: NewDecision, now: float) -> dict:
    """The decisions-table row for one item."""
    return {
        "item_id": d.item_id,
        "created_at": now,
        "outcome": d.outcome,
        "machine_label": d.machine_label,
        "confidence": d.confidence,
        "probs": d.probs,
        "defer_reason": d.defer_reason,
        "unfamiliarity": d.unfamiliarity,
        "policy_score": d.policy_score,
        "model_version": d.model_version,
        "policy_version": d.policy_version,
        "audit": d.audit,
        "image": d.image,
        "content_type": d.content_type,
    }


_FINAL = (
    outcomes.c.status,
    outcomes.c.label,
    outcomes.c.source,
    outcomes.c.method,
    outcomes.c.n_labels,
    outcomes.c.closed,
    outcomes.c.reason,
)


class DecisionLog:
    """Decisions, their outcome rows, and the figures the service reports."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

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

    def decision(self, conn: Connection, decision_id: int, lock: bool = False):
        """One decision row; `lock` holds it (PostgreSQL) so answers to one item are applied one at a time."""
        query = select(decisions).where(decisions.c.id == decision_id)
        if lock and self.postgres:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            raise NotFound(f"unknown decision {decision_id}")
        return row

    def final(self, conn: Connection, decision_id: int):
        """The item's latest outcome row, or None."""
        return conn.execute(
            select(*_FINAL).where(outcomes.c.decision_id == decision_id).order_by(outcomes.c.id.desc()).limit(1)
        ).first()

    def add_outcome(self, conn: Connection, decision_id: int, item_id: str, final: dict) -> None:
        conn.execute(
            outcomes.insert().values(decision_id=decision_id, item_id=item_id, created_at=time.time(), **final)
        )

    def outcomes(
        self, decision_ids: Sequence[int] | None = None, item_id: str | None = None, after: int = 0, limit: int = 100
    ) -> list[tuple]:
        """(decision row, latest outcome row or None) for chosen decisions, oldest first."""
        latest = (
            select(outcomes.c.decision_id, func.max(outcomes.c.id).label("oid"))
            .group_by(outcomes.c.decision_id)
            .subquery()
        )
        names = ("id", "item_id", "outcome", "defer_reason", "machine_label", "confidence", "audit", "model_version")
        cols = [decisions.c[k] for k in (*names, "policy_version", "created_at")]
        query = (
            select(*cols, *_FINAL, outcomes.c.created_at.label("answered_at"))
            .select_from(decisions)
            .outerjoin(latest, latest.c.decision_id == decisions.c.id)
            .outerjoin(outcomes, outcomes.c.id == latest.c.oid)
            .where(decisions.c.id > after)
            .order_by(decisions.c.id)
            .limit(limit)
        )
        if decision_ids is not None:
            query = query.where(decisions.c.id.in_(list(decision_ids)))
        if item_id is not None:
            query = query.where(decisions.c.item_id == item_id)
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def reviews_of(self, decision_id: int) -> list:
        """(task kind, verdict, label, reviewer, created_at) of an item's answers, oldest first."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(tasks.c.kind, reviews.c.verdict, reviews.c.label, reviews.c.reviewer, reviews.c.created_at)
                .join(tasks, tasks.c.id == reviews.c.task_id)
                .where(reviews.c.decision_id == decision_id)
                .order_by(reviews.c.id)
            ).all()

    def decisions_for(self, item_ids: Sequence[str]) -> dict[str, tuple[list[float], str, int]]:
        """Latest logged (probs, outcome, decision id) per item id among `item_ids`."""
        wanted = set(item_ids)
        out = {}
        with self.engine.connect() as conn:
            for did, item, probs, outcome in conn.execute(
                select(decisions.c.id, decisions.c.item_id, decisions.c.probs, decisions.c.outcome).order_by(
                    decisions.c.id
                )
            ):
                if item in wanted:
                    out[item] = (probs, outcome, did)
        return out

    def audited(self, model_version: str | None = None, since: float = 0.0) -> list[AuditedDecision]:
        """The audited decisions (logged since then) whose tasks are all finished, oldest first."""
        pending = select(tasks.c.decision_id).where(tasks.c.status.in_((OPEN, CLAIMED)))
        columns = (decisions.c.id, decisions.c.probs, decisions.c.outcome, decisions.c.policy_version)
        query = select(*columns, decisions.c.policy_score, decisions.c.unfamiliarity).where(
            decisions.c.audit.is_(True), decisions.c.id.not_in(pending), decisions.c.created_at >= since
        )
        if model_version is not None:
            query = query.where(decisions.c.model_version == model_version)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(decisions.c.id))
            return [AuditedDecision(r[0], r[1], r[2] == "deferred", r[3], r[4], r[5]) for r in rows]

    def flags(self, policy_version: str, since: float = 0.0) -> list[tuple[bool, bool]]:
        """(deferred, deferred as unfamiliar) of each decision logged under one policy version since then, oldest
        first."""
        query = (
            select(decisions.c.outcome, decisions.c.defer_reason)
            .where(decisions.c.policy_version == policy_version, decisions.c.created_at >= since)
            .order_by(decisions.c.id)
        )
        with self.engine.connect() as conn:
            return [(o == "deferred", r == "unfamiliar") for o, r in conn.execute(query)]

    def answers_by_item(self, decision_ids: Sequence[int]) -> dict[int, list]:
        """(reviewer, task kind, verdict, label, view) rows per decision, oldest first."""
        out: dict[int, list] = {d: [] for d in decision_ids}
        answer = (reviews.c.reviewer, tasks.c.kind, reviews.c.verdict, reviews.c.label, reviews.c.view)
        with self.engine.connect() as conn:
            for row in conn.execute(
                select(reviews.c.decision_id, *answer)
                .join(tasks, tasks.c.id == reviews.c.task_id)
                .where(reviews.c.decision_id.in_(list(decision_ids)))
                .order_by(reviews.c.id)
            ):
                out[row[0]].append(row[1:])
        return out

    def count_items(self, exclude_prefix: str = "") -> int:
        """Decisions logged, leaving out item ids that start with `exclude_prefix`."""
        query = select(func.count()).select_from(decisions)
        if exclude_prefix:
            query = query.where(func.substr(decisions.c.item_id, 1, len(exclude_prefix)) != exclude_prefix)
        with self.engine.connect() as conn:
            return conn.execute(query).scalar_one()

    def latest_model(self) -> str | None:
        """The model version of the latest decision: the model being served."""
        with self.engine.connect() as conn:
            return conn.execute(select(decisions.c.model_version).order_by(decisions.c.id.desc()).limit(1)).scalar()

    def live_deferral(self, policy_version: str) -> tuple[int, int]:
        """(deferred, all) decisions logged under one policy version."""
        with self.engine.connect() as conn:
            by = dict(
                conn.execute(
                    select(decisions.c.outcome, func.count())
                    .where(decisions.c.policy_version == policy_version)
                    .group_by(decisions.c.outcome)
                ).all()
            )
        return by.get("deferred", 0), sum(by.values())

    def stats(self, audit_reviewers: int) -> dict:
        """Decisions, queue, audit progress, unresolved items and webhook backlog, from one look at the log."""
        now = time.time()
        with self.engine.connect() as conn:
            by = dict(conn.execute(select(decisions.c.outcome, func.count()).group_by(decisions.c.outcome)).all())
            open_ = conn.execute(select(func.count()).where(claimable(now))).scalar_one()
            claimed = conn.execute(
                select(func.count()).where(tasks.c.status == CLAIMED, tasks.c.lease_expires_at >= now)
            ).scalar_one()
            done = conn.execute(select(func.count()).where(tasks.c.status == DONE)).scalar_one()
            latency = conn.execute(select(func.avg(reviews.c.latency_s))).scalar_one()
            audited = conn.execute(select(func.count()).where(decisions.c.audit.is_(True))).scalar_one()
            pending = select(tasks.c.decision_id).where(tasks.c.status.in_((OPEN, CLAIMED)))
            audits_closed = conn.execute(
                select(func.count()).where(decisions.c.audit.is_(True), decisions.c.id.not_in(pending))
            ).scalar_one()
            latest = select(func.max(outcomes.c.id)).group_by(outcomes.c.decision_id)
            finals = dict(
                conn.execute(
                    select(outcomes.c.status, func.count()).where(outcomes.c.id.in_(latest)).group_by(outcomes.c.status)
                ).all()
            )
            short = conn.execute(
                select(func.count()).where(outcomes.c.id.in_(latest), outcomes.c.reason.like("closed after%"))
            ).scalar_one()
            webhooks, failed = count_backlog(conn)
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
            "audited_items": audited,
            "audits_closed": audits_closed,
            "audit_reviewers": audit_reviewers,
            "unresolved_items": finals.get("unresolved", 0),
            "closed_short": short,
            "webhooks_pending": webhooks,
            "webhooks_failed": failed,
        }
