"""BentoML service: classify images, answer when confident, defer the rest to a durable human review queue.

`classify` requests are merged greedily (batcher.py): the model runs once per batch (on the GPU when there is
one), the active policy decides, and every decision is committed before any answer. The review queue, outcomes,
policy reload and the reviewer page are FastAPI routes mounted at /v1 (routes.py).
"""

from __future__ import annotations

import logging
import random
import time

import bentoml
import numpy as np
import torch
from bentoml.exceptions import ServiceUnavailable
from sqlalchemy.exc import OperationalError

from service import metrics
from service.auth import ClassifyToken
from service.batcher import GreedyBatcher
from service.policy import ServedPolicy
from service.routes import web
from service.schemas import ImageIn, Images
from service.settings import get_settings
from teaming.api import Decision, TopK
from teaming.confidence import confidence
from teaming.data import resize
from teaming.model import load_artifact
from teaming.ops.review import DEFER, keeps_image, review_tasks
from teaming.ops.store import NewDecision, Store
from teaming.policy import load_policy

logger = logging.getLogger("bentoml.teaming")  # under bentoml so its log config shows it


@bentoml.service(resources={"gpu": 1}, traffic={"timeout": 120, "max_concurrency": 1024}, workers=1)
@bentoml.asgi_app(web, path="/v1")
class Teaming:
    def __init__(self) -> None:
        self.settings = s = get_settings()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.artifact = load_artifact(s.model_dir, self.device)
        self.model_version = f"{self.artifact.meta.name}@{self.artifact.meta.created}"
        self.classes = self.artifact.classes
        self.store = Store(s.db_url)
        self.rng = random.Random(s.seed)
        if s.policy_path.exists() and self.store.active_policy() is None:
            self.store.add_policy(load_policy(s.policy_path).to_dict(), activate=True)
        self.policy = ServedPolicy(self.store, self.classes, s.policy_poll_seconds)
        self.batcher = GreedyBatcher(
            self.classify_batch, s.max_batch_size, len, metrics.observe_batch, s.batch_concurrency
        )
        logger.info(
            "serving %s on %s (%d torch threads), policy %s, log %s",
            self.model_version,
            self.device,
            torch.get_num_threads(),
            self.policy.active[1],
            s.db_url.split("@")[-1],
        )

    def __is_ready__(self) -> bool:
        return self.store.ping()

    @bentoml.api
    async def classify(self, images: Images) -> list[Decision]:
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
        self.policy.follow()
        policy, policy_version = self.policy.active
        defer = policy.decide(probs)
        conf = confidence(probs, "max_prob")
        pred = probs.argmax(1)
        rows = []
        for i, item in enumerate(images):
            audited = self.rng.random() < self.settings.audit_rate
            rows.append(
                NewDecision(
                    item_id=item.id or f"req-{time.time_ns()}-{i}",
                    outcome="deferred" if defer[i] else "auto",
                    machine_label=int(pred[i]),
                    confidence=float(conf[i]),
                    probs=[round(float(p), 6) for p in probs[i]],
                    model_version=self.model_version,
                    policy_version=policy_version,
                    audit=audited,
                    image=item._raw if keeps_image(bool(defer[i]), audited) else None,
                    content_type=item.content_type,
                    tasks=review_tasks(bool(defer[i]), audited, self.settings.audit_reviewers),
                )
            )
        ids = self._log(rows)
        out = []
        for i, (row, (did, task_ids)) in enumerate(zip(rows, ids)):
            metrics.decisions.labels(outcome=row.outcome).inc()
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
                    review_id=task_ids[row.tasks.index(DEFER)] if DEFER in row.tasks else None,
                )
            )
        ends = np.cumsum([len(req) for req in requests])
        return [out[end - len(req) : end] for req, end in zip(requests, ends)]

    def _log(self, rows: list[NewDecision]) -> list[tuple[int | None, list[int | None]]]:
        """Commit the batch's decisions and tasks before any reply; 503 (nothing written) when the log is down."""
        if not self.settings.log_decisions:
            return [(None, [None] * len(r.tasks)) for r in rows]
        try:
            return self.store.record(rows)
        except OperationalError as err:
            raise ServiceUnavailable(f"the decision log is unreachable, retry later ({type(err).__name__})") from None


Teaming.add_asgi_middleware(ClassifyToken)
