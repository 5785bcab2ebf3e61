"""The decision log and review queue on a real SQLite file and on the PostgreSQL server at 127.0.0.1:5432."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from teaming.ops.review import audit_answers, keeps_image, review_tasks
from teaming.ops.schema import decisions, tasks
from teaming.ops.store import Conflict, NewDecision, NotFound, Store


@pytest.fixture
def store(db_url) -> Store:
    s = Store(db_url)
    yield s
    s.engine.dispose()


def decision(i: int, outcome: str = "deferred", audit: bool = False, label: int = 3) -> NewDecision:
    probs = [0.05] * 10
    probs[label] = 0.55
    deferred = outcome == "deferred"
    image = b"jpeg-bytes" if keeps_image(deferred, audit) else None
    return NewDecision(
        f"item/{i}",
        outcome,
        label,
        0.55,
        probs,
        "m@1",
        "p-1",
        audit,
        image,
        "image/jpeg",
        review_tasks(deferred, audit),
    )


def test_record_claim_submit_outcome(store):
    ids = store.record([decision(0), decision(1, "auto")])
    (d0, [t0]), (d1, t1) = ids
    assert t1 == []  # only deferred items get a task
    c = store.claim("alice", 60)
    assert c.task_id == t0 and c.item_id == "item/0" and c.kind == "defer"
    assert store.claim("alice", 60) is None  # nothing else to do
    review_id, latency = store.submit(c.task_id, c.lease_id, "alice", 7)
    assert review_id > 0 and latency >= 0
    out = store.outcome(d0)
    assert out.open_tasks == 0 and out.reviews[0].reviewer == "alice" and out.reviews[0].label == 7
    assert store.outcome(d1).machine_label == 3 and store.outcome(d1).reviews == []
    stats = store.stats()
    assert stats["decisions"] == 2 and stats["deferral_rate"] == 0.5 and stats["reviews_done"] == 1
    assert store.image(c.task_id) == (b"jpeg-bytes", "image/jpeg")


def test_bulk_record_maps_ids_back_in_order(store):
    """One batch mixing auto, deferred and audited items: every id goes back to its own item."""
    items = [decision(i, "deferred" if i % 3 == 0 else "auto", audit=i % 4 == 0, label=i % 10) for i in range(40)]
    ids = store.record(items)
    assert len(ids) == 40 and len({d for d, _ in ids}) == 40
    assert store.record([]) == []
    with store.engine.connect() as conn:
        rows = {r.id: r for r in conn.execute(decisions.select())}
        kinds = {}
        for t in conn.execute(tasks.select()):
            kinds.setdefault(t.decision_id, []).append((t.kind, t.id))
    for item, (did, task_ids) in zip(items, ids):
        assert rows[did].item_id == item.item_id and rows[did].machine_label == item.machine_label
        expected = (["defer"] if item.outcome == "deferred" else []) + ["audit"] * (3 * item.audit)
        assert sorted(k for k, _ in kinds.get(did, [])) == sorted(expected)
        kind_of = {t: k for k, t in kinds.get(did, [])}
        assert [kind_of[t] for t in task_ids] == list(item.tasks) and len(task_ids) == len(kind_of)
        assert (rows[did].image is not None) == (item.outcome == "deferred" or item.audit)


def test_refusals(store):
    [(d, t)] = store.record([decision(0)])
    c = store.claim("alice", 60)
    with pytest.raises(Conflict, match="not yours"):
        store.submit(c.task_id, "wrong-lease", "alice", 1)
    with pytest.raises(Conflict, match="not yours"):
        store.submit(c.task_id, c.lease_id, "mallory", 1)
    store.submit(c.task_id, c.lease_id, "alice", 1)
    with pytest.raises(Conflict, match="already resolved"):
        store.submit(c.task_id, c.lease_id, "alice", 2)
    with pytest.raises(NotFound, match="unknown review task"):
        store.submit(999999, c.lease_id, "alice", 1)
    with pytest.raises(NotFound, match="unknown decision"):
        store.outcome(424242)
    assert [r.label for r in store.outcome(d).reviews] == [1]  # the refused writes changed nothing


def test_lease_expires_and_item_returns(store):
    store.record([decision(0)])
    c = store.claim("alice", 0.3)
    assert store.claim("bob", 60) is None  # held by alice
    time.sleep(0.5)
    with pytest.raises(Conflict, match="expired"):
        store.submit(c.task_id, c.lease_id, "alice", 1)
    again = store.claim("bob", 60)
    assert again.task_id == c.task_id and again.lease_id != c.lease_id
    with pytest.raises(Conflict):
        store.submit(c.task_id, c.lease_id, "alice", 1)  # alice's stale lease cannot overwrite bob
    store.submit(again.task_id, again.lease_id, "bob", 2)


def test_skip_returns_the_item(store):
    store.record([decision(0)])
    c = store.claim("alice", 60)
    store.skip(c.task_id, c.lease_id, "alice")
    assert store.stats()["queue_open"] == 1
    assert store.claim("bob", 60).task_id == c.task_id


def test_audits_go_to_different_reviewers_and_feed_the_table(store):
    rng = np.random.default_rng(0)
    store.record([decision(i, "auto" if i % 2 else "deferred", audit=True, label=i % 10) for i in range(6)])
    seen: dict[str, set[int]] = {}
    while True:
        progressed = False
        for reviewer in ("r1", "r2", "r3", "r4"):
            c = store.claim(reviewer, 60)
            if c is None:
                continue
            progressed = True
            assert c.decision_id not in seen.setdefault(reviewer, set())  # independent reviewers
            seen[reviewer].add(c.decision_id)
            store.submit(c.task_id, c.lease_id, reviewer, int(rng.integers(0, 10)))
        if not progressed:
            break
    assert store.stats()["reviews_done"] == 6 * 3 + 3  # three audits each, plus the three deferrals
    probs, human, ref = audit_answers(store.audit_labels(), 3)
    assert probs.shape == (6, 10) and human.shape == ref.shape == (6,)


def test_concurrent_reviewers_never_share_an_item(store):
    n = 60
    store.record([decision(i) for i in range(n)])

    def work(name: str) -> list[int]:
        done = []
        while (c := store.claim(name, 60)) is not None:
            store.submit(c.task_id, c.lease_id, name, 1)
            done.append(c.task_id)
        return done

    with ThreadPoolExecutor(8) as pool:
        tasks = [t for f in [pool.submit(work, f"r{k}") for k in range(8)] for t in f.result()]
    assert len(tasks) == n and len(set(tasks)) == n  # nothing lost, nothing claimed twice
    assert store.stats()["reviews_done"] == n and store.stats()["queue_open"] == 0


def test_policy_versions(store):
    assert store.active_policy() is None
    store.add_policy({"version": "v1", "x": 1})
    store.add_policy({"version": "v2", "x": 2})
    assert store.active_policy()["version"] == "v2"
    store.add_policy({"version": "v1", "x": 1})  # re-activating an old version
    assert store.active_policy()["version"] == "v1"


def test_a_new_sqlite_log_gets_its_folder(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'runs' / 'nested' / 'teaming.db'}")
    assert (tmp_path / "runs" / "nested" / "teaming.db").exists() and store.ping()
    store.engine.dispose()
