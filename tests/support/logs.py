"""Decision logs for tests: items logged under a policy, audited, and answered by reviewers in order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from teaming.ops.log import NewDecision
from teaming.ops.loop import ReviewLoop
from teaming.ops.queue import Claim
from teaming.ops.review import LoopRules, review_tasks
from teaming.ops.store import Store
from teaming.policy import ThresholdPolicy

MODEL = "toy@1"


def audited_log(
    db_url: str,
    probs: np.ndarray,
    answers: np.ndarray,
    active: ThresholdPolicy,
    features: np.ndarray | None = None,
    unfamiliarity: np.ndarray | None = None,
    view: Callable[[Claim], str] | None = None,
) -> None:
    """Log every item as audited under `active` and let three reviewers answer it (answers: N x 3, in order),
    each task shown what `view(claim)` says (blind without it)."""
    store = Store(db_url)
    store.add_policy(active.to_dict(), MODEL)
    known = None if unfamiliarity is None else np.nan_to_num(unfamiliarity, nan=0.0)  # NaN: logged without one
    defer = active.decide(probs, unfamiliarity=known, features=features)
    u = [None] * len(probs) if unfamiliarity is None else [None if np.isnan(x) else float(x) for x in unfamiliarity]
    scores = active.confidence(probs, features)
    rows = [
        NewDecision(
            f"i/{i}",
            "deferred" if d else "auto",
            int(p.argmax()),
            float(p.max()),
            p.tolist(),
            MODEL,
            active.version,
            True,
            None,
            None,
            review_tasks(bool(d), True, 3),
            policy_score=float(score),
            unfamiliarity=ui,
        )
        for i, (p, d, score, ui) in enumerate(zip(probs, defer, scores, u))
    ]
    store.log.record(rows)
    loop = ReviewLoop(store, [str(c) for c in range(probs.shape[1])], LoopRules(3, 2))
    for k in range(3):
        while (c := store.queue.claim(f"reviewer-{k}", 60)) is not None:
            if view is not None:
                store.queue.record_view(c.task_id, c.lease_id, view(c))
            loop.answer(c.task_id, c.lease_id, f"reviewer-{k}", "class", int(answers[int(c.item_id[2:]), k]))
    store.dispose()
