"""The review loop's rules as pure functions: tasks per decision, kept images, final answers, events, and which
answers play the human and the reference in a retune."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from teaming.ops.review import (
    AUDIT,
    CLASS,
    DEFER,
    NONE,
    UNSURE,
    Answer,
    Final,
    ItemState,
    LoopRules,
    after_answer,
    audit_answers,
    close_overdue,
    consensus,
    correction_refused,
    event_kind,
    keeps_image,
    posterior,
    review_tasks,
)

RULES = LoopRules(audit_reviewers=3, unresolved_after=2)


def said(reviewer: str, label: int | None, kind: str = AUDIT, verdict: str = CLASS) -> Answer:
    return Answer(reviewer, kind, verdict, label)


def test_tasks_and_images_per_decision():
    assert review_tasks(False, False, 3) == ()
    assert review_tasks(True, False, 3) == (DEFER,)
    assert review_tasks(False, True, 3) == (AUDIT,) * 3
    assert review_tasks(True, True, 3) == (DEFER, AUDIT, AUDIT)  # the defer reviewer is one of the k
    assert keeps_image(True, False) and keeps_image(False, True) and not keeps_image(False, False)


def test_consensus_majority_ties_to_the_earliest_and_a_vote_when_given():
    assert consensus([said("a", 2)]) == (2, None)
    assert consensus([said("a", 1), said("b", 2), said("c", 2)]) == (2, "majority")
    assert consensus([said("a", 1), said("b", 2)]) == (1, "majority")
    assert consensus([said("a", 1), said("b", 2)], vote=lambda answers: 2) == (2, "dawid-skene")
    assert consensus([said("a", 1), said("b", 2)], vote=lambda answers: None) == (1, "majority")


def test_a_deferred_item_is_answered_by_its_first_class_answer():
    state = ItemState(True, False, 1, [said("a", 4, DEFER)], [], None)
    actions = after_answer(state, RULES)
    assert actions.final == Final("answered", 4, "reviewer", None, 1, True) and actions.open == []
    assert event_kind(state, actions.final) == "outcome.set"


def test_an_auto_item_keeps_the_models_answer_until_its_audit_closes():
    state = ItemState(False, True, 1, [said("a", 4)], [(7, AUDIT), (8, AUDIT)], None)
    assert after_answer(state, RULES).final is None
    state = ItemState(False, True, 1, [said("a", 4), said("b", 4), said("c", 1)], [], None)
    new = after_answer(state, RULES).final
    assert new == Final("answered", 4, "consensus", "majority", 3, True)
    assert event_kind(state, new) == "outcome.changed"


def test_non_class_answers_reopen_or_close_an_item():
    state = ItemState(True, False, 1, [said("a", None, DEFER, UNSURE)], [], None)
    assert after_answer(state, RULES).open == [DEFER]  # someone else answers for the caller
    state = ItemState(
        True, False, 1, [said("a", None, DEFER, UNSURE), said("b", None, DEFER, NONE)], [(9, AUDIT)], None
    )
    actions = after_answer(state, RULES)
    assert actions.final.status == "unresolved" and actions.cancel == [9] and actions.final.closed
    assert event_kind(state, actions.final) == "outcome.unresolved"
    assert (actions.final.method, actions.final.reason) == (
        "mixed",
        "1 answered none of these and 1 answered can't tell (2 reviewers)",
    )
    nothing = ItemState(True, False, 1, [said("a", None, DEFER, NONE), said("b", None, DEFER, NONE)], [], None)
    final = after_answer(nothing, RULES).final  # none of the classes: the caller sends it elsewhere
    assert (final.method, final.reason) == ("none", "2 answered none of these (2 reviewers)")


def test_close_overdue_answers_with_what_the_item_has():
    state = ItemState(False, True, 1, [said("a", 3)], [(5, AUDIT), (6, AUDIT)], None)
    actions = close_overdue(state, RULES, 90000)
    assert actions.cancel == [5, 6] and actions.final.label == 3 and actions.final.closed
    assert actions.final.reason == "closed after 90000 s with 1 of 3 answers"
    nobody = close_overdue(ItemState(True, False, 1, [], [(5, DEFER)], None), RULES, 10)
    assert nobody.final.status == "unresolved"


def test_audit_answers_the_asked_person_is_the_human():
    items = [
        ([0.7, 0.3], True, [said("a", 1, AUDIT), said("b", 0, DEFER), said("c", 1)]),  # human b (defer): 0, ref 1
        ([0.2, 0.8], False, [said("a", 1), said("b", 0), said("c", 1)]),  # human a (first auditor): 1, ref tie -> 0
        ([0.5, 0.5], False, [said("a", 1), said("b", None, verdict=UNSURE), said("c", 1)]),  # a non-class answer
        ([0.5, 0.5], False, [said("a", 1)]),  # nobody else answered
    ]
    probs, human, ref = audit_answers(items)
    np.testing.assert_array_equal(probs, [[0.7, 0.3], [0.2, 0.8]])
    assert human.tolist() == [0, 1] and ref.tolist() == [1, 0]
    empty = audit_answers(items[2:])
    assert [len(a) for a in empty] == [0, 0, 0]


def test_correction_refused_names_what_keeps_an_answer():
    cat, unsure = Answer("alice", "defer", "class", 0), Answer("alice", "defer", "unsure", None)
    answered = Final("answered", 0, "reviewer", None, 1, True)
    overdue = Final("answered", 0, "reviewer", None, 1, True, "closed after 90000 s with 1 of 3 answers")
    unresolved = Final("unresolved", None, "consensus", "none", 0, True, "2 answered none of these (2 reviewers)")
    state = lambda answers, final: ItemState(True, False, 1, answers, [], final)  # noqa: E731
    assert correction_refused(state([cat], answered)) is None  # a class for a class: the consensus follows
    assert correction_refused(state([unsure], None)) is None  # nothing answered yet: any verdict
    assert "names a class" in correction_refused(state([unsure], answered))  # the caller's answer rests on it
    assert "the item is closed (closed after" in correction_refused(state([cat], overdue))
    assert "the item is closed (2 answered none" in correction_refused(state([cat], unresolved))
    auto = ItemState(False, True, 1, [unsure], [(7, "audit")], Final("answered", 1, "model", None, 0))
    assert correction_refused(auto) is None  # an audit answer of an auto-answered item: the model's answer stands


def test_the_posterior_weighs_the_model_by_each_reviewers_skill():
    probs = [0.6, 0.3, 0.1]
    said = [Answer("ann", DEFER, CLASS, 1)]
    plain = posterior(probs, said)  # no skills yet: a reviewer right 90% of the time
    assert plain.argmax() == 1 and plain.sum() == pytest.approx(1.0)
    assert plain[1] == pytest.approx(0.3 * 0.9 / (0.6 * 0.05 + 0.3 * 0.9 + 0.1 * 0.05))
    careless = np.full((3, 3), 1 / 3)  # a reviewer who answers at random says nothing: the model's belief stands
    assert np.allclose(posterior(probs, said, lambda r: careless), probs)
    assert np.allclose(posterior(probs, [Answer("ann", DEFER, UNSURE, None)]), probs)


def test_a_second_opinion_is_asked_while_unsure_within_capacity():
    rules = LoopRules(second_opinion_below=0.95, max_opinions=2)
    first = ItemState(True, False, 0, [Answer("ann", DEFER, CLASS, 1)], [], None, [0.6, 0.3, 0.1])
    a = after_answer(first, rules)
    assert a.open == [DEFER] and a.final == Final("answered", 1, "reviewer", "posterior", 1, False)  # 0.89 < 0.95
    agree = replace(first, answers=first.answers + [Answer("bob", DEFER, CLASS, 1)], final=a.final)
    b = after_answer(agree, rules)
    assert b.open == [] and (b.final.label, b.final.source, b.final.closed) == (1, "consensus", True)
    sure = ItemState(True, False, 0, [Answer("ann", DEFER, CLASS, 0)], [(9, DEFER)], None, [0.9, 0.05, 0.05])
    c = after_answer(sure, rules)
    assert c.open == [] and c.cancel == [9] and c.final.closed and c.final.label == 0  # 0.99: no one else asked
    split = replace(first, answers=first.answers + [Answer("bob", DEFER, CLASS, 0)], final=a.final)
    d = after_answer(split, rules)  # still unsure, but two people is the capacity: the posterior's argmax stands
    assert d.open == [] and d.final.closed and d.final.label == 0 and d.final.method == "posterior"
    assert after_answer(replace(first, audited=True), rules).final.method is None  # audits keep their k reviewers
    assert after_answer(first, LoopRules()).open == []  # off by default: one person answers
