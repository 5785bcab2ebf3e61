"""Callers' routes: classify images (answered or deferred to people), and get people's answers back.

`classify` checks the caller's token before it reads the body, refuses anything but JSON, decodes the images
off the event loop and hands them to the service's batcher; every refusal is a 4xx with a one-line reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated

import bentoml
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, Field

from service import auth
from service.schemas import (
    GUARDED,
    WITH_BODY,
    ClassifyIn,
    ClassifyJob,
    Decoded,
    ItemId,
    Refused,
    decode,
    errors,
    inline_schema,
    is_json,
    media_type,
    parse,
)
from teaming.api import Decision, ModelInfo, OutcomeOut, OutcomesPage, ReviewOut
from teaming.ops.queue import NotFound

router = APIRouter(tags=["callers"])
CLASSIFY_SCHEMA = inline_schema(ClassifyIn)
RowId = Annotated[int, Path(ge=1, le=2**62, description="a decision id from this service")]


class OutcomesQuery(BaseModel):
    """Which outcomes: every decision of one item id, or a page of all, after a decision id."""

    model_config = {"extra": "forbid"}  # a misspelt parameter is a 422, not silently ignored
    item_id: ItemId | None = Field(None, description="every decision of this item id")
    after: int = Field(0, ge=0, le=2**62, description="decision id the page starts after")
    limit: int = Field(100, ge=1, le=1000)


def _service():
    return bentoml.get_current_service()


@router.post(
    "/classify",
    dependencies=[Depends(auth.bearer)],
    responses=errors(*GUARDED, *WITH_BODY, 422),
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": CLASSIFY_SCHEMA}}}},
)
async def classify(request: Request) -> list[Decision]:
    """Answer each image or defer it to people: a JSON body {"images": [{"id": ..., "data": <base64>}]}.

    Requests are batched together; every decision in a batch is committed before any answer."""
    kind = media_type(request)
    if not is_json(kind):
        raise Refused(415, f"classify takes a JSON body (Content-Type: application/json), not {kind or 'none'}")
    svc = _service()
    deadline = time.monotonic() + svc.settings.request_seconds  # from its arrival, upload included
    raw = await request.body()
    images = await asyncio.to_thread(_read, raw, svc, deadline)  # JSON, base64 and pixels: off the event loop
    return await svc.classify(ClassifyJob(images, deadline))


@router.get("/v1/model", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED))
def model() -> ModelInfo:
    """What is served: the model, its classes, how it takes photos (its input contract), the policy and the guard."""
    svc = _service()
    policy, version = svc.policy.active
    m = svc.model
    return ModelInfo(
        model_version=m.version,
        kind=m.meta.kind,
        classes=m.classes,
        input=m.contract,
        input_description=m.contract.describe(),
        backend=m.backend,
        policy_version=version,
        threshold=policy.threshold_,
        guard=None if m.guard is None else m.guard.kind,
        guard_active=m.guard is not None and policy.unfamiliar_limit_ is not None,
    )


def _read(raw: bytes, svc, deadline: float) -> list[Decoded]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise Refused(400, "the body is not valid JSON") from None
    except RecursionError:  # [[[[... nested thousands deep
        raise Refused(400, "the body's JSON is nested too deep") from None
    req = parse(body, svc.settings)
    contract = svc.model.contract
    out = []
    for i, item in enumerate(req.images):
        if (late := ClassifyJob(out, deadline).late()) is not None:
            raise late
        out.append(decode(item, i, svc.settings, contract, svc.pixel_budget))
    return out


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
        defer_reason=row.defer_reason,
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


@router.get("/v1/outcomes", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED, 422))
def outcomes(q: Annotated[OutcomesQuery, Query()], who: auth.Principal = Depends(auth.principal)) -> OutcomesPage:
    """Final answers, oldest decision first, a page at a time (the caller's way to get people's answers back)."""
    rows = _service().store.log.outcomes(item_id=q.item_id, after=q.after, limit=q.limit)
    items = [_outcome(r, who.role == auth.ADMIN) for r in rows]
    return OutcomesPage(items=items, next_after=items[-1].decision_id if len(items) == q.limit else None)


@router.get("/v1/outcomes/{decision_id}", dependencies=[Depends(auth.bearer)], responses=errors(*GUARDED, 404, 422))
def outcome(decision_id: RowId, who: auth.Principal = Depends(auth.principal)) -> OutcomeOut:
    """One decision's final answer: the model's when auto, people's once they answer (reviews for the admin)."""
    rows = _service().store.log.outcomes(decision_ids=[decision_id])
    if not rows:
        raise NotFound(f"unknown decision {decision_id}")
    return _outcome(rows[0], who.role == auth.ADMIN)
