"""From the model's probabilities to logged decisions and the answers callers get, for one batch of images."""

from __future__ import annotations

import random
import time

import numpy as np

from service.schemas import Decoded
from teaming.api import Decision, TopK
from teaming.ops.log import NewDecision
from teaming.ops.review import DEFER, keeps_image, review_tasks


def decision_rows(
    images: list[Decoded],
    probs: np.ndarray,
    reasons: np.ndarray,
    scores: np.ndarray,
    unfamiliarity: np.ndarray | None,
    model_version: str,
    policy_version: str,
    audit_rate: float,
    audit_reviewers: int,
    rng: random.Random,
) -> list[NewDecision]:
    """One row per image: the model's answer and confidence, deferred or not (and why: `reasons` holds "unsure",
    "unfamiliar" or "", `scores` what the policy compared with its threshold), audited by a random draw, and the
    review tasks and image that go with it."""
    rows = []
    pred, conf = probs.argmax(1), probs.max(1)
    for i, item in enumerate(images):
        audited = rng.random() < audit_rate
        deferred = bool(reasons[i])
        rows.append(
            NewDecision(
                item_id=item.item_id or f"req-{time.time_ns()}-{i}",
                outcome="deferred" if deferred else "auto",
                machine_label=int(pred[i]),
                confidence=float(conf[i]),
                probs=[round(float(p), 6) for p in probs[i]],
                model_version=model_version,
                policy_version=policy_version,
                audit=audited,
                image=item.shown if keeps_image(deferred, audited) else None,
                content_type=item.content_type,
                tasks=review_tasks(deferred, audited, audit_reviewers),
                defer_reason=str(reasons[i]) if deferred else None,
                unfamiliarity=None if unfamiliarity is None else round(float(unfamiliarity[i]), 4),
                policy_score=round(float(scores[i]), 6),
            )
        )
    return rows


def answers(
    rows: list[NewDecision], ids: list[tuple[int | None, list[int | None]]], probs: np.ndarray, classes: list[str]
) -> list[Decision]:
    """What the caller gets for each logged row: the label when auto, the review task id when deferred, the top 3."""
    out = []
    for row, (decision_id, task_ids), p in zip(rows, ids, probs):
        top = np.argsort(-p)[:3]
        out.append(
            Decision(
                item_id=row.item_id,
                decision=row.outcome,
                reason=row.defer_reason,
                label=None if row.outcome == "deferred" else classes[row.machine_label],
                confidence=row.confidence,
                top_k=[TopK(label=classes[j], probability=float(p[j])) for j in top],
                model_version=row.model_version,
                policy_version=row.policy_version,
                decision_id=decision_id,
                task_id=task_ids[row.tasks.index(DEFER)] if DEFER in row.tasks else None,
            )
        )
    return out
