"""Alembic owns the schema: a new database gets it, a database made before migrations (by today's
`metadata.create_all`, frozen below) is adopted and upgraded with its rows intact, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    insert,
    select,
)

from teaming.ops.schema import current_revision, head_revision, metadata, upgrade
from teaming.ops.store import Store, connect

# The schema as the first release created it with metadata.create_all (commit 2d2c199), before alembic.
legacy = MetaData()
Table(
    "decisions",
    legacy,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("item_id", String(256), nullable=False, index=True),
    Column("created_at", Float, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("machine_label", Integer, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("probs", JSON, nullable=False),
    Column("model_version", String(128), nullable=False),
    Column("policy_version", String(128), nullable=False),
    Column("audit", Boolean, nullable=False, default=False),
    Column("image", LargeBinary, nullable=True),
    Column("content_type", String(64), nullable=True),
)
Table(
    "review_tasks",
    legacy,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", Integer, ForeignKey("decisions.id"), nullable=False, index=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("claimed_by", String(128), nullable=True),
    Column("lease_id", String(64), nullable=True),
    Column("lease_expires_at", Float, nullable=True),
    Column("skips", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
)
Table(
    "reviews",
    legacy,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", Integer, ForeignKey("review_tasks.id"), nullable=False, unique=True),
    Column("decision_id", Integer, ForeignKey("decisions.id"), nullable=False, index=True),
    Column("reviewer", String(128), nullable=False),
    Column("label", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("latency_s", Float, nullable=False),
)
Table(
    "policies",
    legacy,
    Column("version", String(128), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("body", JSON, nullable=False),
    Column("active", Boolean, nullable=False, default=False),
)


def schema_diff(url: str) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    return diff


def test_a_new_database_gets_the_latest_schema(db_url):
    store = Store(db_url)
    assert current_revision(store.engine) == head_revision()
    assert schema_diff(db_url) == []  # the migrations build exactly the tables the code declares
    assert upgrade(store.engine) == (head_revision(), head_revision())  # a second run changes nothing
    store.dispose()


def test_a_database_from_before_migrations_is_upgraded_with_its_rows(db_url):
    engine = connect(db_url)
    legacy.create_all(engine)
    now = time.time()
    with engine.begin() as conn:
        row = dict(item_id="old/1", created_at=now, outcome="deferred", machine_label=3, confidence=0.4)
        row.update(probs=[0.1] * 10, model_version="m", policy_version="p", audit=False, image=b"jpeg")
        did = conn.execute(insert(legacy.tables["decisions"]).values(**row)).inserted_primary_key[0]
        conn.execute(
            insert(legacy.tables["review_tasks"]).values(
                decision_id=did, kind="defer", status="open", skips=0, created_at=now
            )
        )
        conn.execute(insert(legacy.tables["policies"]).values(version="v1", created_at=now, body={}, active=True))
    assert current_revision(engine) is None
    engine.dispose()

    store = Store(db_url)  # opening the log migrates it
    assert current_revision(store.engine) == head_revision()
    assert schema_diff(db_url) == []
    with store.engine.connect() as conn:
        assert conn.execute(select(metadata.tables["decisions"].c.item_id)).scalars().all() == ["old/1"]
    claim = store.queue.claim("alice", 60)  # the old queue item is still there to review
    assert claim is not None and claim.item_id == "old/1"
    store.queue.submit(claim.task_id, claim.lease_id, "alice", 5)
    assert [r.label for r in store.log.reviews_of(did)] == [5] and store.active_policy_version() == "v1"
    store.dispose()


def test_a_migration_behind_a_long_transaction_gives_way_to_live_writes(postgres_url):
    """A migration that must wait for a table's lock gives way every few seconds instead of queueing every live
    write behind it, and goes through once the long transaction ends."""
    import threading

    from sqlalchemy import text

    engine = connect(postgres_url)
    upgrade(engine, "0007")  # 0008 alters review_tasks
    holder = engine.connect()
    holder.begin()
    holder.execute(text("LOCK TABLE review_tasks IN ROW EXCLUSIVE MODE"))  # what a writer's open transaction holds
    migrated: list = []
    migration = threading.Thread(target=lambda: migrated.append(upgrade(engine)))
    migration.start()
    time.sleep(1)  # the migration now waits for the lock
    with engine.begin() as writer:  # a live replica's write is not stuck behind the waiting migration for long
        writer.execute(text("LOCK TABLE review_tasks IN ROW EXCLUSIVE MODE"))
    assert migration.is_alive() and not migrated  # still waiting its turn
    holder.rollback()
    holder.close()
    migration.join(timeout=120)
    assert migrated == [("0007", head_revision())]
    engine.dispose()
