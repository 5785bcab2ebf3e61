"""The REST API's wire format: the requests and answers of the teaming service, as pydantic models.

The service (service/) answers with these and the client (teaming.client) parses them, so neither needs the
other's code; the library never imports the service.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from teaming.preprocess import InputContract


class TopK(BaseModel):
    label: str
    probability: float


class Decision(BaseModel):
    """The answer to one classified image: the model's label, or deferred to a person with its review task id."""

    item_id: str
    decision: Literal["auto", "deferred"]
    reason: Literal["unsure", "unfamiliar"] | None = Field(
        None, description="why it was deferred: the model is unsure, or the image is unlike anything it knows"
    )
    label: str | None = Field(None, description="the model's answer when auto; the reviewer's comes later")
    confidence: float
    top_k: list[TopK]
    model_version: str
    policy_version: str
    decision_id: int | None = Field(None, description="id in the decision log (absent only with logging off)")
    task_id: int | None = Field(
        None, description="when deferred, the review task a person answers (/v1/queue/tasks/ID)"
    )


class QueueStats(BaseModel):
    decisions: int
    auto: int
    deferred: int
    deferral_rate: float
    queue_open: int = Field(..., description="tasks any reviewer may take now")
    queue_claimed: int
    reviews_done: int
    mean_review_latency_s: float | None
    audited_items: int
    audits_closed: int = Field(..., description="audited items whose answers are all in (or closed short)")
    audit_reviewers: int
    retune_needs: int = Field(..., description="fully audited items `teaming retune` needs")
    unresolved_items: int
    closed_short: int = Field(..., description="items closed after the close time with fewer answers than asked")
    webhooks_pending: int
    webhooks_failed: int
    waiting_for_you: int | None = Field(None, description="tasks the calling reviewer may take now")


class Task(BaseModel):
    """A claimed review task: label it (or skip it) with its lease id before the lease expires. A blind task does
    not say whether the item was deferred or is an audit of an automatic answer; `prediction_set` is there only
    where the set is shown (a deferred item's task, with TEAMING_PREDICTION_SETS on)."""

    task_id: int
    lease_id: str
    lease_expires_at: float
    item_id: str
    image_url: str
    view: Literal["blind", "lenient", "strict"] = Field(
        "blind", description="lenient: the set's classes are highlighted; strict: only they, and none of these"
    )
    prediction_set: list[str] | None = Field(
        None, description="the classes likely to hold the answer, most likely first; absent when not shown"
    )

    @model_serializer(mode="wrap")
    def _set_only_where_shown(self, handler):
        data = handler(self)
        if data.get("prediction_set") is None:
            data.pop("prediction_set", None)
        return data


class Claimed(BaseModel):
    task: Task | None = Field(None, description="None when nothing is waiting for this reviewer")
    classes: list[str] | None = None
    reviewer: str | None = None
    stats: QueueStats


LeaseId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


def _not_a_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("a class id is a number, not true or false")
    return value


ClassId = Annotated[int, BeforeValidator(_not_a_bool)]


class ClassAnswer(BaseModel):
    """A reviewer's answer naming a class."""

    lease_id: LeaseId
    label: ClassId | str = Field(..., description="a class name or id")
    verdict: Literal["class"] = "class"


OtherVerdict = Literal["none", "unsure"]


class OtherAnswer(BaseModel):
    """A reviewer's answer that names no class: none of these, or can't tell."""

    lease_id: LeaseId
    verdict: OtherVerdict
    label: None = None

    @field_validator("verdict", mode="before")
    @classmethod
    def _known_verdict(cls, value: object) -> object:
        if value not in get_args(OtherVerdict):  # "class" answers are ClassAnswer: name all three
            raise PydanticCustomError("verdict", "should be 'class' (with a label), 'none' or 'unsure'")
        return value

    @field_validator("label", mode="before")
    @classmethod
    def _names_no_class(cls, value: object) -> object:
        if value is not None:
            raise PydanticCustomError("label_with_verdict", "a 'none' or 'unsure' answer names no class: leave it out")
        return value


ANSWER_TAGS = ("ClassAnswer", "OtherAnswer")  # LabelIn's union tags (error locations name them)


def _answer_kind(value: object) -> str:
    """Which answer a body is, read off its verdict, so that a wrong verdict is named as the error."""
    verdict = value.get("verdict", "class") if isinstance(value, dict) else getattr(value, "verdict", "class")
    return ANSWER_TAGS[0] if verdict == "class" else ANSWER_TAGS[1]


LabelIn = Annotated[
    Annotated[ClassAnswer, Tag(ANSWER_TAGS[0])] | Annotated[OtherAnswer, Tag(ANSWER_TAGS[1])],
    Discriminator(_answer_kind),
]


class SkipIn(BaseModel):
    lease_id: LeaseId


class Labelled(BaseModel):
    answer_id: int
    task_id: int
    verdict: str
    label: str | None
    correctable_until: float | None = Field(
        None, description="until when (Unix time) PUT /v1/answers/{answer_id} may correct it; None: it is final"
    )


class Skipped(BaseModel):
    task_id: int
    status: str


class ReviewOut(BaseModel):
    kind: str
    verdict: str
    label: str | None
    reviewer: str


class OutcomeOut(BaseModel):
    """A logged decision and its final answer: the model's when auto, people's consensus once they answer.

    `status` is "pending" while a deferred item waits for its first answer, "answered", or "unresolved" when
    reviewers found it none of the classes or could not tell (`method` and `reason` say which). `reviews` are
    shown to the admin only.
    """

    decision_id: int
    item_id: str
    outcome: Literal["auto", "deferred"]
    defer_reason: Literal["unsure", "unfamiliar"] | None = Field(None, description="why a deferred item was deferred")
    machine_label: str
    confidence: float
    model_version: str
    policy_version: str
    audit: bool
    status: Literal["pending", "answered", "unresolved"]
    final_label: str | None
    source: Literal["model", "reviewer", "consensus"] | None
    method: str | None = Field(
        None,
        description="how the answer was reached: dawid-skene or majority for several answers, posterior for the "
        "model and answers combined (second opinions); when unresolved, "
        "none (every reviewer said none of these), unsure (none could tell) or mixed",
    )
    n_labels: int
    closed: bool
    reason: str | None = Field(None, description="why it closed unresolved or short of answers; None otherwise")
    reviews: list[ReviewOut] | None = None


class OutcomesPage(BaseModel):
    items: list[OutcomeOut]
    next_after: int | None = Field(None, description="pass as `after` for the next page; None on the last one")


class ReviewerOut(BaseModel):
    """Agreement with the consensus of the others on shared items (95% Wilson interval) and Dawid-Skene's
    estimate of accuracy."""

    reviewer: str
    answers: int = Field(..., description="class answers given ('none of these' and 'can't tell' carry no skill)")
    compared: int = Field(..., description="of those, answers on items where others gave a class answer too")
    agreement: float | None = Field(..., description="share of the compared answers that match the others' consensus")
    ci_low: float | None
    ci_high: float | None
    accuracy: float | None = Field(..., description="Dawid-Skene's estimate (from 30 items with two or more answers)")
    none_answers: int = Field(0, description="'none of these' answers")
    unsure_answers: int = Field(0, description="'can't tell' answers")
    skips: int = Field(0, description="tasks given back")
    flags: list[str] = Field(
        default_factory=list,
        description="what sets this reviewer apart from the rest of the team, significantly: agreeing with the "
        "others far less, or answering none of these / can't tell, or skipping, far more",
    )


class ModelInfo(BaseModel):
    """What the service serves: the model, the images it takes and how, its classes, the policy and the guard."""

    model_version: str = Field(..., description="name@created of the served model")
    kind: Literal["teaming", "onnx", "torchscript"] = Field(
        ..., description="a net teaming trained, or an imported graph"
    )
    classes: list[str] = Field(..., description="in the order of the model's outputs; reviewers answer one of these")
    input: InputContract = Field(..., description="how every photo becomes the model's input")
    input_description: str
    backend: str = Field(..., description="how the model runs here")
    policy_version: str
    threshold: float = Field(..., description="the served policy's confidence threshold")
    guard: str | None = Field(
        ..., description="what the familiarity guard reads (features, energy or max-logit); None without a guard"
    )
    guard_active: bool = Field(..., description="the served policy defers images past the guard's limit as unfamiliar")


class AlarmOut(BaseModel):
    """One monitor: whether its alarm is raised, its evidence (the bettor's wealth) against what it needs, and
    the stream's mean against its bound."""

    name: str
    raised: bool
    estimate: float | None
    bound: float
    side: Literal["above", "below"]
    evidence: float
    needed: float
    n: int
    at: int | None
    says: str


class BookedAlarm(BaseModel):
    """An alarm raised and not yet cleared, with what the service did."""

    policy_version: str
    name: str
    raised_at: float
    says: str
    action: str | None


class AlarmsOut(BaseModel):
    """The active policy version's monitors, the alarms still open, and the fallback record when the active
    policy is a fallback."""

    policy_version: str | None
    monitors: list[AlarmOut]
    open: list[BookedAlarm]
    fallback: dict | None


class PolicyInfo(BaseModel):
    policy_version: str
    threshold: float


class ErrorOut(BaseModel):
    detail: str
