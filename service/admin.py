"""The admin's routes (under /v1): reviewer skills and an immediate policy reload."""

from __future__ import annotations

import bentoml
from fastapi import APIRouter, Depends, HTTPException

from service import auth
from service.schemas import GUARDED, errors
from teaming.api import PolicyInfo, ReviewerOut
from teaming.ops.consensus import reviewer_skills, unreliable_reviewers, with_work

router = APIRouter(tags=["admin"])


def _service():
    return bentoml.get_current_service()


@router.get("/reviewers", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED))
def reviewers() -> list[ReviewerOut]:
    """Each reviewer's agreement with the others' consensus (95% interval), Dawid-Skene accuracy, none-of-these,
    can't-tell and skip counts, and flags where one differs significantly from the team; every reviewer with a
    token is listed, those with no answer yet at 0."""
    svc = _service()
    answers = svc.store.queue.class_answers()
    skills = with_work(reviewer_skills(answers, svc.loop.skills), svc.store.queue.work_counts())
    careless = unreliable_reviewers(answers)
    listed = [ReviewerOut(**r.__dict__) for r in skills]
    for r in listed:
        r.flags = ([careless[r.reviewer]] if r.reviewer in careless else []) + r.flags
    idle = sorted(set(svc.settings.reviewer_tokens.values()) - {r.reviewer for r in listed})
    empty = dict(answers=0, compared=0, agreement=None, ci_low=None, ci_high=None, accuracy=None)
    return sorted(listed + [ReviewerOut(reviewer=name, **empty) for name in idle], key=lambda r: r.reviewer)


@router.post("/admin/policy/reload", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED, 409))
def reload() -> PolicyInfo:
    """Serve the model's active policy now (every replica also takes it up within the poll interval)."""
    try:
        policy, version = _service().policy.reload()
    except ValueError as err:
        raise HTTPException(409, str(err)) from None
    return PolicyInfo(policy_version=version, threshold=policy.threshold_)
