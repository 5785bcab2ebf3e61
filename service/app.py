"""BentoML service: classify images, answer when confident, defer the rest to a durable human review queue.

Classify requests (callers.py) are merged greedily (batcher.py): the model runs once per batch (on the GPU when
there is one), the active policy decides, and every decision is committed before any answer. The HTTP routes
are FastAPI (web.py), mounted beside BentoML's own health and metrics routes.
"""

from __future__ import annotations

import logging
import random
import time

import bentoml
import numpy as np
import torch
from sqlalchemy.exc import OperationalError

from service import metrics
from service.background import Background
from service.batcher import GreedyBatcher
from service.policy import ServedPolicy
from service.preflight import open_store, preflight
from service.schemas import Decoded, Refused
from service.settings import get_settings
from service.web import web
from teaming.api import Decision, TopK
from teaming.confidence import confidence
from teaming.data import resize
from teaming.model import load_artifact
from teaming.ops.log import NewDecision
from teaming.ops.loop import ReviewLoop
from teaming.ops.review import DEFER, LoopRules, keeps_image, review_tasks
from teaming.ops.webhooks import Deliverer

logger = logging.getLogger("bentoml.teaming")  # under bentoml so its log config shows it
metrics.own_prometheus_dir()  # before `bentoml serve` empties the shared one: replicas on one host keep theirs
preflight()  # in the serving process: a service that cannot work stops here, with one line, not in a crash loop


@bentoml.service(resources={"gpu": 1}, traffic={"timeout": 120, "max_concurrency": 1024}, workers=1)
@bentoml.asgi_app(web, path="/")
class Teaming:
    def __init__(self) -> None:
        self.settings = s = get_settings()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.artifact = load_artifact(s.model_dir, self.device)
        self.model_version = self.artifact.meta.version
        self.classes = self.artifact.classes
        self.store = open_store(s.db_url)
        self.rng = random.Random(s.seed)
        self.policy = ServedPolicy(
            self.store, self.classes, self.model_version, s.policy_poll_seconds, s.policy, s.model_dir / "policy.json"
        )
        rules = LoopRules(s.audit_reviewers, s.unresolved_after)
        self.loop = ReviewLoop(self.store, self.classes, rules, webhooks=s.webhook_url is not None)
        self.loop.refresh_skills()
        self.batcher = GreedyBatcher(
            self.classify_batch, s.max_batch_size, len, metrics.observe_batch, s.batch_concurrency
        )
        deliverer = None
        if s.webhook_url:
            deliverer = Deliverer(self.store.outbox, s.webhook_url, s.webhook_secret, s.webhook_max_attempts)
        self.background = Background(self.loop, deliverer, s.close_after_seconds).start()
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

    async def classify(self, images: list[Decoded]) -> list[Decision]:
        """Answer each image or defer it to people, batched with other requests; committed before the answer."""
        return await self.batcher.submit(images)

    def classify_batch(self, requests: list[list[Decoded]]) -> list[list[Decision]]:
        """One model call, one policy decision and one log transaction for several requests' images."""
        images = [item for req in requests for item in req]
        size = self.artifact.meta.input_size
        batch = torch.cat([resize(item.pixels[None], size) for item in images]).to(self.device)
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
                    item_id=item.item_id or f"req-{time.time_ns()}-{i}",
                    outcome="deferred" if defer[i] else "auto",
                    machine_label=int(pred[i]),
                    confidence=float(conf[i]),
                    probs=[round(float(p), 6) for p in probs[i]],
                    model_version=self.model_version,
                    policy_version=policy_version,
                    audit=audited,
                    image=item.raw if keeps_image(bool(defer[i]), audited) else None,
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
            return self.store.log.record(rows)
        except OperationalError as err:
            raise Refused(503, f"the decision log is unreachable, retry later ({type(err).__name__})", 5) from None
