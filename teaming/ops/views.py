"""What a reviewer may see for a task, decided in one place, and what the views did.

A reviewer always sees the image and the class names, never the model's answer or its probabilities. The only
other thing they may see is a prediction set (the policy's conformal set, teaming.policy.sets), and only:
- on a defer task (an audit task is always blind: the audit estimates stay unbiased) of an item deferred as
  unsure (not as unfamiliar: the set's coverage says nothing of an image unlike any it was calibrated on);
- with TEAMING_PREDICTION_SETS on (lenient: the set's classes highlighted; strict: only they, with "none of
  these" kept), and with a policy that carries sets;
- on a random `share` of defer tasks, drawn from the task's id (a task claimed again is shown the same). The
  other defer tasks are blind: they stand for "the person" in retune and the audits, and are the arm the set
  arm is measured against.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

from teaming.labels import earliest_majority
from teaming.ops.review import BLIND, CLASS, DEFER, Answer
from teaming.policy.sets import PredictionSets

LENIENT, STRICT, OFF = "lenient", "strict", "off"
MODES = (OFF, LENIENT, STRICT)  # TEAMING_PREDICTION_SETS


@dataclass(frozen=True)
class ViewRules:
    """The view settings (the service sets them from TEAMING_PREDICTION_SETS and TEAMING_SET_SHARE)."""

    mode: str = OFF
    share: float = 0.5  # of defer tasks shown the set, when on


@dataclass(frozen=True)
class View:
    """What one task's holder is shown beyond the image and the class names."""

    name: str  # blind | lenient | strict
    prediction_set: tuple[int, ...] | None = None  # class ids, most probable first; None when blind


def in_set_arm(task_id: int, share: float) -> bool:
    """The task's randomised arm: a uniform number from a hash of its id, below `share`."""
    digest = hashlib.sha256(f"teaming-view:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def reviewer_view(
    task_id: int,
    kind: str,
    probs: Sequence[float] | None,
    sets: PredictionSets | None,
    rules: ViewRules,
    unfamiliar: bool = False,
) -> View:
    """Everything a reviewer may see for a task beyond its image: blind, or the item's prediction set.

    >>> sets = PredictionSets(coverage=0.9, qhat=0.8, n_items=100, on="deferred")
    >>> reviewer_view(7, "audit", [0.5, 0.4, 0.1], sets, ViewRules("strict", share=1.0))
    View(name='blind', prediction_set=None)
    >>> reviewer_view(7, "defer", [0.5, 0.4, 0.1], sets, ViewRules("strict", share=1.0))
    View(name='strict', prediction_set=(0, 1))
    >>> reviewer_view(7, "defer", [0.5, 0.4, 0.1], sets, ViewRules("strict", share=1.0), unfamiliar=True)
    View(name='blind', prediction_set=None)
    """
    shown = rules.mode != OFF and kind == DEFER and not unfamiliar and sets is not None and probs is not None
    if not shown or not in_set_arm(task_id, rules.share):
        return View(BLIND)
    return View(rules.mode, tuple(sets.members(np.asarray([probs], dtype=np.float64))[0]))


@dataclass(frozen=True)
class ArmFigures:
    """One arm on audited deferred items: the defer reviewer against a blind auditor of the same item, both
    judged by the consensus of the item's other blind answers."""

    view: str
    items: int
    asked_right: int  # the defer reviewer (shown this arm's view)
    auditor_right: int  # a blind auditor of the same items
    only_asked: int  # McNemar's discordant pairs
    only_auditor: int
    p: float  # exact McNemar: the two are right equally often

    def line(self) -> str:
        if not self.items:
            return f"{self.view} arm: no audited deferred items yet"
        a, b = self.asked_right / self.items, self.auditor_right / self.items
        return (
            f"{self.view} arm, {self.items} audited deferred items: the reviewer asked {a:.1%}, a blind auditor of "
            f"the same items {b:.1%} (McNemar p = {self.p:.2g})"
        )


def view_arms(audited: Sequence[Sequence[Answer]]) -> dict[str, ArmFigures]:
    """Per view, the defer reviewer's accuracy on audited deferred items against a blind auditor's on the same
    items (answers oldest first, per item). The set arm measures what sets do; the blind arm is its placebo:
    both ought to differ only by chance there."""
    pairs: dict[str, list[tuple[bool, bool]]] = {}
    for answers in audited:
        asked = next((a for a in answers if a.kind == DEFER), None)
        blind = [a for a in answers if a is not asked and a.view == BLIND and a.verdict == CLASS]
        if asked is None or asked.verdict != CLASS or len(blind) < 2:
            continue
        reference = earliest_majority([a.label for a in blind[1:]])
        pairs.setdefault(asked.view, []).append((asked.label == reference, blind[0].label == reference))
    return {view: _arm(view, p) for view, p in sorted(pairs.items())}


def _arm(view: str, pairs: list[tuple[bool, bool]]) -> ArmFigures:
    x = np.array(pairs, dtype=bool).reshape(-1, 2)
    b, c = int((x[:, 0] & ~x[:, 1]).sum()), int((~x[:, 0] & x[:, 1]).sum())
    p = binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    return ArmFigures(view, len(x), int(x[:, 0].sum()), int(x[:, 1].sum()), b, c, float(p))
