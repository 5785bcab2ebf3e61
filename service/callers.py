"""Callers' routes: classify images (answered or deferred to people), and get people's answers back.

`classify` checks the caller's token before it reads the body, refuses anything but JSON, decodes the images
off the event loop and hands them to the service's batcher; every refusal is a 4xx with a one-line reason.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import bentoml
from fastapi import APIRouter, Depends, Path, Query, Request

from service import auth
from service.schemas import Refused, decode, parse
from teaming.api import Decision, ErrorOut, OutcomeOut, OutcomesPage, ReviewOut
from teaming.ops.queue import NotFound

router = APIRouter(tags=["callers"])
RowId = Annotated[int, Path(ge=1, le=2**62, description="a decision id from this service")]
JSON_TYPES = ("application/json",)


def _service():
    return bentoml.get_current_service()


@router.post(
    "/classify",
    dependencies=[Depends(auth.classify_caller)],
    responses={400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 415: {"model": ErrorOut}},
)
async def classify(request: Request) -> list[Decision]:
    """Answer each image or defer it to people: a JSON body {"images": [{"id": ..., "data": <base64>}]}.

    Requests are batched together; every decision in a batch is committed before any answer."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in JSON_TYPES:
        raise Refused(415, f"classify takes a JSON body (Content-Type: application/json), not {kind or 'none'}")
    svc = _service()
    raw = await request.body()
    try:
        body = json.loads(raw)
    except ValueError:
        raise Refused(400, "the body is not valid JSON") from None
    req = parse(body, svc.settings)
    images = await asyncio.to_thread(lambda: [decode(item, svc.settings) for item in req.images])
    return await svc.classify(images)


def _outcome(row, admin: bool) -> OutcomeOut:
    classes = _service().classes
    if row.status is not None:
        status, label, source = row.status, row.label, row.source
    elif row.outcome == "auto":
        status, label, source = "answered", row.machine_label, "model"
    else:
        status, label, source = "pending", None, None
    reviews = None
    if admin:
        reviews = [
            ReviewOut(
                kind=r.kind, verdict=r.verdict, label=None if r.label is None else classes[r.label], reviewer=r.reviewer
            )
            for r in _service().store.log.reviews_of(row.id)
        ]
    return OutcomeOut(
        decision_id=row.id,
        item_id=row.item_id,
        outcome=row.outcome,
        machine_label=classes[row.machine_label],
        confidence=row.confidence,
        model_version=row.model_version,
        policy_version=row.policy_version,
        audit=row.audit,
        status=status,
        final_label=_name(label),
        source=source,
        method=row.method,
        n_labels=row.n_labels or 0,
        closed=bool(row.closed) or (row.outcome == "auto" and not row.audit),
        reason=row.reason,
        reviews=reviews,
    )


def _name(label: int | None) -> str | None:
    return None if label is None else _service().classes[label]


@router.get("/v1/outcomes")
def outcomes(
    item_id: Annotated[str | None, Query(max_length=256, description="every decision of this item id")] = None,
    after: Annotated[int, Query(ge=0, le=2**62, description="decision id the page starts after")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    admin: bool = Depends(auth.caller_or_admin),
) -> OutcomesPage:
    """Final answers, oldest decision first, a page at a time (the caller's way to get people's answers back)."""
    rows = _service().store.log.outcomes(item_id=item_id, after=after, limit=limit)
    items = [_outcome(r, admin) for r in rows]
    return OutcomesPage(items=items, next_after=items[-1].decision_id if len(items) == limit else None)


@router.get("/v1/outcomes/{decision_id}")
def outcome(decision_id: RowId, admin: bool = Depends(auth.caller_or_admin)) -> OutcomeOut:
    """One decision's final answer: the model's when auto, people's once they answer (reviews for the admin)."""
    rows = _service().store.log.outcomes(decision_ids=[decision_id])
    if not rows:
        raise NotFound(f"unknown decision {decision_id}")
    return _outcome(rows[0], admin)
