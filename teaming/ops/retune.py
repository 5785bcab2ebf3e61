"""Retuning from the log: refit the active policy's settings on the audited outcomes, with the same rule
(paired t-tests) as the offline fit, and store the result as a new policy version."""

from __future__ import annotations

from pathlib import Path

from teaming._validation import PolicyError
from teaming.ops.review import AUDIT_REVIEWERS, audit_answers
from teaming.ops.store import Store
from teaming.policy import ThresholdPolicy, policy_from_dict, save_policy

MIN_AUDITED = 50


def retune(
    db_url: str,
    out: str | Path | None = None,
    activate: bool = True,
    audit_reviewers: int = AUDIT_REVIEWERS,
    **overrides,
) -> ThresholdPolicy:
    """Refit the active threshold policy's settings on the fully audited items; store it as a new version.

    `overrides` replace the active policy's settings (alpha, max_deferral, min_accuracy, ...) where not None.
    """
    store = Store(db_url)
    probs, human, ref = audit_answers(store.audit_labels(), audit_reviewers)
    if len(ref) < MIN_AUDITED:
        raise PolicyError(f"only {len(ref)} fully audited items in the log; retuning needs {MIN_AUDITED}")
    active = store.active_policy()
    params: dict = {}
    classes = None
    if active is not None:
        current = policy_from_dict(active)
        classes = current.classes_
        if isinstance(current, ThresholdPolicy):
            params = current.get_params()
    params.update({k: v for k, v in overrides.items() if v is not None})
    policy = ThresholdPolicy(**params).fit(probs, ref, human, classes)
    policy.model_ = {
        **((active or {}).get("model") or {}),
        "retuned_from": None if active is None else active["version"],
        "audited_items": int(len(ref)),
        "fitted_on": f"audit log {db_url.split('@')[-1]}",
    }
    store.add_policy(policy.to_dict(), activate=activate)
    if out is not None:
        save_policy(policy, out)
    store.engine.dispose()
    return policy
