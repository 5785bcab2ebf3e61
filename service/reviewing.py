"""Reviewers' routes (under /v1): the review page, claims under leases, images, answers, skips, queue figures.

Handlers reach the running service through `bentoml.get_current_service()`; auth is a dependency (auth.py).
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

import bentoml
from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import HTMLResponse, Response

from service import auth, metrics
from teaming.api import (
    Claimed,
    LabelIn,
    Labelled,
    QueueStats,
    SkipIn,
    Skipped,
    Task,
)
from teaming.ops.retune import MIN_AUDITED
from teaming.ops.review import CLASS

REVIEW_PAGE = FilePath(__file__).with_name("review.html")
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
    raise HTTPException(422, f"label {label!r} is not one of the classes {classes} (or ids 0..)")


@router.get("/review", response_class=HTMLResponse, include_in_schema=False)
def review_page() -> HTMLResponse:
    return HTMLResponse(REVIEW_PAGE.read_text())


@router.post("/queue/claim")
def claim(reviewer: str = Depends(auth.reviewer)) -> Claimed:
    """Lease the next item this reviewer has not seen (ones they skipped last, deferred items first), or none."""
    svc = _service()
    c = svc.store.queue.claim(reviewer, svc.settings.lease_seconds)
    stats = fresh_stats(reviewer)
    if c is None:
        return Claimed(task=None, classes=svc.classes, reviewer=reviewer, stats=stats)
    task = Task(
        task_id=c.task_id,
        lease_id=c.lease_id,
        lease_expires_at=c.lease_expires_at,
        kind=c.kind,
        item_id=c.item_id,
        image_url=f"/v1/queue/tasks/{c.task_id}/image",
    )
    return Claimed(task=task, classes=svc.classes, reviewer=reviewer, stats=stats)


@router.get("/queue/tasks/{task_id}/image", dependencies=[Depends(auth.reviewer)])
def task_image(task_id: RowId) -> Response:
    data, media = _service().store.queue.image(task_id)
    return Response(data, media_type=media)


@router.post("/queue/tasks/{task_id}/label")
def label(task_id: RowId, body: LabelIn, reviewer: str = Depends(auth.reviewer)) -> Labelled:
    """Answer a claimed task: a class, or the verdict "none" (none of these) or "unsure" (can't tell)."""
    svc = _service()
    if body.verdict == CLASS:
        label = label_id(body.label, svc.classes)
    elif body.label is not None:
        raise HTTPException(422, f"a {body.verdict!r} verdict takes no label")
    else:
        label = None
    done, _ = svc.loop.answer(task_id, body.lease_id, reviewer, body.verdict, label)
    metrics.review_latency.observe(done.latency_s)
    fresh_stats()
    name = None if label is None else svc.classes[label]
    return Labelled(review_id=done.review_id, task_id=task_id, verdict=body.verdict, label=name)


@router.post("/queue/tasks/{task_id}/skip")
def skip(task_id: RowId, body: SkipIn, reviewer: str = Depends(auth.reviewer)) -> Skipped:
    """Give a claimed task back; it goes to someone else first."""
    _service().store.queue.skip(task_id, body.lease_id, reviewer)
    return Skipped(task_id=task_id, status="open")


@router.get("/queue/stats")
def stats(reviewer: str | None = Depends(auth.reviewer_or_admin)) -> QueueStats:
    return fresh_stats(reviewer)
