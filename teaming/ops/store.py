"""The service's database: one engine, brought up to date by alembic when opened, with the decision log
(ops/log.py), the review queue (ops/queue.py), the webhook outbox (ops/webhooks.py) and the policy versions.

The store keeps no rule of what answers mean: ops/review.py decides, ops/loop.py applies it.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import create_engine, event, false, select, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from teaming._validation import InputError
from teaming.ops.alarmbook import AlarmBook
from teaming.ops.log import DecisionLog
from teaming.ops.queue import ReviewQueue
from teaming.ops.schema import policies, upgrade
from teaming.ops.webhooks import Outbox


def connect(url: str, must_exist: bool = False) -> Engine:
    """An engine for `url`; SQLite files run in WAL mode with a busy timeout so readers never block writers.

    InputError for a string that is no database URL (a bare file path), and with `must_exist` for a SQLite file
    that is not there: commands that read a log refuse a typo instead of making an empty database of it.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(f"{url!r} is not a database URL; a SQLite file is sqlite:///runs/teaming.db") from None
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database or ""
        if path and path != ":memory:" and not path.startswith("file:"):
            if must_exist and not Path(path).is_file():
                raise InputError(
                    f"no database at {path} (from {url}): give the URL the service logs to (TEAMING_DB_URL)"
                )
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
    bounded = {}
    if parsed.get_backend_name() == "postgresql":
        bounded = {k: v for k, v in POSTGRES_TIMEOUTS.items() if k not in parsed.query}  # the URL's own win
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=bounded)


# libpq's waits for a database that stops answering. Without them a replica cut off from PostgreSQL (packets
# dropped, no reset) hangs its readiness check and its writes for minutes, and never says it is not ready
# (bench/multihost.py). A URL that sets one of them (?connect_timeout=...) keeps its own.
POSTGRES_TIMEOUTS = {
    "connect_timeout": 5,  # seconds to open a connection
    "tcp_user_timeout": 10_000,  # ms that sent data may stay unacknowledged before the connection is dropped
    "keepalives_idle": 10,  # an idle pooled connection is probed after 10 s, given up after 3 probes 5 s apart
    "keepalives_interval": 5,
    "keepalives_count": 3,
    # the server ends a session left idle inside a transaction (a client cut off between its write and its
    # commit), whose locks would otherwise hold up a migration, and every write queued behind it, for hours
    "options": "-c idle_in_transaction_session_timeout=30s",
}


class Store:
    """The log, the queue, the outbox, the alarms and the policy versions behind one SQLAlchemy engine."""

    def __init__(self, url: str, must_exist: bool = False) -> None:
        self.url = url
        self.engine = connect(url, must_exist)
        upgrade(self.engine)  # alembic: a new database gets the schema, an older one its missing migrations
        self.log = DecisionLog(self.engine)
        self.queue = ReviewQueue(self.engine)
        self.outbox = Outbox(self.engine)
        self.alarms = AlarmBook(self.engine)

    def begin(self):
        """A transaction for the parts to share (the loop's answer, skip and close)."""
        return self.engine.begin()

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except Exception:
            return False

    def writable(self) -> bool:
        """Whether the database takes writes now: a write that changes nothing, rolled back (a read-only SQLite
        file or a PostgreSQL standby refuses it)."""
        try:
            with self.engine.connect() as conn:
                tx = conn.begin()
                conn.execute(update(policies).where(false()).values(active=policies.c.active))
                tx.rollback()
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()

    def add_policy(self, body: dict, model_version: str | None = None, activate: bool = True) -> str:
        """Store a policy version (once) for the model it was fitted for; activating it retires that model's
        previous active version."""
        with self.engine.begin() as conn:
            exists = conn.execute(select(policies.c.version).where(policies.c.version == body["version"])).first()
            if activate:
                conn.execute(update(policies).where(_of(model_version)).values(active=False))
            now = time.time()
            if exists:
                values = {"active": True, "activated_at": now} if activate else {"active": False}
                conn.execute(update(policies).where(policies.c.version == body["version"]).values(**values))
            else:
                conn.execute(
                    policies.insert().values(
                        version=body["version"],
                        created_at=now,
                        body=body,
                        active=activate,
                        model_version=model_version,
                        activated_at=now if activate else None,
                    )
                )
        return body["version"]

    def activated_at(self, version: str) -> float:
        """When a policy version last became active (0 for one stored before the time was kept)."""
        with self.engine.connect() as conn:
            at = conn.execute(select(policies.c.activated_at).where(policies.c.version == version)).scalar()
        return at or 0.0

    def active_policy_version(self, model_version: str | None = None) -> str | None:
        """The active policy's version id alone: cheap enough for every replica to poll."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(policies.c.version).where(policies.c.active.is_(True), _of(model_version))
            ).scalar()

    def policy_bodies(self, versions: set[str]) -> dict[str, dict]:
        """Stored policies by version id."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(policies.c.version, policies.c.body).where(policies.c.version.in_(versions)))
            return {r.version: r.body for r in rows}

    def previous_policies(self, model_version: str | None, before: str) -> list[dict]:
        """The model's other policy versions stored before `before`, newest first."""
        with self.engine.connect() as conn:
            at = select(policies.c.created_at).where(policies.c.version == before).scalar_subquery()
            rows = conn.execute(
                select(policies.c.body)
                .where(_of(model_version), policies.c.version != before, policies.c.created_at <= at)
                .order_by(policies.c.created_at.desc())
            )
            return [r.body for r in rows]

    def active_policy(self, model_version: str | None = None) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(policies.c.body).where(policies.c.active.is_(True), _of(model_version))).first()
        return None if row is None else row.body


def _of(model_version: str | None):
    return policies.c.model_version.is_(None) if model_version is None else policies.c.model_version == model_version
