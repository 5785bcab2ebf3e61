"""What a reviewer may see: a prediction set only on a random share of defer tasks, never on an audit; each answer
records its view; retune and the audit estimates take only blind answers as "the person"; the arms compare."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from sqlalchemy import select

from teaming.ops import views
from teaming.ops.review import AUDIT, BLIND, CLASS, DEFER, Answer, audit_answers
from teaming.ops.schema import reviews
from teaming.ops.views import LENIENT, STRICT, View, ViewRules, in_set_arm, reviewer_view, view_arms
from teaming.policy.sets import PredictionSets
from tests.ops.test_loop import CAT, DOG, SHIP, log, work
from tests.ops.test_loop import loop as loop  # noqa: F401  (the fixture)

SETS = PredictionSets(coverage=0.9, qhat=0.85, n_items=300, on="deferred")
PROBS = [0.6, 0.3, 0.1]


def test_the_doc_examples_hold():
    assert doctest.testmod(views).failed == 0


@pytest.mark.parametrize("mode", [LENIENT, STRICT])
def test_an_audit_task_never_shows_a_set(mode):
    rules = ViewRules(mode, share=1.0)
    assert all(reviewer_view(t, AUDIT, PROBS, SETS, rules) == View(BLIND) for t in range(1, 500))
    assert reviewer_view(1, DEFER, PROBS, SETS, rules) == View(mode, (0, 1))  # p >= 0.15: the top two


def test_off_or_without_sets_or_on_an_unfamiliar_image_every_task_is_blind():
    assert reviewer_view(1, DEFER, PROBS, SETS, ViewRules("off", share=1.0)) == View(BLIND)
    assert reviewer_view(1, DEFER, PROBS, SETS, ViewRules(STRICT, share=1.0), unfamiliar=True) == View(BLIND)
    assert reviewer_view(1, DEFER, PROBS, None, ViewRules(LENIENT, share=1.0)) == View(BLIND)
    assert reviewer_view(1, DEFER, PROBS, SETS, ViewRules(LENIENT, share=0.0)) == View(BLIND)


def test_the_set_arm_is_a_stable_random_share_of_defer_tasks():
    shown = np.array([in_set_arm(t, 0.3) for t in range(1, 5001)])
    assert abs(shown.mean() - 0.3) < 0.02
    assert [in_set_arm(t, 0.3) for t in range(1, 5001)] == list(shown)  # a task claimed again: the same view
    assert not any(shown[:100] & ~np.array([in_set_arm(t, 0.6) for t in range(1, 101)]))  # nested by share


def _item(asked: int, view: str, auditors: tuple[int, ...]) -> list[Answer]:
    said = [Answer("ann", DEFER, CLASS, asked, view)]
    return said + [Answer(f"r{k}", AUDIT, CLASS, label) for k, label in enumerate(auditors)]


def test_arms_pair_the_asked_reviewer_with_a_blind_auditor_of_the_same_item():
    items = [_item(CAT, LENIENT, (DOG, CAT))] * 12 + [_item(CAT, LENIENT, (CAT, CAT))] * 5
    items += [_item(CAT, BLIND, (CAT, CAT))] * 4 + [_item(DOG, BLIND, (CAT, CAT))]
    arms = view_arms(items + [_item(CAT, LENIENT, (CAT,))])  # one auditor: no reference left, left out
    lenient, blind = arms[LENIENT], arms[BLIND]
    assert (lenient.items, lenient.asked_right, lenient.auditor_right) == (17, 17, 5)
    assert (lenient.only_asked, lenient.only_auditor) == (12, 0) and lenient.p == pytest.approx(2 * 0.5**12)
    assert (blind.items, blind.only_asked, blind.only_auditor, blind.p) == (5, 0, 1, 1.0)
    assert "McNemar p = 0.00049" in lenient.line()


def test_an_answer_given_with_a_set_never_stands_for_the_person():
    shown = _item(SHIP, STRICT, (CAT, CAT, DOG))  # the auditors: the first stands in, the rest vote
    probs, human, ref = audit_answers([(PROBS, True, shown), (PROBS, True, _item(SHIP, BLIND, (CAT, CAT)))])
    assert list(human) == [CAT, SHIP] and list(ref) == [CAT, CAT]


def test_each_answer_records_the_view_its_task_was_claimed_with(loop):
    log(loop, deferred=True, audited=True)
    claim = loop.store.queue.claim("alice", 60)
    assert claim.kind == DEFER and claim.probs == pytest.approx([0.1, 0.8, 0.1])
    loop.store.queue.record_view(claim.task_id, "0" * 32, STRICT)  # another lease: not this one's view
    loop.store.queue.record_view(claim.task_id, claim.lease_id, LENIENT)
    loop.answer(claim.task_id, claim.lease_id, "alice", CLASS, DOG)
    work(loop, "bob", DOG)
    work(loop, "carol", CAT)
    with loop.store.engine.connect() as conn:
        said = conn.execute(select(reviews.c.reviewer, reviews.c.view).order_by(reviews.c.id)).all()
    assert said == [("alice", LENIENT), ("bob", BLIND), ("carol", BLIND)]
    rows = loop.store.log.answers_by_item([claim.decision_id])[claim.decision_id]
    assert [Answer(*r).view for r in rows] == [LENIENT, BLIND, BLIND]
