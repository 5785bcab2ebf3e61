"""Reviewers' routes (under /v1): the review page, claims under leases, images, answers, skips, queue figures.

Handlers reach the running service through `bentoml.get_current_service()`; admission (admission.py) has
admitted only reviewers (and, for stats and images, the admin) by the time a handler runs.
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

import bentoml
from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import Response

from service import auth, metrics
from service.schemas import GUARDED, WITH_BODY, errors
from teaming.api import (
    Claimed,
    LabelIn,
    Labelled,
    QueueStats,
    SkipIn,
    Skipped,
    Task,
)
from teaming.ops.queue import Claim
from teaming.ops.retune import MIN_AUDITED
from teaming.ops.review import CLASS
from teaming.ops.routing import RoutingRules, confusion_of, rank
from teaming.ops.views import View, ViewRules, reviewer_view

router = APIRouter(tags=["review queue"])
RowId = Annotated[int, Path(ge=1, le=2**62, description="a row id from this service")]


def _service():
    return bentoml.get_current_service()


def fresh_stats(reviewer: str | None = None) -> QueueStats:
    """Queue and audit figures from the log, also published as gauges; with how many wait for `reviewer`."""
    svc = _service()
    stats = svc.store.log.stats(svc.settings.audit_reviewers)
    metrics.observe_stats(stats)
    waiting = None if reviewer is None else svc.store.queue.waiting_for(reviewer)
    return QueueStats(**stats, retune_needs=MIN_AUDITED, waiting_for_you=waiting)


def label_id(label: int | str | None, classes: list[str]) -> int:
    """A class name or id as the class id; 422 naming the classes otherwise."""
    if isinstance(label, str) and label in classes:
        return classes.index(label)
    if isinstance(label, int) and 0 <= label < len(classes):
        return label
    raise HTTPException(422, f"label {label!r} is not one of the classes {classes} (or ids 0..{len(classes) - 1})")


HERE = FilePath(__file__).parent
PAGE_HEADERS = {  # the page runs only its own script and style, shows only this service's images, in no frame
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


IMAGE_HEADERS = {  # a task's image lives as long as its lease: no copy in a browser's cache, no guessing its type
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _page_file(name: str, media: str) -> Response:
    return Response((HERE / name).read_bytes(), media_type=media, headers=PAGE_HEADERS)


@router.get("/review", include_in_schema=False)
def review_page() -> Response:
    """The reviewer page; it keeps the token in sessionStorage (gone with the tab)."""
    return _page_file("review.html", "text/html; charset=utf-8")


@router.get("/review.js", include_in_schema=False)
def review_script() -> Response:
    return _page_file("review.js", "text/javascript")


@router.get("/review.css", include_in_schema=False)
def review_style() -> Response:
    return _page_file("review.css", "text/css")


@router.get("/review.svg", include_in_schema=False)
def review_icon() -> Response:
    """The page's icon (without one, browsers ask for a /favicon.ico that is not there)."""
    return _page_file("review.svg", "image/svg+xml")


@router.post("/queue/claim", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED))
def claim(reviewer: str = Depends(auth.reviewer)) -> Claimed:
    """Lease the next item this reviewer has not seen (ones they skipped last, deferred items first), or none."""
    svc = _service()
    s = svc.settings
    c = svc.store.queue.claim(reviewer, s.lease_seconds, s.reviewer_leases, _routing(svc, reviewer))
    stats = fresh_stats(reviewer)
    if c is None:
        return Claimed(task=None, classes=svc.classes, reviewer=reviewer, stats=stats)
    view = _view(svc, c)
    svc.store.queue.record_view(c.task_id, c.lease_id, view.name)
    shown = None if view.prediction_set is None else [svc.classes[k] for k in view.prediction_set]
    task = Task(
        task_id=c.task_id,
        lease_id=c.lease_id,
        lease_expires_at=c.lease_expires_at,
        item_id=c.item_id,
        image_url=f"/v1/queue/tasks/{c.task_id}/image",
        view=view.name,
        prediction_set=shown,
    )
    return Claimed(task=task, classes=svc.classes, reviewer=reviewer, stats=stats)


def _view(svc, c: Claim) -> View:
    """What this task's holder is shown beyond the image: decided by ops/views.py alone."""
    rules = ViewRules(svc.settings.prediction_sets, svc.settings.set_share)
    sets = svc.policy.active[0].prediction_sets_
    return reviewer_view(c.task_id, c.kind, c.probs, sets, rules, unfamiliar=c.defer_reason == "unfamiliar")


def _routing(svc, reviewer: str):
    """With TEAMING_ROUTING=skill: waiting deferrals ranked by what this reviewer adds (ops/routing.py)."""
    if svc.settings.routing != "skill":
        return None
    confusion = confusion_of(svc.loop.skills, reviewer)
    rules = RoutingRules(max_wait_seconds=svc.settings.max_wait_seconds)
    return lambda waiting: rank(waiting, confusion, rules)


@router.get(
    "/queue/tasks/{task_id}/image",
    dependencies=[Depends(auth.bearer)],
    responses={**errors(*GUARDED, 404, 422), 200: {"content": {"image/*": {}}, "description": "the image"}},
    response_class=Response,
)
def task_image(task_id: RowId, who: auth.Principal = Depends(auth.principal)) -> Response:
    """The item's image: to the reviewer who holds a live lease on the task (the admin sees any)."""
    holder = None if who.role == auth.ADMIN else who.name
    data, media = _service().store.queue.image(task_id, holder)
    return Response(data, media_type=media, headers=IMAGE_HEADERS)


@router.post(
    "/queue/tasks/{task_id}/label",
    dependencies=[Depends(auth.bearer)],
    responses=errors(*GUARDED, *WITH_BODY, 404, 409, 422),
)
def label(task_id: RowId, body: LabelIn, reviewer: str = Depends(auth.reviewer)) -> Labelled:
    """Answer a claimed task: a class, or the verdict "none" (none of these) or "unsure" (can't tell)."""
    svc = _service()
    label = label_id(body.label, svc.classes) if body.verdict == CLASS else None
    done, _ = svc.loop.answer(task_id, body.lease_id, reviewer, body.verdict, label)
    metrics.review_latency.observe(done.latency_s)
    fresh_stats()
    window = svc.settings.correction_seconds
    until = done.answered_at + window if window > 0 else None
    name = None if label is None else svc.classes[label]
    said = dict(verdict=body.verdict, label=name, correctable_until=until)
    return Labelled(answer_id=done.answer_id, task_id=task_id, **said)


@router.put(
    "/answers/{answer_id}",
    dependencies=[Depends(auth.bearer)],
    responses=errors(*GUARDED, *WITH_BODY, 404, 409, 422),
)
def correct(answer_id: RowId, body: LabelIn, reviewer: str = Depends(auth.reviewer)) -> Labelled:
    """Correct your own answer (a misclick) within TEAMING_CORRECTION_SECONDS of giving it, with the body of a label
    and the lease it was given under: the item's consensus and outcome follow (and its caller hears of a change)."""
    svc = _service()
    label = label_id(body.label, svc.classes) if body.verdict == CLASS else None
    window = svc.settings.correction_seconds
    done, _ = svc.loop.correct(answer_id, body.lease_id, reviewer, body.verdict, label, window)
    name = None if label is None else svc.classes[label]
    until = done.answered_at + window
    said = dict(verdict=body.verdict, label=name, correctable_until=until)
    return Labelled(answer_id=answer_id, task_id=done.task_id, **said)


@router.post(
    "/queue/tasks/{task_id}/skip",
    dependencies=[Depends(auth.bearer)],
    responses=errors(*GUARDED, *WITH_BODY, 404, 409, 422),
)
def skip(task_id: RowId, body: SkipIn, reviewer: str = Depends(auth.reviewer)) -> Skipped:
    """Give a claimed task back; it goes to someone else first."""
    _service().store.queue.skip(task_id, body.lease_id, reviewer)
    return Skipped(task_id=task_id, status="open")


@router.get("/queue/stats", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED))
def stats(who: auth.Principal = Depends(auth.principal)) -> QueueStats:
    return fresh_stats(who.name if who.role == auth.REVIEWER else None)
