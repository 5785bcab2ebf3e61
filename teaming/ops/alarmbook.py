"""The alarms raised, in SQL: one row per policy version and monitor, so that of several replicas watching the
same log exactly one raises each alarm (and announces it, and acts on it)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from teaming.ops.schema import alarms


@dataclass
class RaisedAlarm:
    """An alarm as the book holds it."""

    policy_version: str
    name: str
    raised_at: float
    says: str
    evidence: float
    action: str | None
    cleared_at: float | None
    cleared_by: str | None


def alarm_line(a) -> str:
    """One line for a person reading a probe or a report: which alarm, on which policy, why, what was done (`a`:
    a booked alarm, as the book or the API holds it)."""
    return f"{a.name} on {a.policy_version}: {a.says}" + (f" ({a.action})" if a.action else "")


class AlarmBook:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def raise_once(self, conn: Connection, policy_version: str, name: str, says: str, evidence: float) -> bool:
        """Record the alarm in the caller's transaction; False when it was raised already (here or elsewhere)."""
        try:
            with conn.begin_nested():
                conn.execute(
                    alarms.insert().values(
                        policy_version=policy_version,
                        name=name,
                        raised_at=time.time(),
                        says=says[:512],
                        evidence=float(min(evidence, 1e300)),
                    )
                )
            return True
        except IntegrityError:
            return False

    def set_action(self, conn: Connection, policy_version: str, name: str, action: str) -> None:
        conn.execute(
            update(alarms).where(alarms.c.policy_version == policy_version, alarms.c.name == name).values(action=action)
        )

    def of(self, policy_versions: list[str] | None = None, open_only: bool = False) -> list[RaisedAlarm]:
        """Alarms of these policy versions (all when None), oldest first; only those not cleared if `open_only`."""
        query = select(*[alarms.c[k] for k in RaisedAlarm.__dataclass_fields__]).order_by(alarms.c.id)
        if policy_versions is not None:
            query = query.where(alarms.c.policy_version.in_(policy_versions))
        if open_only:
            query = query.where(alarms.c.cleared_at.is_(None))
        with self.engine.connect() as conn:
            return [RaisedAlarm(*row) for row in conn.execute(query)]

    def clear(self, conn: Connection, by: str) -> int:
        """Mark every open alarm cleared; how many."""
        return conn.execute(
            update(alarms).where(alarms.c.cleared_at.is_(None)).values(cleared_at=time.time(), cleared_by=by)
        ).rowcount
