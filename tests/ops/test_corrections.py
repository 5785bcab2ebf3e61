"""Corrections on a real database: a reviewer changes their own answer within the window and the item's
consensus, outcome and events follow; after the window, on another's answer, or on an item the loop closed, the
answer stands and nothing changes."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from teaming.ops.queue import Conflict, NotFound
from teaming.ops.schema import reviews
from tests.ops.test_loop import CAT, DOG, SHIP, event_kinds, final, log, open_tasks
from tests.ops.test_loop import loop as loop  # noqa: F401  (the fixture)

WINDOW = 60.0


def answer(loop, reviewer: str, label: int | str):
    """`reviewer` claims the next task and answers: (lease id, answer id)."""
    c = loop.store.queue.claim(reviewer, 60)
    verdict, label = ("class", label) if isinstance(label, int) else (label, None)
    done, _ = loop.answer(c.task_id, c.lease_id, reviewer, verdict, label)
    return c.lease_id, done.answer_id


def row(loop, answer_id: int):
    with loop.store.engine.connect() as conn:
        return conn.execute(select(reviews).where(reviews.c.id == answer_id)).one()


def test_a_correction_inside_the_window_changes_the_outcome_and_tells_the_caller(loop):
    did = log(loop, deferred=True, audited=False)
    lease, aid = answer(loop, "alice", CAT)
    assert final(loop, did).label == CAT
    done, new = loop.correct(aid, lease, "alice", "class", SHIP, WINDOW)
    assert done.decision_id == did and new.label == SHIP and final(loop, did).label == SHIP
    assert event_kinds(loop) == ["outcome.set", "outcome.changed"]
    r = row(loop, aid)
    assert (r.verdict, r.label, r.first_verdict, r.first_label) == ("class", SHIP, "class", CAT)
    loop.correct(aid, lease, "alice", "class", DOG, WINDOW)  # again: what she first said is kept
    assert (row(loop, aid).label, row(loop, aid).first_label) == (DOG, CAT)
    _, same = loop.correct(aid, lease, "alice", "class", DOG, WINDOW)
    assert same is None and event_kinds(loop) == ["outcome.set", "outcome.changed", "outcome.changed"]


def test_a_correction_reapplies_the_consensus_of_an_audit(loop):
    did = log(loop, deferred=False, audited=True, machine=DOG)
    answer(loop, "alice", CAT)
    lease, aid = answer(loop, "bob", CAT)
    answer(loop, "carol", DOG)
    assert final(loop, did).label == CAT and final(loop, did).closed  # two cats to one dog
    loop.correct(aid, lease, "bob", "class", DOG, WINDOW)  # bob meant dog
    assert final(loop, did).label == DOG and event_kinds(loop) == ["outcome.changed", "outcome.changed"]


def test_after_the_window_the_answer_is_final(loop):
    did = log(loop, deferred=True, audited=False)
    lease, aid = answer(loop, "alice", CAT)
    with pytest.raises(Conflict, match="is final: it can be corrected within 0 s"):
        loop.correct(aid, lease, "alice", "class", SHIP, 0.0)
    assert final(loop, did).label == CAT and row(loop, aid).corrected_at is None
    assert event_kinds(loop) == ["outcome.set"]


def test_an_item_the_loop_closed_keeps_its_answers(loop):
    did = log(loop, deferred=False, audited=True, machine=DOG)
    lease, aid = answer(loop, "alice", CAT)
    assert loop.close_overdue(0.0) == 1 and open_tasks(loop) == 0  # closed with one of three answers
    before = final(loop, did)
    with pytest.raises(Conflict, match="the item is closed \\(closed after"):
        loop.correct(aid, lease, "alice", "class", DOG, WINDOW)
    assert final(loop, did) == before and row(loop, aid).label == CAT  # the refusal changed nothing


def test_only_your_own_answer_under_its_lease_and_never_its_only_class(loop):
    did = log(loop, deferred=True, audited=False)
    lease, aid = answer(loop, "alice", CAT)
    with pytest.raises(NotFound, match=f"no answer {aid} of yours"):
        loop.correct(aid, lease, "bob", "class", SHIP, WINDOW)
    with pytest.raises(Conflict, match="another lease"):
        loop.correct(aid, "0" * 32, "alice", "class", SHIP, WINDOW)
    with pytest.raises(Conflict, match="a correction names a class"):
        loop.correct(aid, lease, "alice", "none", None, WINDOW)
    with pytest.raises(ValueError, match="a class label, or the verdict"):
        loop.correct(aid, lease, "alice", "class", None, WINDOW)
    assert final(loop, did).label == CAT and row(loop, aid).corrected_at is None


def test_a_cant_tell_corrected_to_a_class_answers_the_caller_and_closes_the_new_task(loop):
    did = log(loop, deferred=True, audited=False)
    lease, aid = answer(loop, "alice", "unsure")
    assert final(loop, did).status is None and open_tasks(loop) == 1  # a new defer task waits for someone else
    loop.correct(aid, lease, "alice", "class", CAT, WINDOW)
    assert final(loop, did).label == CAT and open_tasks(loop) == 0
    assert event_kinds(loop) == ["outcome.set"]
