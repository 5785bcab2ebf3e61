"""Reviewer and admin routes (FastAPI, mounted at /v1): the review queue, outcomes, policy reload, the page.

Handlers reach the running service through `bentoml.get_current_service()`; auth is a dependency (auth.py)
and the queue's refusals map to HTTP codes in one place (the exception handlers below).
"""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

import bentoml
from fastapi import Depends, FastAPI, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from service import auth, metrics
from teaming.api import Claimed, LabelIn, Labelled, OutcomeOut, PolicyInfo, QueueStats, ReviewOut, SkipIn, Skipped, Task
from teaming.ops.review import final_label
from teaming.ops.store import Conflict, NotFound, Store

REVIEW_PAGE = FilePath(__file__).with_name("review.html")
web = FastAPI(title="teaming review queue")
RowId = Annotated[int, Path(ge=1, le=2**62, description="a row id from this service")]


def _store() -> Store:
    return bentoml.get_current_service().store


def _classes() -> list[str]:
    return bentoml.get_current_service().classes


StoreDep = Annotated[Store, Depends(_store)]
Classes = Annotated[list[str], Depends(_classes)]


@web.exception_handler(NotFound)
async def _not_found(_: Request, err: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, 404)


@web.exception_handler(Conflict)
async def _conflict(_: Request, err: Conflict) -> JSONResponse:
    return JSONResponse({"detail": str(err)}, 409)


def fresh_stats(store: Store) -> QueueStats:
    """Queue figures from the log, also published as gauges."""
    stats = store.stats()
    metrics.observe_stats(stats)
    return QueueStats(**stats)


def label_id(label: int | str, classes: list[str]) -> int:
    """A class name or id as the class id; 422 naming the classes otherwise."""
    if isinstance(label, str) and label in classes:
        return classes.index(label)
    if isinstance(label, int) and 0 <= label < len(classes):
        return label
    raise HTTPException(422, f"label {label!r} is not one of the classes {classes} (or ids 0..)")


@web.get("/review", response_class=HTMLResponse, include_in_schema=False)
def review_page() -> HTMLResponse:
    return HTMLResponse(REVIEW_PAGE.read_text())


@web.post("/queue/claim")
def claim(store: StoreDep, classes: Classes, reviewer: str = Depends(auth.reviewer)) -> Claimed:
    """Lease the next item this reviewer has not seen (deferred items first), or none."""
    c = store.claim(reviewer, bentoml.get_current_service().settings.lease_seconds)
    stats = fresh_stats(store)
    if c is None:
        return Claimed(task=None, stats=stats)
    task = Task(
        task_id=c.task_id,
        lease_id=c.lease_id,
        lease_expires_at=c.lease_expires_at,
        kind=c.kind,
        item_id=c.item_id,
        image_url=f"/v1/queue/tasks/{c.task_id}/image",
    )
    return Claimed(task=task, classes=classes, reviewer=reviewer, stats=stats)


@web.get("/queue/tasks/{task_id}/image", dependencies=[Depends(auth.reviewer)])
def task_image(task_id: RowId, store: StoreDep) -> Response:
    data, media = store.image(task_id)
    return Response(data, media_type=media)


@web.post("/queue/tasks/{task_id}/label")
def label(
    task_id: RowId, body: LabelIn, store: StoreDep, classes: Classes, reviewer: str = Depends(auth.reviewer)
) -> Labelled:
    label = label_id(body.label, classes)
    review_id, latency = store.submit(task_id, body.lease_id, reviewer, label)
    metrics.review_latency.observe(latency)
    fresh_stats(store)
    return Labelled(review_id=review_id, task_id=task_id, label=classes[label])


@web.post("/queue/tasks/{task_id}/skip")
def skip(task_id: RowId, body: SkipIn, store: StoreDep, reviewer: str = Depends(auth.reviewer)) -> Skipped:
    store.skip(task_id, body.lease_id, reviewer)
    return Skipped(task_id=task_id, status="open")


@web.get("/queue/stats", dependencies=[Depends(auth.reviewer_or_admin)])
def stats(store: StoreDep) -> QueueStats:
    return fresh_stats(store)


@web.get("/outcomes/{decision_id}", dependencies=[Depends(auth.reviewer_or_admin)])
def outcome(decision_id: RowId, store: StoreDep, classes: Classes) -> OutcomeOut:
    """The decision, its final answer (the reviewer's for deferred items) and every review so far."""
    o = store.outcome(decision_id)
    final = final_label(o.outcome == "deferred", o.machine_label, [(r.kind, r.label) for r in o.reviews])
    return OutcomeOut(
        decision_id=o.decision_id,
        item_id=o.item_id,
        outcome=o.outcome,
        machine_label=classes[o.machine_label],
        confidence=o.confidence,
        model_version=o.model_version,
        policy_version=o.policy_version,
        audit=o.audit,
        final_label=None if final is None else classes[final],
        open_tasks=o.open_tasks,
        reviews=[ReviewOut(kind=r.kind, label=classes[r.label], reviewer=r.reviewer) for r in o.reviews],
    )


@web.post("/admin/policy/reload", dependencies=[Depends(auth.admin)])
def reload() -> PolicyInfo:
    """Serve the database's active policy now (every replica also takes it up within the poll interval)."""
    served = bentoml.get_current_service().policy
    try:
        policy, version = served.reload()
    except ValueError as err:
        raise HTTPException(409, str(err)) from None
    return PolicyInfo(policy_version=version, threshold=policy.threshold_)
