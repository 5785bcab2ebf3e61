"""Webhooks for callers: an outbox table written in the same transaction as the outcome it announces, and a
deliverer that posts each event at least once, with retries and backoff, across restarts and replicas.

Every delivery carries the event id (`Teaming-Event-Id`, the idempotency key: a retry repeats it) and a
signature over the timestamp and the body (`Teaming-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`), as Stripe and GitHub sign theirs; receivers check it with `verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

import httpx
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import Connection, Engine

from teaming.ops.schema import events

SIGNATURE = "Teaming-Signature"
EVENT_ID = "Teaming-Event-Id"
MAX_BACKOFF_SECONDS = 300.0
RETRY_SECONDS = 24 * 3600.0  # retried this long after it was written, then given up (until redelivered)


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The signature header for `body`: t=<timestamp>,v1=<hex HMAC-SHA256 of "<t>.<body>">."""
    t = int(time.time() if timestamp is None else timestamp)
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(body: bytes, header: str | None, secret: str, tolerance: float = 300.0, now: float | None = None) -> bool:
    """True when `header` signs `body` with `secret` and its timestamp is within `tolerance` seconds of now."""
    try:
        parts = dict(p.split("=", 1) for p in (header or "").split(","))
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    expected = sign(body, secret, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


WAITING = and_(events.c.delivered_at.is_(None), events.c.next_attempt_at.isnot(None))  # to be (re)tried
GIVEN_UP = and_(events.c.delivered_at.is_(None), events.c.next_attempt_at.is_(None))  # until `teaming redeliver`


def count_backlog(conn: Connection) -> tuple[int, int]:
    """(events waiting for delivery, events given up)."""
    waiting = conn.execute(select(func.count()).where(WAITING)).scalar_one()
    given_up = conn.execute(select(func.count()).where(GIVEN_UP)).scalar_one()
    return int(waiting), int(given_up)


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts` + 1: 1, 2, 4, ... up to five minutes."""
    return min(2.0 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


class Outbox:
    """The events table: what waits to be delivered, claimed by one deliverer at a time under a short lock."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    def add(self, conn: Connection, decision_id: int, kind: str, data: dict) -> str:
        """Queue an event in the caller's transaction; returns its id (the idempotency key)."""
        now = time.time()
        event_id = str(uuid.uuid4())
        body = {"id": event_id, "type": kind, "created": now, "data": data}
        conn.execute(
            events.insert().values(
                event_id=event_id,
                decision_id=decision_id,
                kind=kind,
                body=body,
                created_at=now,
                attempts=0,
                next_attempt_at=now,
            )
        )
        return event_id

    def claim_due(self, limit: int, lock_seconds: float) -> list[tuple[int, str, dict, int, float]]:
        """(row id, event id, body, attempts so far, retries since) of due events, locked for this deliverer."""
        now = time.time()
        due = and_(
            events.c.next_attempt_at <= now,
            or_(events.c.locked_until.is_(None), events.c.locked_until < now),
        )
        query = select(events.c.id).where(due).order_by(events.c.next_attempt_at, events.c.id).limit(limit)
        with self.engine.begin() as conn:
            if self.postgres:
                query = query.with_for_update(skip_locked=True)
            ids = conn.execute(query).scalars().all()
            if not ids:
                return []
            conn.execute(update(events).where(events.c.id.in_(ids), due).values(locked_until=now + lock_seconds))
            since = func.coalesce(events.c.retry_from, events.c.created_at)
            rows = conn.execute(
                select(events.c.id, events.c.event_id, events.c.body, events.c.attempts, since).where(
                    events.c.id.in_(ids)
                )
            ).all()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def release(self, row_ids: list[int]) -> None:
        """Unlock claimed events this deliverer did not get to (its time ran out): another may take them now."""
        if row_ids:
            with self.engine.begin() as conn:
                conn.execute(update(events).where(events.c.id.in_(row_ids)).values(locked_until=None))

    def backlog(self) -> tuple[int, int]:
        """(events waiting for delivery, events given up): what the replicas still owe the caller's webhook."""
        with self.engine.connect() as conn:
            return count_backlog(conn)

    def redeliver(self, since: float = 0.0) -> int:
        """Queue again every event given up that was written at or after `since` (unix seconds); how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(events)
                .where(GIVEN_UP, events.c.created_at >= since)
                .values(next_attempt_at=time.time(), retry_from=time.time(), locked_until=None)
            )
        return int(result.rowcount or 0)

    def delivered(self, row_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(events)
                .where(events.c.id == row_id)
                .values(
                    delivered_at=time.time(), next_attempt_at=None, locked_until=None, attempts=events.c.attempts + 1
                )
            )

    def failed(self, row_id: int, attempts: int, error: str, give_up: bool) -> None:
        """Record a failed attempt; the event is retried after a backoff, or given up (kept, with its error)."""
        next_at = None if give_up else time.time() + backoff(attempts)
        with self.engine.begin() as conn:
            conn.execute(
                update(events)
                .where(events.c.id == row_id)
                .values(attempts=attempts, next_attempt_at=next_at, locked_until=None, last_error=error[:250])
            )


@dataclass
class Deliverer:
    """Posts due events to one URL, signed with one secret; run `deliver_due` over and over, on its own thread.

    An event is retried at the capped backoff until `retry_seconds` after it was written (or `max_attempts`
    attempts, when set), then given up; `Outbox.redeliver` brings given-up events back."""

    outbox: Outbox
    url: str
    secret: str
    max_attempts: int | None = None
    timeout: float = 10.0
    retry_seconds: float = RETRY_SECONDS

    def __post_init__(self) -> None:
        self.http = httpx.Client(timeout=self.timeout)

    def deliver_due(self, limit: int = 50, budget_seconds: float = 30.0) -> int:
        """Try due events once each for about `budget_seconds`, a few at a time, each few locked for as long as
        their posts can take (a slow receiver cannot let the lock lapse and another replica post them again);
        returns how many the receiver accepted (2xx)."""
        accepted, stop = 0, time.monotonic() + budget_seconds
        while limit > 0 and time.monotonic() < stop:
            few = max(1, min(limit, int(budget_seconds // self.timeout) or 1, 5))
            claimed = self.outbox.claim_due(few, lock_seconds=few * self.timeout + 30)
            if not claimed:
                break
            for k, (row_id, event_id, body, attempts, written) in enumerate(claimed):
                if time.monotonic() >= stop:
                    self.outbox.release([c[0] for c in claimed[k:]])
                    break
                accepted += self._post(row_id, event_id, body, attempts, written)
            limit -= len(claimed)
        return accepted

    def _post(self, row_id: int, event_id: str, body: dict, attempts: int, written: float) -> int:
        payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", EVENT_ID: event_id, SIGNATURE: sign(payload, self.secret)}
        try:
            r = self.http.post(self.url, content=payload, headers=headers)
            error = None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"
        if error is None:
            self.outbox.delivered(row_id)
            return 1
        expired = time.time() + backoff(attempts + 1) > written + self.retry_seconds
        capped = self.max_attempts is not None and attempts + 1 >= self.max_attempts
        self.outbox.failed(row_id, attempts + 1, error, give_up=expired or capped)
        return 0

    def close(self) -> None:
        self.http.close()
