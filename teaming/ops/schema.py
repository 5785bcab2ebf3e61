"""The database tables of the decision log, the review queue, outcomes, the webhook outbox and the policy
versions, and `upgrade`, which brings a database to them.

Alembic owns the schema: every change is a migration in ops/migrations/versions, applied in order. A database
made before migrations existed (by `metadata.create_all`) holds exactly revision 0001's tables and is adopted
as such.
"""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from teaming._validation import DataError

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"  # the schema as metadata.create_all made it before alembic
_LOCK_ID = 0x7EA1  # PostgreSQL advisory lock: replicas starting together migrate one at a time

metadata = MetaData()
RowId = BigInteger().with_variant(Integer(), "sqlite")  # 64-bit everywhere; SQLite's INTEGER already is
decisions = Table(
    "decisions",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("item_id", String(256), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("outcome", String(16), nullable=False),  # auto | deferred
    Column("machine_label", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("probs", JSON, nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("policy_version", String(128), nullable=False),
    Column("audit", Boolean, nullable=False, default=False),
    Column("image", LargeBinary, nullable=True),  # kept only where a person must look at it
    Column("content_type", String(64), nullable=True),
    Column("defer_reason", String(16), nullable=True),  # unsure | unfamiliar (deferred items only)
    Column("unfamiliarity", Float, nullable=True),  # the model's familiarity-guard score, when it has a guard
    Column("policy_score", Float, nullable=True),  # what the policy compared with its threshold
)
tasks = Table(
    "review_tasks",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("decision_id", RowId, ForeignKey("decisions.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),  # defer | audit
    Column("status", String(16), nullable=False, index=True),  # open | claimed | done
    Column("claimed_by", String(128), nullable=True),
    Column("lease_id", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("skips", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
    Column("view", String(16), nullable=False, server_default="blind"),  # what its holder is shown (ops/views.py)
)
reviews = Table(
    "reviews",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("task_id", RowId, ForeignKey("review_tasks.id"), nullable=False, unique=True),
    Column("decision_id", RowId, ForeignKey("decisions.id"), nullable=False, index=True),
    Column("reviewer", String(128), nullable=False),
    Column("verdict", String(16), nullable=False, server_default="class"),  # class | none | unsure
    Column("label", Integer, nullable=True),  # the class id when the verdict is a class
    Column("created_at", Float, nullable=False),
    Column("latency_s", Float, nullable=False),  # decision logged -> answer submitted
    Column("corrected_at", Float, nullable=True),  # the reviewer's last correction, within the window
    Column("first_verdict", String(16), nullable=True),  # what they first said, kept when they correct it
    Column("first_label", Integer, nullable=True),
    Column("view", String(16), nullable=False, server_default="blind"),  # what the reviewer was shown
)
skips = Table(
    "skips",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("task_id", RowId, ForeignKey("review_tasks.id"), nullable=False, index=True),
    Column("reviewer", String(128), nullable=False),
    Column("created_at", Float, nullable=False),
)
outcomes = Table(  # append-only: an item's final answer each time it is set, changes or closes
    "outcomes",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("decision_id", RowId, ForeignKey("decisions.id"), nullable=False, index=True),
    Column("item_id", String(256), nullable=False, index=True),
    Column("status", String(16), nullable=False),  # answered | unresolved
    Column("label", Integer, nullable=True),
    Column("source", String(16), nullable=False),  # model | reviewer | consensus
    Column("method", String(16), nullable=True),  # majority | dawid-skene
    Column("n_labels", Integer, nullable=False),
    Column("closed", Boolean, nullable=False),
    Column("reason", String(256), nullable=True),
    Column("created_at", Float, nullable=False),
)
events = Table(  # the webhook outbox: written with the outcome it announces, delivered at least once
    "events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("event_id", String(36), nullable=False, unique=True),  # the idempotency key receivers see
    Column("decision_id", RowId, ForeignKey("decisions.id"), nullable=True, index=True),  # None: an alarm's
    Column("kind", String(32), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", Float, nullable=True, index=True),  # None once delivered or given up
    Column("locked_until", Float, nullable=True),  # a replica is delivering it until then
    Column("delivered_at", Float, nullable=True),
    Column("last_error", String(256), nullable=True),
    Column("retry_from", Float, nullable=True),  # retries began: at redelivery, else when written (created_at)
)
alarms = Table(  # one row per policy version and monitor that raised its alarm: replicas raise each once
    "alarms",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("policy_version", String(128), nullable=False),
    Column("name", String(32), nullable=False),
    Column("raised_at", Float, nullable=False),
    Column("says", String(512), nullable=False),
    Column("evidence", Float, nullable=False),
    Column("action", String(128), nullable=True),  # what the service did: the fallback policy's version
    Column("cleared_at", Float, nullable=True),
    Column("cleared_by", String(64), nullable=True),
    UniqueConstraint("policy_version", "name", name="uq_alarms_policy_name"),
)
policies = Table(
    "policies",
    metadata,
    Column("version", String(128), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("body", JSON, nullable=False),
    Column("active", Boolean, nullable=False, default=False),  # one active version per model
    Column("model_version", String(256), nullable=True, index=True),  # the model it was fitted for
    Column("activated_at", Float, nullable=True),  # when it last became active: its monitors watch from then
)


def alembic_config() -> Config:
    """Alembic's settings for this package's migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate the database to `revision` (the latest by default): (revision before, revision after).

    On PostgreSQL a migration waits at most LOCK_WAIT for a table's lock, then gives way and tries again: queued
    behind a long transaction it would otherwise stall every write of the live replicas queued behind it."""
    for attempt in range(1, MIGRATION_TRIES + 1):
        try:
            return _upgrade_once(engine, revision)
        except OperationalError as err:
            if getattr(err.orig, "sqlstate", None) != "55P03" or attempt == MIGRATION_TRIES:  # lock_not_available
                raise
            time.sleep(attempt)


LOCK_WAIT = "5s"
MIGRATION_TRIES = 10  # about 1.5 minutes of waiting and giving way in all


def _upgrade_once(engine: Engine, revision: str) -> tuple[str | None, str]:
    cfg = alembic_config()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"SELECT pg_advisory_xact_lock({_LOCK_ID})"))  # after another replica's migration
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'"))
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        if before is None and inspect(conn).has_table("decisions"):
            command.stamp(cfg, BASELINE)
            before = BASELINE
        known = {r.revision for r in ScriptDirectory.from_config(cfg).walk_revisions()}
        if before is not None and before not in known:
            raise DataError(
                f"the database's schema is at revision {before!r}, which this teaming does not know (it knows up "
                f"to {head_revision()!r}): a newer release wrote it; run that release, or upgrade this one"
            )
        command.upgrade(cfg, revision)
        after = MigrationContext.configure(conn).get_current_revision()
    return before, after
