"""The rules of the human review loop: which review tasks a decision opens, which images are kept for people,
what an item's final answer is, and which audit labels play the human and the reference when retuning."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from teaming.labels import vote

DEFER = "defer"  # the item was deferred: one person answers it for the caller
AUDIT = "audit"  # a blind random audit: k different people label it, auto-answered or not
AUDIT_REVIEWERS = 3  # k: people per audited item


def review_tasks(deferred: bool, audited: bool, audit_reviewers: int = AUDIT_REVIEWERS) -> tuple[str, ...]:
    """Tasks one decision opens: a defer task when deferred, `audit_reviewers` audit tasks when audited."""
    return ((DEFER,) if deferred else ()) + (AUDIT,) * (audit_reviewers if audited else 0)


def keeps_image(deferred: bool, audited: bool) -> bool:
    """The image is stored only where a person will look at it."""
    return deferred or audited


def final_label(deferred: bool, machine_label: int, reviews: Sequence[tuple[str, int]]) -> int | None:
    """The answer the caller gets: the model's when auto, the first defer reviewer's when deferred (None until
    someone answers). `reviews` are (kind, label), oldest first."""
    if not deferred:
        return machine_label
    return next((label for kind, label in reviews if kind == DEFER), None)


def audit_answers(
    audited: Sequence[tuple[Sequence[float], Sequence[int]]], audit_reviewers: int = AUDIT_REVIEWERS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fully audited items as (probs N x C, human answer N, reference N) for retuning.

    `audited` holds (probabilities, audit labels oldest first) per item; items with fewer than k labels wait.
    The first audit label plays the human who would have answered; the majority of the next k - 1 is the
    reference (ties go to the earliest of the tied labels).
    """
    k = audit_reviewers
    full = [(p, labels) for p, labels in audited if len(labels) >= k]
    if not full:
        return np.zeros((0, 0)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    probs = np.array([p for p, _ in full], dtype=np.float64)
    human = np.array([labels[0] for _, labels in full], dtype=np.int64)
    reference = vote(np.array([labels[1:k] for _, labels in full], dtype=np.int64), probs.shape[1])
    return probs, human, reference
