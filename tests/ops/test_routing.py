"""Routing: the expected gain of a reviewer answering a deferred task, the age boost and the staffing limit that
keep anything from starving, the cold start, and the queue claiming in the ranked order on a real database."""

from __future__ import annotations

import doctest

import numpy as np

from teaming.ops import routing
from teaming.ops.consensus import Skills
from teaming.ops.routing import RoutingRules, Waiting, confusion_of, gain, rank
from tests.ops.test_loop import log
from tests.ops.test_loop import loop as loop  # noqa: F401  (the fixture)

BIRD, CAT, DOG = 0, 1, 2
RULES = RoutingRules(top=2, age_weight=0.25, max_wait_seconds=3600)


def test_the_doc_examples_hold():
    assert doctest.testmod(routing).failed == 0


def expert_in(cls: int, good: float = 0.95, poor: float = 0.5) -> np.ndarray:
    """A reviewer right `good` of the time on `cls`, `poor` elsewhere, wrong answers spread evenly."""
    acc = np.full(3, poor)
    acc[cls] = good
    return np.array([[a if j == i else (1 - a) / 2 for j in range(3)] for i, a in enumerate(acc)])


def task(task_id: int, probs, waited: float = 0.0, skipped: bool = False) -> Waiting:
    return Waiting(task_id, np.asarray(probs, dtype=float), waited, skipped)


def test_each_reviewer_gets_the_item_they_add_most_to():
    birdish, doggish = task(1, [0.5, 0.4, 0.1]), task(2, [0.1, 0.4, 0.5])
    assert rank([birdish, doggish], expert_in(BIRD), RULES) == [1, 2]
    assert rank([birdish, doggish], expert_in(DOG), RULES) == [2, 1]
    sure = task(3, [0.02, 0.96, 0.02])  # the model is nearly sure: a person adds little, or loses
    assert gain(sure.probs, expert_in(CAT), 2) < gain(birdish.probs, expert_in(CAT), 2)


def test_waiting_raises_a_task_and_past_the_limit_it_comes_first():
    better, older = task(1, [0.5, 0.4, 0.1]), task(2, [0.4, 0.5, 0.1], waited=1800)
    expert = expert_in(BIRD)
    assert rank([better, task(2, older.probs)], expert, RULES) == [1, 2]
    assert gain(better.probs, expert, 2) - gain(older.probs, expert, 2) < 0.25 * 0.5  # half an hour outweighs it
    assert rank([better, older], expert, RULES) == [2, 1]
    overdue = task(3, [0.02, 0.96, 0.02], waited=4000)
    assert rank([better, older, overdue], expert, RULES)[0] == 3  # the staffing limit beats any gain
    assert rank([task(4, [0.5, 0.4, 0.1], skipped=True), overdue], expert, RULES) == [3, 4]  # skipped: last


def test_a_new_reviewer_starts_from_the_team_and_before_any_fit_oldest_first():
    skills = Skills(prior=np.full(3, 1 / 3), confusion={"ann": expert_in(BIRD), "ben": expert_in(DOG)}, items=50)
    assert np.allclose(confusion_of(skills, "newcomer"), (expert_in(BIRD) + expert_in(DOG)) / 2)
    assert confusion_of(skills, "ann") is skills.confusion["ann"] and confusion_of(None, "ann") is None
    tasks = [task(1, [0.5, 0.4, 0.1], waited=10), task(2, [0.1, 0.4, 0.5], waited=20)]
    assert rank(tasks, None, RULES) == [2, 1]  # no skills yet: everyone alike, the oldest first


def test_the_queue_claims_in_the_ranked_order_and_passes_over_a_taken_task(loop):
    ids = [log(loop, deferred=True, audited=False) for _ in range(3)]
    audit = log(loop, deferred=False, audited=True)
    newest_first = lambda waiting: [w.task_id for w in sorted(waiting, key=lambda w: -w.task_id)]  # noqa: E731
    waiting = loop.store.queue.waiting_deferrals("alice", now=1e12)
    assert len(waiting) == 3 and all(w.probs.shape == (3,) and not w.skipped for w in waiting)
    first = loop.store.queue.claim("alice", 60, order=newest_first)
    assert first.decision_id == ids[2] and first.kind == "defer"
    second = loop.store.queue.claim("bob", 60, order=newest_first)  # alice holds the best one: bob gets the next
    assert second.decision_id == ids[1]
    taken = [loop.store.queue.claim(r, 60, order=newest_first) for r in ("carol", "dave", "erin")]
    assert [c.decision_id for c in taken[:1]] == [ids[0]]  # then the audits, in the queue's own order
    assert all(c.kind == "audit" and c.decision_id == audit for c in taken[1:])
