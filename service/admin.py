"""The admin's routes (under /v1): reviewer skills and an immediate policy reload."""

from __future__ import annotations

import bentoml
from fastapi import APIRouter, Depends, HTTPException

from service import auth
from service.schemas import GUARDED, errors
from teaming.api import PolicyInfo, ReviewerOut
from teaming.ops.consensus import reviewer_skills

router = APIRouter(tags=["admin"])


def _service():
    return bentoml.get_current_service()


@router.get("/reviewers", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED))
def reviewers() -> list[ReviewerOut]:
    """Each reviewer's agreement with the others' consensus (95% interval) and Dawid-Skene accuracy."""
    svc = _service()
    answers = svc.store.queue.class_answers()
    return [ReviewerOut(**r.__dict__) for r in reviewer_skills(answers, svc.loop.skills)]


@router.post("/admin/policy/reload", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED, 409))
def reload() -> PolicyInfo:
    """Serve the model's active policy now (every replica also takes it up within the poll interval)."""
    try:
        policy, version = _service().policy.reload()
    except ValueError as err:
        raise HTTPException(409, str(err)) from None
    return PolicyInfo(policy_version=version, threshold=policy.threshold_)
