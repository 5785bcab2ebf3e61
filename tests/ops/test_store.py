"""The decision log, review queue and policy versions on a real SQLite file and on the PostgreSQL server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from teaming._validation import InputError
from teaming.ops.log import NewDecision
from teaming.ops.queue import Conflict, NotFound
from teaming.ops.review import keeps_image, review_tasks
from teaming.ops.schema import decisions, tasks
from teaming.ops.store import Store


@pytest.fixture
def store(db_url) -> Store:
    s = Store(db_url)
    yield s
    s.dispose()


def decision(i: int, outcome: str = "deferred", audit: bool = False, label: int = 3) -> NewDecision:
    probs = [0.05] * 10
    probs[label] = 0.55
    deferred = outcome == "deferred"
    image = b"jpeg-bytes" if keeps_image(deferred, audit) else None
    tasks_ = review_tasks(deferred, audit)
    return NewDecision(f"item/{i}", outcome, label, 0.55, probs, "m@1", "p-1", audit, image, "image/jpeg", tasks_)


def test_record_claim_submit(store):
    (d0, [t0]), (d1, t1) = store.log.record([decision(0), decision(1, "auto")])
    assert t1 == []  # only deferred items get a task
    c = store.queue.claim("alice", 60)
    assert c.task_id == t0 and c.item_id == "item/0" and c.kind == "defer"
    again = store.queue.claim("alice", 60)  # a second claim while she holds one (a page reload): the same lease
    assert (again.task_id, again.lease_id) == (c.task_id, c.lease_id)
    done = store.queue.submit(c.task_id, c.lease_id, "alice", 7)
    assert store.queue.claim("alice", 60) is None  # nothing else to do
    assert done.answer_id > 0 and done.latency_s >= 0 and done.decision_id == d0
    assert [(r.kind, r.verdict, r.label, r.reviewer) for r in store.log.reviews_of(d0)] == [
        ("defer", "class", 7, "alice")
    ]
    stats = store.log.stats(3)
    assert stats["decisions"] == 2 and stats["deferral_rate"] == 0.5 and stats["reviews_done"] == 1
    assert store.queue.image(c.task_id) == (b"jpeg-bytes", "image/jpeg")


def test_bulk_record_maps_ids_back_in_order(store):
    """One batch mixing auto, deferred and audited items: every id goes back to its own item."""
    items = [decision(i, "deferred" if i % 3 == 0 else "auto", audit=i % 4 == 0, label=i % 10) for i in range(40)]
    ids = store.log.record(items)
    assert len(ids) == 40 and len({d for d, _ in ids}) == 40
    assert store.log.record([]) == []
    with store.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(decisions.select())}
        kinds = {}
        for t in conn.execute(tasks.select()):
            kinds.setdefault(t.decision_id, []).append((t.kind, t.id))
    for item, (did, task_ids) in zip(items, ids):
        assert rows[did].item_id == item.item_id and rows[did].machine_label == item.machine_label
        kind_of = {t: k for k, t in kinds.get(did, [])}
        assert [kind_of[t] for t in task_ids] == list(item.tasks) and len(task_ids) == len(kind_of)
        assert (rows[did].image is not None) == (item.outcome == "deferred" or item.audit)


def test_refusals_change_nothing(store):
    [(d, _)] = store.log.record([decision(0)])
    c = store.queue.claim("alice", 60)
    with pytest.raises(Conflict, match="not yours"):
        store.queue.submit(c.task_id, "wrong-lease", "alice", 1)
    with pytest.raises(Conflict, match="not yours"):
        store.queue.submit(c.task_id, c.lease_id, "mallory", 1)
    store.queue.submit(c.task_id, c.lease_id, "alice", 1)
    with pytest.raises(Conflict, match="already resolved"):
        store.queue.submit(c.task_id, c.lease_id, "alice", 2)
    with pytest.raises(NotFound, match="unknown review task"):
        store.queue.submit(999999, c.lease_id, "alice", 1)
    with pytest.raises(NotFound, match="unknown review task"):
        store.queue.image(999999)
    with store.begin() as conn, pytest.raises(NotFound, match="unknown decision"):
        store.log.decision(conn, 424242)
    assert [r.label for r in store.log.reviews_of(d)] == [1]  # the refused writes changed nothing


def test_a_task_given_back_says_so_when_answered_or_skipped_again(store):
    store.log.record([decision(0)])
    c = store.queue.claim("alice", 60)
    store.queue.skip(c.task_id, c.lease_id, "alice")
    for again in (
        lambda: store.queue.skip(c.task_id, c.lease_id, "alice"),
        lambda: store.queue.submit(c.task_id, c.lease_id, "alice", 1),
    ):
        with pytest.raises(Conflict, match=f"review task {c.task_id} is not claimed .never, or given back"):
            again()
    assert store.queue.claim("bob", 60).task_id == c.task_id  # still open, for someone else first


def test_lease_expires_and_item_returns(store):
    store.log.record([decision(0)])
    c = store.queue.claim("alice", 0.3)
    assert store.queue.claim("bob", 60) is None  # held by alice
    time.sleep(0.5)
    with pytest.raises(Conflict, match="expired"):
        store.queue.submit(c.task_id, c.lease_id, "alice", 1)
    again = store.queue.claim("bob", 60)
    assert again.task_id == c.task_id and again.lease_id != c.lease_id
    with pytest.raises(Conflict):
        store.queue.submit(c.task_id, c.lease_id, "alice", 1)  # alice's stale lease cannot overwrite bob
    store.queue.submit(again.task_id, again.lease_id, "bob", 2)


def test_a_skipped_item_goes_to_someone_else_first(store):
    store.log.record([decision(0), decision(1)])
    first = store.queue.claim("alice", 60)
    store.queue.skip(first.task_id, first.lease_id, "alice")
    assert store.log.stats(3)["queue_open"] == 2
    other = store.queue.claim("alice", 60)
    assert other.task_id != first.task_id  # alice gets the item she did not skip
    assert store.queue.claim("bob", 60).task_id == first.task_id  # bob gets the skipped one
    store.queue.skip(other.task_id, other.lease_id, "alice")
    assert store.queue.claim("alice", 60).task_id == other.task_id  # nothing else left: it comes back


def test_a_reviewer_never_gets_two_tasks_of_one_item(store):
    store.log.record([decision(i, "auto" if i % 2 else "deferred", audit=True, label=i % 10) for i in range(6)])
    seen: dict[str, set[int]] = {}
    while True:
        progressed = False
        for reviewer in ("r1", "r2", "r3"):
            c = store.queue.claim(reviewer, 60)
            if c is None:
                continue
            progressed = True
            assert c.decision_id not in seen.setdefault(reviewer, set())  # independent reviewers
            seen[reviewer].add(c.decision_id)
            store.queue.submit(c.task_id, c.lease_id, reviewer, 1)
        if not progressed:
            break
    assert store.log.stats(3)["reviews_done"] == 6 * 3  # three people each: a deferred item's defer task counts
    assert store.log.stats(3)["audits_closed"] == 6


def test_concurrent_reviewers_never_share_an_item(store):
    n = 60
    store.log.record([decision(i) for i in range(n)])

    def work(name: str) -> list[int]:
        done = []
        while (c := store.queue.claim(name, 60)) is not None:
            store.queue.submit(c.task_id, c.lease_id, name, 1)
            done.append(c.task_id)
        return done

    with ThreadPoolExecutor(8) as pool:
        claimed = [t for f in [pool.submit(work, f"r{k}") for k in range(8)] for t in f.result()]
    assert len(claimed) == n and len(set(claimed)) == n  # nothing lost, nothing claimed twice
    assert store.log.stats(3)["reviews_done"] == n and store.log.stats(3)["queue_open"] == 0


def test_policy_versions_are_active_per_model(store):
    assert store.active_policy("m@1") is None
    store.add_policy({"version": "v1", "x": 1}, "m@1")
    store.add_policy({"version": "v2", "x": 2}, "m@1")
    store.add_policy({"version": "w1", "x": 3}, "other@2")
    assert store.active_policy("m@1")["version"] == "v2" and store.active_policy_version("other@2") == "w1"
    store.add_policy({"version": "v1", "x": 1}, "m@1")  # re-activating an old version
    assert store.active_policy("m@1")["version"] == "v1" and store.active_policy("other@2")["version"] == "w1"
    store.add_policy({"version": "v3"}, "m@1", activate=False)
    assert store.active_policy_version("m@1") == "v1"


def test_a_new_sqlite_log_gets_its_folder(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'runs' / 'nested' / 'teaming.db'}")
    assert (tmp_path / "runs" / "nested" / "teaming.db").exists() and store.ping()
    with store.engine.connect() as conn:
        assert conn.execute(select(decisions.c.id)).all() == []
    store.dispose()


def test_a_file_path_or_a_missing_log_is_refused_before_anything_is_made(tmp_path):
    with pytest.raises(InputError, match="'runs/teaming.db' is not a database URL; a SQLite file is sqlite:///"):
        Store("runs/teaming.db")
    with pytest.raises(InputError, match="no database at"):
        Store(f"sqlite:///{tmp_path / 'typo' / 'teaming.db'}", must_exist=True)
    assert not (tmp_path / "typo").exists()


def test_one_reviewer_bursting_claims_gets_distinct_items_and_a_capped_number_of_leases(store):
    """Sixty-four claims at once by one reviewer: never two tasks of one item, never more leases than allowed."""
    store.log.record([decision(i, "auto", audit=True) for i in range(20)])  # 60 audit tasks, 3 per item

    def claim(_):
        return store.queue.claim("alice", 60, max_leases=4)

    with ThreadPoolExecutor(16) as pool:
        claims = [c for c in pool.map(claim, range(64)) if c is not None]
    tasks_held = {c.task_id for c in claims}
    items = {c.decision_id for c in claims}
    assert len(tasks_held) == len(items) <= 4  # one task per item, at most four live leases
    with store.engine.connect() as conn:
        live = conn.execute(select(tasks.c.decision_id).where(tasks.c.claimed_by == "alice")).scalars().all()
    assert len(live) == len(set(live)) == len(tasks_held)


def test_images_go_only_to_the_lease_holder(store):
    [(_, [task])] = store.log.record([decision(0)])
    with pytest.raises(NotFound, match="claim it first"):
        store.queue.image(task, holder="alice")
    c = store.queue.claim("alice", 60)
    assert store.queue.image(task, holder="alice") == (b"jpeg-bytes", "image/jpeg")
    with pytest.raises(NotFound):
        store.queue.image(task, holder="bob")
    assert store.queue.image(c.task_id) == (b"jpeg-bytes", "image/jpeg")  # the admin sees any


def test_ids_past_32_bits_are_rows_like_any_other(store):
    """64-bit ids (migration 0003 on PostgreSQL): a task id past 2^31 is an unknown row, not an overflow."""
    for task_id in (2**31, 2**62):
        with pytest.raises(NotFound, match="unknown review task"):
            store.queue.image(task_id)
        with pytest.raises(NotFound):
            store.queue.submit(task_id, "0" * 32, "alice", 1)


def test_a_postgres_engine_gives_up_on_a_silent_database(postgres_url):
    """A replica cut off from PostgreSQL (packets dropped, no reset) must fail its checks in seconds, not hang:
    the engine's connections carry libpq's connect, unacknowledged-data and keepalive timeouts, and a URL that
    sets one keeps its own."""
    from teaming.ops.store import connect

    def conninfo(url: str) -> dict[str, str]:
        engine = connect(url)
        try:
            with engine.connect() as conn:
                info = conn.connection.dbapi_connection.pgconn.info
                return {o.keyword.decode(): (o.val or b"").decode() for o in info}
        finally:
            engine.dispose()

    info = conninfo(postgres_url)
    assert (info["connect_timeout"], info["tcp_user_timeout"], info["keepalives_idle"]) == ("5", "10000", "10")
    assert conninfo(f"{postgres_url}?connect_timeout=9")["connect_timeout"] == "9"


def test_postgres_sessions_end_when_left_idle_inside_a_transaction(postgres_url):
    """A client cut off between its write and its commit leaves no locks held for long."""
    from sqlalchemy import text

    from teaming.ops.store import connect

    engine = connect(postgres_url)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar() == "30s"
    engine.dispose()
