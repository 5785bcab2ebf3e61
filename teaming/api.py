"""The REST API's wire format: the requests and answers of the teaming service, as pydantic models.

The service (service/) answers with these and the client (teaming.client) parses them, so neither needs the
other's code; the library never imports the service.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TopK(BaseModel):
    label: str
    probability: float


class Decision(BaseModel):
    """The answer to one classified image: the model's label, or deferred to a person with a review id."""

    item_id: str
    decision: Literal["auto", "deferred"]
    label: str | None = Field(None, description="the model's answer when auto; the reviewer's comes later")
    confidence: float
    top_k: list[TopK]
    model_version: str
    policy_version: str
    decision_id: int | None = Field(None, description="id in the decision log (absent only with logging off)")
    review_id: int | None = Field(None, description="review task id when deferred")


class QueueStats(BaseModel):
    decisions: int
    auto: int
    deferred: int
    deferral_rate: float
    queue_open: int
    queue_claimed: int
    reviews_done: int
    mean_review_latency_s: float | None


class Task(BaseModel):
    """A claimed review task: label it (or skip it) with its lease id before the lease expires."""

    task_id: int
    lease_id: str
    lease_expires_at: float
    kind: str
    item_id: str
    image_url: str


class Claimed(BaseModel):
    task: Task | None = Field(None, description="None when nothing is waiting for this reviewer")
    classes: list[str] | None = None
    reviewer: str | None = None
    stats: QueueStats


class LabelIn(BaseModel):
    lease_id: str = Field(..., max_length=64)
    label: int | str = Field(..., description="a class name or id")


class SkipIn(BaseModel):
    lease_id: str = Field(..., max_length=64)


class Labelled(BaseModel):
    review_id: int
    task_id: int
    label: str


class Skipped(BaseModel):
    task_id: int
    status: str


class ReviewOut(BaseModel):
    kind: str
    label: str
    reviewer: str


class OutcomeOut(BaseModel):
    """A logged decision, its final answer (None while a deferred item waits for a person) and its reviews."""

    decision_id: int
    item_id: str
    outcome: Literal["auto", "deferred"]
    machine_label: str
    confidence: float
    model_version: str
    policy_version: str
    audit: bool
    final_label: str | None
    open_tasks: int
    reviews: list[ReviewOut]


class PolicyInfo(BaseModel):
    policy_version: str
    threshold: float


class ErrorOut(BaseModel):
    detail: str
