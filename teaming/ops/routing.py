"""Which waiting deferred task a reviewer should take next: the expected gain of this reviewer answering it, as
pure functions (the queue applies them at claim time when TEAMING_ROUTING=skill).

The model's probabilities are the belief over an item's true class. A reviewer whose Dawid-Skene confusion is M
answers right with probability sum_c p_c M[c, c] over the model's top classes (where its mass is, renormalised);
the gain is that against the model's own chance of being right, its top probability. A reviewer the fit does not
know yet (cold start) is scored with the team's mean confusion; before any fit every reviewer is alike, and the
oldest task comes first. Waiting adds to a task's score (`age_weight` per hour), and a task past the staffing
limit comes before every other, oldest first, so that nothing starves. Audit tasks are never ranked: they keep the
queue's order, which knows nothing of the item or the reviewer, so the audit estimate stays blind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from teaming.ops.consensus import Skills

ROUTINGS = ("fifo", "skill")


@dataclass(frozen=True)
class RoutingRules:
    top: int = 3  # the model's top classes a reviewer's skill is read on
    age_weight: float = 0.25  # score per hour waited: an hour waited is worth 25 points of gain
    max_wait_seconds: float = 3600.0  # past it a task comes first, oldest first


@dataclass(frozen=True)
class Waiting:
    """A deferred task this reviewer may take: its id, the model's probabilities, how long it has waited, and
    whether this reviewer skipped it (skipped tasks come last, as in first come, first served)."""

    task_id: int
    probs: np.ndarray
    waited: float
    skipped: bool = False


def confusion_of(skills: Skills | None, reviewer: str) -> np.ndarray | None:
    """The reviewer's confusion (true x answered); the team's mean for one the fit does not know; None before a fit."""
    if skills is None or not skills.confusion:
        return None
    if reviewer in skills.confusion:
        return skills.confusion[reviewer]
    return np.mean(list(skills.confusion.values()), axis=0)


def gain(probs: np.ndarray, confusion: np.ndarray, top: int = 3) -> float:
    """P(this reviewer answers right) - P(the model is right), with the model's top classes as the belief.

    >>> round(gain(np.array([0.5, 0.4, 0.1]), np.eye(3)), 2)  # a perfect reviewer gains what the model lacks
    0.5
    >>> round(gain(np.array([0.5, 0.4, 0.1]), np.diag([0.9, 0.3, 0.9])), 3)  # one who confuses class 1 gains less
    0.16
    """
    order = np.argsort(-probs, kind="stable")[:top]
    belief = probs[order] / probs[order].sum()
    return float(belief @ np.diag(confusion)[order] - probs.max())


def score(task: Waiting, confusion: np.ndarray | None, rules: RoutingRules) -> float:
    """How much this reviewer answering the task is worth now: the gain, plus the age boost."""
    base = 0.0 if confusion is None else gain(task.probs, confusion, rules.top)
    return base + rules.age_weight * task.waited / 3600.0


def rank(tasks: Sequence[Waiting], confusion: np.ndarray | None, rules: RoutingRules) -> list[int]:
    """Task ids, best first: tasks past the staffing limit (oldest first), then by score, skipped ones last; ties
    go to the older task."""

    def key(t: Waiting) -> tuple:
        overdue = t.waited >= rules.max_wait_seconds
        return (t.skipped, not overdue, -t.waited if overdue else -score(t, confusion, rules), -t.waited, t.task_id)

    return [t.task_id for t in sorted(tasks, key=key)]
