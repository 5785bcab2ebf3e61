"""The admin's routes (under /v1): reviewer skills, an immediate policy reload, and the alarms (see and clear)."""

from __future__ import annotations

import bentoml
from fastapi import APIRouter, Depends, HTTPException

from service import auth
from service.schemas import GUARDED, errors
from teaming.api import AlarmOut, AlarmsOut, BookedAlarm, PolicyInfo, ReviewerOut
from teaming.ops.consensus import reviewer_skills, unreliable_reviewers, with_work
from teaming.ops.watch import alarm_dict, clear, monitors

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


@router.get("/alarms", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED))
def alarms() -> AlarmsOut:
    """The active policy version's monitors (harm, early warnings, waiting) as of now, the alarms raised and not
    yet cleared with what the service did, and the fallback record when a fallback is being served."""
    svc = _service()
    body = svc.store.active_policy(svc.model_version)
    now = [] if body is None else monitors(svc.store, body, svc.watch_rules, svc.loop.vote)
    booked = svc.store.alarms.of(None, open_only=True)
    return AlarmsOut(
        policy_version=None if body is None else body["version"],
        monitors=[AlarmOut(**alarm_dict(a)) for a in now],
        open=[
            BookedAlarm(
                policy_version=b.policy_version, name=b.name, raised_at=b.raised_at, says=b.says, action=b.action
            )
            for b in booked
        ],  # fmt: skip
        fallback=None if body is None else (body.get("model") or {}).get("fallback"),
    )


@router.post("/alarms/clear", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED))
def clear_alarms() -> AlarmsOut:
    """All clear: open alarms are marked cleared (webhook `alarm.cleared`), a fallback gives way to the policy it
    replaced on every replica, and that policy's monitors start again."""
    svc = _service()
    clear(svc.store, svc.model_version, "admin")
    svc.policy.reload()
    return alarms()
