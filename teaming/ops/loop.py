"""The review loop as the service runs it: each answer, skip and close is one transaction in which the store's
rows are read, the review rules (ops/review.py) decide, and the results are written: new tasks, cancelled
tasks, the item's new final answer and, when a caller should hear of it, a webhook event in the outbox."""

from __future__ import annotations

import time

from teaming.ops.consensus import Skills, fit_skills
from teaming.ops.queue import Conflict
from teaming.ops.review import (
    CLASS,
    VERDICTS,
    Actions,
    Answer,
    Final,
    ItemState,
    LoopRules,
    after_answer,
    close_overdue,
    correction_refused,
    event_kind,
)
from teaming.ops.routing import confusion_of
from teaming.ops.store import Store


class ReviewLoop:
    """Answers, skips and closes for one service; `classes` name the labels in outcomes and events."""

    def __init__(self, store: Store, classes: list[str], rules: LoopRules, webhooks: bool = False) -> None:
        self.store = store
        self.classes = classes
        self.rules = rules
        self.webhooks = webhooks
        self.skills: Skills | None = None

    def vote(self, answers) -> int | None:
        return None if self.skills is None else self.skills.vote(answers)

    def confusion(self, reviewer: str):
        """The reviewer's fitted confusion (the team's mean for a newcomer); None before any fit."""
        return confusion_of(self.skills, reviewer)

    def refresh_skills(self) -> Skills | None:
        """Refit reviewer skills (Dawid-Skene) on every class answer so far; None while there are too few."""
        self.skills = fit_skills(self.store.queue.class_answers(), len(self.classes))
        return self.skills

    def answer(self, task_id: int, lease_id: str, reviewer: str, verdict: str, label: int | None):
        """Record one answer and apply the rules to its item: (answered row, the item's new final answer or None)."""
        _check_answer(verdict, label)
        with self.store.begin() as conn:
            done = self.store.queue.answer(conn, task_id, lease_id, reviewer, verdict, label)
            state, item_id = self._state(conn, done.decision_id)
            actions = after_answer(state, self.rules, self.vote, self.confusion)
            self._apply(conn, done.decision_id, item_id, state, actions)
        return done, actions.final

    def correct(
        self, answer_id: int, lease_id: str, reviewer: str, verdict: str, label: int | None, window_seconds: float
    ):
        """A reviewer's own answer changed within the window, and the rules applied again to its item (consensus,
        outcome, webhook): (answered row, the item's new final answer or None). Refused (Conflict, NotFound)
        when the window has passed, the answer is another's, or the item is closed."""
        _check_answer(verdict, label)
        with self.store.begin() as conn:
            done = self.store.queue.correct(conn, answer_id, lease_id, reviewer, verdict, label, window_seconds)
            state, item_id = self._state(conn, done.decision_id)
            if (why := correction_refused(state)) is not None:
                raise Conflict(f"answer {answer_id} stands: {why}")  # the transaction rolls back
            actions = after_answer(state, self.rules, self.vote, self.confusion)
            self._apply(conn, done.decision_id, item_id, state, actions)
        return done, actions.final

    def close_overdue(self, close_after_seconds: float) -> int:
        """Close every item whose open tasks have waited longer than the close time; returns how many."""
        now = time.time()
        closed = 0
        for decision_id, since in self.store.queue.overdue(now - close_after_seconds):
            with self.store.begin() as conn:
                state, item_id = self._state(conn, decision_id)
                if not state.open_tasks:
                    continue  # answered meanwhile
                self._apply(conn, decision_id, item_id, state, close_overdue(state, self.rules, now - since, self.vote))
                closed += 1
        return closed

    def _state(self, conn, decision_id: int) -> tuple[ItemState, str]:
        """The item as the rules see it; its decision row is locked for the transaction."""
        d = self.store.log.decision(conn, decision_id, lock=True)
        answers = [Answer(*r) for r in self.store.queue.answers(conn, decision_id)]
        row = self.store.log.final(conn, decision_id)
        final = None if row is None else Final(*row)
        open_tasks = self.store.queue.open_tasks(conn, decision_id)
        state = ItemState(d.outcome == "deferred", d.audit, d.machine_label, answers, open_tasks, final, d.probs)
        return state, d.item_id

    def _apply(self, conn, decision_id: int, item_id: str, state: ItemState, actions: Actions) -> None:
        self.store.queue.cancel(conn, actions.cancel)
        self.store.queue.add_tasks(conn, decision_id, actions.open)
        if actions.final is None:
            return
        final = actions.final
        self.store.log.add_outcome(conn, decision_id, item_id, final.__dict__)
        kind = event_kind(state, final)
        if kind is not None and self.webhooks:
            self.store.outbox.add(conn, decision_id, kind, self.describe(decision_id, item_id, final))

    def describe(self, decision_id: int, item_id: str, final: Final) -> dict:
        """An outcome as callers read it (the webhook's data)."""
        return {
            "decision_id": decision_id,
            "item_id": item_id,
            "status": final.status,
            "final_label": None if final.label is None else self.classes[final.label],
            "source": final.source,
            "method": final.method,
            "n_labels": final.n_labels,
            "closed": final.closed,
            "reason": final.reason,
        }


def _check_answer(verdict: str, label: int | None) -> None:
    if verdict not in VERDICTS or (verdict == CLASS) != (label is not None):
        raise ValueError(f"an answer is a class label, or the verdict none or unsure; got {verdict!r}, {label!r}")
