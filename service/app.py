"""BentoML service: classify images, answer when confident, defer the rest to a durable human review queue.

Each image is decoded and checked while its request is validated, so a bad one fails only its own request.
`classify` requests are merged greedily (service/batcher.py): the model runs once per batch (on the GPU when
there is one), the active policy decides, and every decision is committed before any answer. The review queue,
outcomes, policy reload and the reviewer page live in a FastAPI app mounted at /v1.
"""

from __future__ import annotations

import base64
import binascii
import logging
import random
import time
from pathlib import Path as FilePath
from typing import Annotated, Literal

import bentoml
import numpy as np
import torch
from bentoml.exceptions import ServiceUnavailable
from fastapi import FastAPI, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, PrivateAttr, model_validator
from sqlalchemy.exc import OperationalError

from service.batcher import GreedyBatcher
from service.config import Settings
from teaming.artifact import load_artifact
from teaming.data import DataError, decode_image, resize
from teaming.policy import PolicyError, confidence, load_policy, policy_from_dict
from teaming.store import NewDecision, Store, StoreError

REVIEW_PAGE = FilePath(__file__).with_name("review.html")
logger = logging.getLogger("bentoml.teaming")  # under bentoml so its log config shows it
web = FastAPI(title="teaming review queue")


SETTINGS = Settings.from_env()


class ImageIn(BaseModel):
    """One image to classify: base64 bytes (JPEG, PNG, ...) and an optional caller id.

    Validation decodes it, so a bad image fails its own request with a 400 before it can join a batch.
    """

    id: str | None = Field(None, max_length=256, description="caller's item id; generated when absent")
    data: str = Field(..., description="base64-encoded image file")
    _pixels: torch.Tensor = PrivateAttr()
    _raw: bytes = PrivateAttr()

    @model_validator(mode="after")
    def _decode(self) -> "ImageIn":
        limit = SETTINGS.max_image_bytes
        name = self.id or "image"
        if len(self.data) > 4 * (limit + 2) // 3 + 4:
            raise ValueError(f"{name}: over the size limit of {limit} bytes")
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{name}: data is not valid base64") from None
        if len(raw) > limit:
            raise ValueError(f"{name}: {len(raw)} bytes is over the size limit of {limit}")
        try:
            self._pixels = decode_image(raw, None, name, SETTINGS.max_pixels)
        except DataError as err:
            raise ValueError(str(err)) from None
        self._raw = raw
        return self

    @property
    def content_type(self) -> str:
        return "image/png" if self._raw[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"


class TopK(BaseModel):
    label: str
    probability: float


class Decision(BaseModel):
    item_id: str
    decision: Literal["auto", "deferred"]
    label: str | None = Field(None, description="the model's answer when auto; the reviewer's comes later")
    confidence: float
    top_k: list[TopK]
    model_version: str
    policy_version: str
    decision_id: int | None = Field(None, description="id in the decision log (absent only with logging off)")
    review_id: int | None = Field(None, description="review task id when deferred")


class LabelIn(BaseModel):
    lease_id: str = Field(..., max_length=64)
    label: int | str


class SkipIn(BaseModel):
    lease_id: str = Field(..., max_length=64)


RowId = Annotated[int, Path(ge=1, le=2**62, description="a row id from this service")]


class ClassifyToken:
    """ASGI middleware: when TEAMING_CLASSIFY_TOKEN is set, /classify needs it as a bearer token."""

    def __init__(self, app, token: str | None = None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if self.token and scope["type"] == "http" and scope["path"].rstrip("/") == "/classify":
            headers = dict(scope.get("headers") or [])
            if _bearer(headers.get(b"authorization", b"").decode("latin-1")) != self.token:
                response = JSONResponse({"error": "classify needs 'Authorization: Bearer <token>'"}, 401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _bearer(header: str | None) -> str | None:
    if not header or not header.lower().startswith("bearer "):
        return None
    return header[7:].strip()


@bentoml.service(
    resources={"gpu": 1},
    traffic={"timeout": 120, "max_concurrency": 1024},
    workers=1,
)
@bentoml.asgi_app(web, path="/v1")
class Teaming:
    def __init__(self) -> None:
        self.settings = s = SETTINGS
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.artifact = load_artifact(s.model_dir, self.device)
        self.model_version = f"{self.artifact.meta.name}@{self.artifact.meta.created}"
        self.classes = self.artifact.classes
        self.store = Store(s.db_url, s.audit_reviewers)
        self.rng = random.Random(s.seed)
        if s.policy_path is not None and s.policy_path.exists() and self.store.active_policy() is None:
            self.store.add_policy(load_policy(s.policy_path).to_dict(), activate=True)
        self.reload_policy()
        self.policy_checked_at = time.monotonic()
        self.policy_refused: str | None = None
        logger.info(
            "serving %s on %s (%d torch threads), policy %s, log %s",
            self.model_version,
            self.device,
            torch.get_num_threads(),
            self.active[1],
            s.db_url.split("@")[-1],
        )
        self.decisions_total = bentoml.metrics.Counter(
            name="teaming_decisions_total", documentation="Decisions by outcome", labelnames=["outcome"]
        )
        self.queue_depth = bentoml.metrics.Gauge(name="teaming_queue_depth", documentation="Open review tasks")
        self.deferral_rate = bentoml.metrics.Gauge(
            name="teaming_deferral_rate", documentation="Share of logged decisions deferred to people"
        )
        sizes = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
        self.batch_requests = bentoml.metrics.Histogram(
            name="teaming_batch_requests", documentation="Requests merged into one model call", buckets=sizes
        )
        self.batch_images = bentoml.metrics.Histogram(
            name="teaming_batch_images", documentation="Images in one model call", buckets=sizes
        )
        self.batcher = GreedyBatcher(
            self.classify_batch, s.max_batch_size, len, self._observe_batch, s.batch_concurrency
        )
        self.review_latency = bentoml.metrics.Histogram(
            name="teaming_review_latency_seconds",
            documentation="Time from decision to human label",
            buckets=(1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600),
        )

    def _observe_batch(self, requests: int, images: int) -> None:
        self.batch_requests.observe(requests)
        self.batch_images.observe(images)

    def reload_policy(self) -> str:
        body = self.store.active_policy()
        if body is None:
            raise RuntimeError("no policy: set TEAMING_POLICY or run `teaming retune`")
        policy = policy_from_dict(body)
        if policy.classes_ is not None and policy.classes_ != self.classes:
            raise PolicyError(f"policy classes {policy.classes_} differ from the model's {self.classes}")
        self.active = (policy, policy.version)  # one attribute, so readers never pair a policy with another's id
        return policy.version

    def follow_policy(self) -> None:
        """Every poll interval, take up a policy activated elsewhere: `teaming retune`, or a reload on a replica."""
        now = time.monotonic()
        if now - self.policy_checked_at < self.settings.policy_poll_seconds:
            return
        self.policy_checked_at = now
        try:
            version = self.store.active_policy_version()
        except OperationalError:
            return  # the decision log write reports the outage
        if version is None or version in (self.active[1], self.policy_refused):
            return
        try:
            self.reload_policy()
            logger.info("took up policy %s", version)
        except PolicyError as err:
            self.policy_refused = version
            logger.error("kept policy %s: the active %s does not fit the model: %s", self.active[1], version, err)

    def __is_ready__(self) -> bool:
        return self.store.ping()

    @bentoml.api
    async def classify(
        self, images: Annotated[list[ImageIn], Field(min_length=1, max_length=SETTINGS.max_images)]
    ) -> list[Decision]:
        """Answer each image or defer it to people. Requests are batched together; every decision in a batch is
        committed in one transaction before any reply."""
        return await self.batcher.submit(images)

    def classify_batch(self, requests: list[list[ImageIn]]) -> list[list[Decision]]:
        """One model call, one policy decision and one log transaction for several requests' images."""
        images = [item for req in requests for item in req]
        size = self.artifact.meta.input_size
        batch = torch.cat([resize(item._pixels[None], size) for item in images]).to(self.device)
        with torch.inference_mode():
            probs = self.artifact.predict_proba(batch).astype(np.float64)
        probs /= probs.sum(1, keepdims=True)
        self.follow_policy()
        policy, policy_version = self.active  # the version id hashes the policy: computed once per reload
        defer = policy.decide(probs)
        conf = confidence(probs, "max_prob")
        pred = probs.argmax(1)
        rows = []
        for i, item in enumerate(images):
            rows.append(
                NewDecision(
                    item_id=item.id or f"req-{time.time_ns()}-{i}",
                    outcome="deferred" if defer[i] else "auto",
                    machine_label=int(pred[i]),
                    confidence=float(conf[i]),
                    probs=[round(float(p), 6) for p in probs[i]],
                    model_version=self.model_version,
                    policy_version=policy_version,
                    audit=self.rng.random() < self.settings.audit_rate,
                    image=item._raw,
                    content_type=item.content_type,
                )
            )
        if self.settings.log_decisions:
            try:
                ids = self.store.record(rows)  # committed before the reply
            except OperationalError as err:  # database down or restarting: nothing was written
                raise ServiceUnavailable(
                    f"the decision log is unreachable, retry later ({type(err).__name__})"
                ) from None
        else:
            ids = [(None, None)] * len(rows)
        out = []
        for i, (row, (did, task)) in enumerate(zip(rows, ids)):
            self.decisions_total.labels(outcome=row.outcome).inc()
            top = np.argsort(-probs[i])[:3]
            out.append(
                Decision(
                    item_id=row.item_id,
                    decision=row.outcome,
                    label=None if row.outcome == "deferred" else self.classes[row.machine_label],
                    confidence=row.confidence,
                    top_k=[TopK(label=self.classes[j], probability=float(probs[i, j])) for j in top],
                    model_version=row.model_version,
                    policy_version=row.policy_version,
                    decision_id=did,
                    review_id=task,
                )
            )
        ends = np.cumsum([len(req) for req in requests])
        return [out[end - len(req) : end] for req, end in zip(requests, ends)]

    # ---- reviewer and admin routes (FastAPI, mounted at /v1) ----

    def _reviewer(self, request: Request) -> str:
        token = _bearer(request.headers.get("authorization"))
        if token is None:
            raise HTTPException(401, "reviewer routes need 'Authorization: Bearer <token>'")
        if token not in self.settings.reviewer_tokens:
            raise HTTPException(403, "unknown reviewer token")
        return self.settings.reviewer_tokens[token]

    def _admin(self, request: Request) -> None:
        token = _bearer(request.headers.get("authorization"))
        if token is None:
            raise HTTPException(401, "admin routes need 'Authorization: Bearer <token>'")
        if self.settings.admin_token is None or token != self.settings.admin_token:
            raise HTTPException(403, "not an admin token")

    def _reviewer_or_admin(self, request: Request) -> None:
        if (
            self.settings.admin_token is None
            or _bearer(request.headers.get("authorization")) != self.settings.admin_token
        ):
            self._reviewer(request)

    def _label_id(self, label: int | str) -> int:
        if isinstance(label, str) and label in self.classes:
            return self.classes.index(label)
        if isinstance(label, int) and 0 <= label < len(self.classes):
            return label
        raise HTTPException(422, f"label {label!r} is not one of the classes {self.classes} (or ids 0..)")

    def _refresh_gauges(self) -> dict:
        stats = self.store.stats()
        self.queue_depth.set(stats["queue_open"])
        self.deferral_rate.set(stats["deferral_rate"])
        return stats

    @web.get("/review", response_class=HTMLResponse, include_in_schema=False)
    def review_page(self) -> HTMLResponse:
        return HTMLResponse(REVIEW_PAGE.read_text())

    @web.post("/queue/claim")
    def claim(self, request: Request) -> dict:
        reviewer = self._reviewer(request)
        c = self.store.claim(reviewer, self.settings.lease_seconds)
        stats = self._refresh_gauges()
        if c is None:
            return {"task": None, "stats": stats}
        return {
            "task": {
                "task_id": c.task_id,
                "lease_id": c.lease_id,
                "lease_expires_at": c.lease_expires_at,
                "kind": c.kind,
                "item_id": c.item_id,
                "image_url": f"/v1/queue/tasks/{c.task_id}/image",
            },
            "classes": self.classes,
            "reviewer": reviewer,
            "stats": stats,
        }

    @web.get("/queue/tasks/{task_id}/image")
    def task_image(self, task_id: RowId, request: Request) -> Response:
        self._reviewer(request)
        try:
            data, media = self.store.image(task_id)
        except StoreError as err:
            raise HTTPException(err.status, str(err)) from None
        return Response(data, media_type=media)

    @web.post("/queue/tasks/{task_id}/label")
    def label(self, task_id: RowId, body: LabelIn, request: Request) -> dict:
        reviewer = self._reviewer(request)
        label = self._label_id(body.label)
        try:
            review_id, latency = self.store.submit(task_id, body.lease_id, reviewer, label)
        except StoreError as err:
            raise HTTPException(err.status, str(err)) from None
        self.review_latency.observe(latency)
        self._refresh_gauges()
        return {"review_id": review_id, "task_id": task_id, "label": self.classes[label]}

    @web.post("/queue/tasks/{task_id}/skip")
    def skip(self, task_id: RowId, body: SkipIn, request: Request) -> dict:
        reviewer = self._reviewer(request)
        try:
            self.store.skip(task_id, body.lease_id, reviewer)
        except StoreError as err:
            raise HTTPException(err.status, str(err)) from None
        return {"task_id": task_id, "status": "open"}

    @web.get("/queue/stats")
    def stats(self, request: Request) -> dict:
        self._reviewer_or_admin(request)
        return self._refresh_gauges()

    @web.get("/outcomes/{decision_id}")
    def outcome(self, decision_id: RowId, request: Request) -> dict:
        self._reviewer_or_admin(request)
        try:
            out = self.store.outcome(decision_id)
        except StoreError as err:
            raise HTTPException(err.status, str(err)) from None
        out["machine_label"] = self.classes[out["machine_label"]]
        out["final_label"] = None if out["final_label"] is None else self.classes[out["final_label"]]
        for r in out["reviews"]:
            r["label"] = self.classes[r["label"]]
        return out

    @web.post("/admin/policy/reload")
    def reload(self, request: Request) -> dict:
        self._admin(request)
        try:
            version = self.reload_policy()
        except (PolicyError, RuntimeError) as err:
            raise HTTPException(409, str(err)) from None
        return {"policy_version": version, "threshold": self.active[0].threshold_}


Teaming.add_asgi_middleware(ClassifyToken, token=SETTINGS.classify_token)
