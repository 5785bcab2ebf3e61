"""The rules of the human review loop, as pure functions of an item's state.

- A deferred item opens one `defer` task: a person answers it for the caller. An audited item (a uniform random
  share of all items, auto or deferred) needs k independent answers from k different people; the defer
  reviewer never sees the model's answer, so they count as one of the k and a deferred audited item opens
  k - 1 `audit` tasks.
- A reviewer may answer a class, "none of these" or "can't tell". After `unresolved_after` such non-class
  answers the item closes unresolved. A deferred item whose only answers are non-class gets a new defer task.
- The final answer is the consensus of the item's class answers (Dawid-Skene with fitted reviewer skills when
  there are enough labels, majority otherwise): set by the first answer of a deferred item, updated as audit
  answers arrive; an auto-answered item keeps the model's answer until its audit closes.
- An item whose open tasks wait longer than the close time closes with the answers it has, and says so.
- Retuning reads audited items only: the person who would have been asked (the defer reviewer, or the first
  auditor of an auto-answered item) is the human; the consensus of the others is the reference. Only blind
  answers count there (ops/views.py). Items with a non-class answer among those, or without another class
  answer, are left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from teaming.labels import earliest_majority

DEFER = "defer"  # the item was deferred: one person answers it for the caller
AUDIT = "audit"  # a blind random audit: k different people label it, auto-answered or not
CLASS, NONE, UNSURE = "class", "none", "unsure"  # a review's verdict: a class, none of these, can't tell
VERDICTS = (CLASS, NONE, UNSURE)
AUDIT_REVIEWERS = 3  # k: people per audited item
UNRESOLVED_AFTER = 2  # non-class answers that close an item as unresolved
ANSWERED, UNRESOLVED = "answered", "unresolved"
BLIND = "blind"  # an answer given on the image alone (ops/views.py decides what else a reviewer may see)


@dataclass(frozen=True)
class LoopRules:
    """The loop's settings (the service sets them from TEAMING_*)."""

    audit_reviewers: int = AUDIT_REVIEWERS
    unresolved_after: int = UNRESOLVED_AFTER
    second_opinion_below: float | None = None  # ask another person while the posterior's top is below it
    max_opinions: int = 2  # the most people one deferred item may ask (capacity)


@dataclass
class Answer:
    """One person's answer to one task of an item."""

    reviewer: str
    kind: str  # the task's kind: defer | audit
    verdict: str  # class | none | unsure
    label: int | None  # the class id when the verdict is a class
    view: str = BLIND  # what the reviewer was shown beyond the image: blind | lenient | strict


@dataclass
class Final:
    """An item's final answer as the caller sees it (one outcome row)."""

    status: str  # answered | unresolved
    label: int | None
    source: str  # model | reviewer | consensus
    method: str | None  # majority | dawid-skene (consensus of two or more answers)
    n_labels: int
    closed: bool = False
    reason: str | None = None

    def same_answer(self, other: "Final | None") -> bool:
        return other is not None and (self.status, self.label) == (other.status, other.label)


@dataclass
class ItemState:
    """What the loop knows of one item: its decision, its answers (oldest first) and its open tasks."""

    deferred: bool
    audited: bool
    machine_label: int
    answers: list[Answer]
    open_tasks: list[tuple[int, str]]  # (task id, kind)
    final: Final | None  # the latest outcome row; None before any
    probs: Sequence[float] | None = None  # the model's probabilities (the prior of a second opinion)


@dataclass
class Actions:
    """What an item needs next: tasks to open and to cancel, and a new final answer when it changed."""

    open: list[str] = field(default_factory=list)
    cancel: list[int] = field(default_factory=list)
    final: Final | None = None


def review_tasks(deferred: bool, audited: bool, audit_reviewers: int = AUDIT_REVIEWERS) -> tuple[str, ...]:
    """Tasks a new decision opens: one defer task when deferred; enough audit tasks for k people when audited."""
    if deferred:
        return (DEFER,) + (AUDIT,) * (max(audit_reviewers - 1, 0) if audited else 0)
    return (AUDIT,) * (audit_reviewers if audited else 0)


def keeps_image(deferred: bool, audited: bool) -> bool:
    """The image is stored only where a person will look at it."""
    return deferred or audited


def machine_final(machine_label: int) -> Final:
    return Final(ANSWERED, machine_label, "model", None, 0)


def consensus(answers: Sequence[Answer], vote=None) -> tuple[int, str | None]:
    """(label, method) of class answers: `vote(answers)` when given (e.g. Dawid-Skene with fitted skills) and
    it answers, else the majority, ties to the earliest answer among the tied."""
    labels = [a.label for a in answers if a.verdict == CLASS]
    if len(labels) == 1:
        return labels[0], None
    if vote is not None:
        label = vote(answers)
        if label is not None:
            return label, "dawid-skene"
    return earliest_majority(labels), "majority"


def unresolved_reason(verdicts: Sequence[str]) -> tuple[str, str]:
    """(method, reason) of an item people could not answer: "none" when every one said none of these (send it
    elsewhere), "unsure" when every one could not tell (a better photo may do), "mixed" otherwise."""
    none, unsure = verdicts.count(NONE), verdicts.count(UNSURE)
    said = [f"{n} answered {what}" for n, what in ((none, "none of these"), (unsure, "can't tell")) if n]
    method = "mixed" if none and unsure else NONE if none else UNSURE
    return method, f"{' and '.join(said)} ({len(verdicts)} reviewers)"


DEFAULT_ACCURACY = 0.9  # a reviewer's chance of being right before any skill is fitted


def posterior(probs: Sequence[float], answers: Sequence[Answer], confusion=None) -> np.ndarray:
    """P(true class | the model's probabilities, the class answers) = p(c) x prod over answers M_r[c, label],
    normalised. `confusion(reviewer)` gives a reviewer's Dawid-Skene matrix (true x answered), or None, when a
    symmetric one right `DEFAULT_ACCURACY` of the time stands in."""
    p = np.asarray(probs, dtype=np.float64)
    c = len(p)
    fallback = np.full((c, c), (1 - DEFAULT_ACCURACY) / max(c - 1, 1))
    np.fill_diagonal(fallback, DEFAULT_ACCURACY)
    logp = np.log(np.clip(p, 1e-12, None))
    for a in answers:
        if a.verdict == CLASS:
            m = confusion(a.reviewer) if confusion is not None else None
            logp = logp + np.log(np.clip((fallback if m is None else m)[:, a.label], 1e-12, None))
    out = np.exp(logp - logp.max())
    return out / out.sum()


def second_opinion(state: ItemState, rules: LoopRules, confusion=None) -> Actions | None:
    """For a deferred item that is not audited, when second opinions are on: the final answer is the argmax of the
    model and answers' posterior; another person is asked while its top is below the target, within capacity
    (`max_opinions` people); None where the rule does not apply."""
    if rules.second_opinion_below is None or not state.deferred or state.audited or state.probs is None:
        return None
    classes = [a for a in state.answers if a.verdict == CLASS]
    if not classes or len(state.answers) - len(classes) >= rules.unresolved_after:
        return None  # no class answer yet, or people could not answer it: the usual rules
    post = posterior(state.probs, classes, confusion)
    asking = any(kind == DEFER for _, kind in state.open_tasks)
    more = post.max() < rules.second_opinion_below and len(state.answers) < rules.max_opinions
    actions = Actions(
        open=[DEFER] if more and not asking else [], cancel=[] if more else [t for t, _ in state.open_tasks]
    )
    final = Final(ANSWERED, int(post.argmax()), _source(classes), "posterior", len(classes), not more)
    return _changed(actions, state, final)


def after_answer(state: ItemState, rules: LoopRules, vote=None, confusion=None) -> Actions:
    """The item's next tasks and final answer once its answers are `state.answers` (`confusion`: the reviewers'
    skills, for second opinions)."""
    if (asked := second_opinion(state, rules, confusion)) is not None:
        return asked
    actions = Actions()
    classes = [a for a in state.answers if a.verdict == CLASS]
    others = len(state.answers) - len(classes)
    every_task = [t for t, _ in state.open_tasks]
    if others >= rules.unresolved_after:
        actions.cancel = every_task
        method, reason = unresolved_reason([a.verdict for a in state.answers if a.verdict != CLASS])
        return _changed(actions, state, Final(UNRESOLVED, None, "consensus", method, len(classes), True, reason))
    needed = rules.audit_reviewers if state.audited else 1
    complete = bool(classes) and len(state.answers) >= needed
    if complete:
        actions.cancel = every_task  # e.g. a second defer task opened after a "can't tell"
    elif state.deferred and not classes and not any(kind == DEFER for _, kind in state.open_tasks):
        actions.open = [DEFER]  # the caller still has no answer: someone else takes it
    if not classes or not (state.deferred or complete):
        return actions  # an auto-answered item keeps the model's answer until its audit closes
    label, method = consensus(classes, vote)
    return _changed(actions, state, Final(ANSWERED, label, _source(classes), method, len(classes), complete))


def correction_refused(state: ItemState) -> str | None:
    """Why a reviewer's corrected answer cannot stand, with the item's answers as corrected (None when it can).

    An item the loop closed on its own (past the close time, or unresolved) keeps the answers it closed with;
    and an item people answered keeps at least one class answer (say which class, or skip the next time)."""
    final = state.final
    if final is not None and final.closed and final.reason is not None:
        return f"the item is closed ({final.reason}): its answers are final"
    answered_by_people = final is not None and final.source != "model" and final.status == ANSWERED
    if answered_by_people and not any(a.verdict == CLASS for a in state.answers):
        return "the item's answer rests on this one: a correction names a class"
    return None


def close_overdue(state: ItemState, rules: LoopRules, waited: float, vote=None) -> Actions:
    """Close an item whose tasks waited `waited` seconds: cancel them, and answer with what the item has."""
    actions = Actions(cancel=[t for t, _ in state.open_tasks])
    classes = [a for a in state.answers if a.verdict == CLASS]
    needed = rules.audit_reviewers if state.audited else 1
    reason = f"closed after {waited:.0f} s with {len(state.answers)} of {needed} answers"
    if classes:
        label, method = consensus(classes, vote)
        new = Final(ANSWERED, label, _source(classes), method, len(classes), True, reason)
    elif state.deferred:
        new = Final(UNRESOLVED, None, "consensus", None, 0, True, reason)
    else:
        new = replace(machine_final(state.machine_label), closed=True, reason=reason)
    return _changed(actions, state, new)


def _source(classes: Sequence[Answer]) -> str:
    """Who a final answer from people's class answers comes from: one reviewer, or the consensus of several."""
    return "reviewer" if len(classes) == 1 else "consensus"


def _changed(actions: Actions, state: ItemState, new: Final) -> Actions:
    """Record `new` as the final answer unless it is the current one."""
    current = state.final or (None if state.deferred else machine_final(state.machine_label))
    if new != current:
        actions.final = new
    return actions


def event_kind(state: ItemState, new: Final) -> str | None:
    """The webhook a new final answer sends: set (a deferred item's first), changed, unresolved, or none."""
    before = state.final or (None if state.deferred else machine_final(state.machine_label))
    if new.status == UNRESOLVED:
        return None if before is not None and before.status == UNRESOLVED else "outcome.unresolved"
    if before is None:
        return "outcome.set"
    return "outcome.changed" if (before.status, before.label) != (new.status, new.label) else None


def audit_answers(
    audited: Sequence[tuple[Sequence[float], bool, Sequence[Answer]]],
    vote=None,
    kept: list[int] | None = None,
    unreliable: frozenset[str] = frozenset(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed audited items as (probs N x C, human answer N, reference N) for retuning.

    `audited` holds (probabilities, deferred, answers oldest first) per item. The human is the defer reviewer
    of a deferred item, else the first auditor; the reference is the consensus of the other answers. Items
    without class answers all round are left out. The answers of `unreliable` reviewers, and answers given with
    a prediction set in view, count nowhere: where such a one was asked, the next blind reviewer who answered
    stands for "the person" (one careless person must not, nor one the model's set helped); `kept` (if given)
    receives the positions of those kept.
    """
    probs, human, reference = [], [], []
    for i, (p, deferred, answers) in enumerate(audited):
        answers = [a for a in answers if a.reviewer not in unreliable and a.view == BLIND]
        asked = next((a for a in answers if a.kind == DEFER), None) if deferred else None
        asked = asked or (answers[0] if answers else None)
        rest = [a for a in answers if a is not asked]
        if asked is None or asked.verdict != CLASS or not rest or any(a.verdict != CLASS for a in rest):
            continue
        probs.append(p)
        if kept is not None:
            kept.append(i)
        human.append(asked.label)
        reference.append(consensus(rest, vote)[0])
    if not probs:
        return np.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.asarray(probs, dtype=np.float64), np.asarray(human, np.int64), np.asarray(reference, np.int64)
