"""The review loop on a real database: audits finish with exactly k reviewers, consensus changes final answers,
"none of these" and "can't tell" close items, overdue items close with what they have, events are written."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from teaming.ops.log import NewDecision
from teaming.ops.loop import ReviewLoop
from teaming.ops.review import Answer, LoopRules, keeps_image, review_tasks
from teaming.ops.schema import events, tasks
from teaming.ops.store import Store

CLASSES = ["cat", "dog", "ship"]
CAT, DOG, SHIP = 0, 1, 2


@pytest.fixture
def loop(db_url) -> ReviewLoop:
    store = Store(db_url)
    yield ReviewLoop(store, CLASSES, LoopRules(audit_reviewers=3, unresolved_after=2), webhooks=True)
    store.dispose()


def log(loop: ReviewLoop, deferred: bool, audited: bool, machine: int = DOG) -> int:
    probs = [0.1, 0.1, 0.1]
    probs[machine] = 0.8
    d = NewDecision(
        f"item-{time.time_ns()}",
        "deferred" if deferred else "auto",
        machine,
        0.8,
        probs,
        "m@1",
        "p",
        audited,
        b"img" if keeps_image(deferred, audited) else None,
        "image/jpeg",
        review_tasks(deferred, audited, 3),
    )
    return loop.store.log.record([d])[0][0]


def work(loop: ReviewLoop, reviewer: str, answer: int | str):
    """`reviewer` claims the next task and answers a class id, "none" or "unsure"; None when nothing is left."""
    c = loop.store.queue.claim(reviewer, 60)
    if c is None:
        return None
    verdict, label = ("class", answer) if isinstance(answer, int) else (answer, None)
    return loop.answer(c.task_id, c.lease_id, reviewer, verdict, label)


def final(loop: ReviewLoop, decision_id: int):
    return loop.store.log.outcomes(decision_ids=[decision_id])[0]


def open_tasks(loop: ReviewLoop) -> int:
    with loop.store.engine.connect() as conn:
        return len(conn.execute(select(tasks.c.id).where(tasks.c.status.in_(("open", "claimed")))).all())


def event_kinds(loop: ReviewLoop) -> list[str]:
    with loop.store.engine.connect() as conn:
        return conn.execute(select(events.c.kind).order_by(events.c.id)).scalars().all()


def test_an_audited_deferred_item_finishes_with_exactly_k_reviewers(loop):
    did = log(loop, deferred=True, audited=True)
    assert open_tasks(loop) == 3  # the defer reviewer is one of the k = 3
    work(loop, "alice", CAT)
    f = final(loop, did)
    assert (f.status, f.label, f.source, f.closed) == ("answered", CAT, "reviewer", False)  # the caller's answer
    work(loop, "bob", DOG)
    work(loop, "carol", DOG)
    assert work(loop, "alice", CAT) is None and open_tasks(loop) == 0  # nothing stuck with three people
    f = final(loop, did)
    assert (f.status, f.label, f.source, f.method, f.n_labels, f.closed) == (
        "answered",
        DOG,
        "consensus",
        "majority",
        3,
        True,
    )
    assert event_kinds(loop) == ["outcome.set", "outcome.changed"]


def test_audits_change_an_auto_answer_when_the_consensus_differs(loop):
    did = log(loop, deferred=False, audited=True, machine=DOG)
    for reviewer in ("alice", "bob"):
        work(loop, reviewer, CAT)
        assert final(loop, did).status is None  # the model's answer stands until the audit closes
    work(loop, "carol", CAT)
    f = final(loop, did)
    assert (f.status, f.label, f.closed) == ("answered", CAT, True)
    agreeing = log(loop, deferred=False, audited=True, machine=SHIP)
    for reviewer in ("alice", "bob", "carol"):
        work(loop, reviewer, SHIP)
    assert final(loop, agreeing).label == SHIP and final(loop, agreeing).closed
    assert event_kinds(loop) == ["outcome.changed"]  # an audit that agrees sends nothing


def test_none_of_these_and_cant_tell_close_an_item_as_unresolved(loop):
    did = log(loop, deferred=True, audited=False)
    work(loop, "alice", "unsure")
    assert final(loop, did).status is None and open_tasks(loop) == 1  # a new defer task, for someone else
    assert work(loop, "alice", CAT) is None  # alice has seen it
    work(loop, "bob", "none")
    f = final(loop, did)
    assert (f.status, f.label, f.closed) == ("unresolved", None, True) and "none of these" in f.reason
    assert open_tasks(loop) == 0 and event_kinds(loop) == ["outcome.unresolved"]
    assert loop.store.log.stats(3)["unresolved_items"] == 1


def test_a_cant_tell_then_an_answer_gives_the_caller_that_answer(loop):
    did = log(loop, deferred=True, audited=False)
    work(loop, "alice", "unsure")
    work(loop, "bob", SHIP)
    f = final(loop, did)
    assert (f.status, f.label, f.closed) == ("answered", SHIP, True) and open_tasks(loop) == 0


def test_too_few_reviewers_close_after_the_close_time(loop):
    did = log(loop, deferred=False, audited=True, machine=DOG)
    work(loop, "alice", CAT)
    work(loop, "bob", CAT)
    assert work(loop, "alice", CAT) is None and work(loop, "bob", CAT) is None  # no third person
    assert loop.close_overdue(3600) == 0  # not yet
    time.sleep(0.05)
    assert loop.close_overdue(0.01) == 1
    f = final(loop, did)
    assert (f.status, f.label, f.closed) == ("answered", CAT, True) and f.reason.startswith("closed after")
    assert "with 2 of 3 answers" in f.reason and open_tasks(loop) == 0
    assert loop.store.log.stats(3)["closed_short"] == 1


def test_dawid_skene_weighs_reviewers_by_their_skill(loop):
    """Two careful reviewers and one who always answers ship: once fitted, ship alone does not carry a tie."""
    for i in range(40):
        did = log(loop, deferred=False, audited=True, machine=i % 2)
        for reviewer, answer in (("careful-1", i % 2), ("careful-2", i % 2), ("shipper", SHIP)):
            c = loop.store.queue.claim(reviewer, 60)
            assert c.decision_id == did
            loop.answer(c.task_id, c.lease_id, reviewer, "class", answer)
    skills = loop.refresh_skills()
    assert skills is not None and skills.accuracy("careful-1") > 0.9 > skills.accuracy("shipper")
    did = log(loop, deferred=True, audited=False)
    c = loop.store.queue.claim("shipper", 60)
    loop.answer(c.task_id, c.lease_id, "shipper", "class", SHIP)
    assert final(loop, did).label == SHIP  # one answer is the answer
    split = [Answer("shipper", "audit", "class", SHIP), Answer("careful-1", "audit", "class", CAT)]
    assert skills.vote(split) == CAT


def test_a_second_opinion_is_asked_until_model_and_people_are_sure(db_url):
    store = Store(db_url)
    rules = LoopRules(audit_reviewers=3, unresolved_after=2, second_opinion_below=0.95, max_opinions=3)
    loop = ReviewLoop(store, CLASSES, rules, webhooks=True)
    did = log(loop, deferred=True, audited=False, machine=DOG)  # the model: dog 0.8
    work(loop, "alice", CAT)  # one person against the model: cat at 0.66
    f = final(loop, did)
    assert (f.label, f.method, f.closed) == (CAT, "posterior", False) and open_tasks(loop) == 1
    assert work(loop, "alice", CAT) is None  # the next opinion is someone else's
    work(loop, "bob", CAT)  # two people: cat at 0.97
    f = final(loop, did)
    assert (f.label, f.source, f.method, f.n_labels, f.closed) == (CAT, "consensus", "posterior", 2, True)
    assert open_tasks(loop) == 0 and event_kinds(loop) == ["outcome.set"]  # the caller heard once: cat
    store.dispose()
