"""BentoML service: classify images, answer when confident, defer the rest to a durable human review queue.

Classify requests (callers.py) are merged greedily (batcher.py): the model runs once per batch (on the GPU when
there is one), the active policy decides, and every decision is committed before any answer. The HTTP routes
are FastAPI (web.py), mounted beside BentoML's own health and metrics routes.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor

import bentoml
import numpy as np
import torch
from sqlalchemy.exc import DBAPIError, OperationalError

from service import metrics
from service.admission import Admission
from service.background import Background
from service.batcher import GreedyBatcher
from service.decide import answers, decision_rows
from service.preflight import backend, open_store, preflight
from service.schemas import ClassifyJob, Decoded, PixelBudget, Refused
from service.served_policy import ServedPolicy
from service.settings import TRAFFIC_TIMEOUT, access_log, get_settings, service_resources
from service.web import web
from teaming.api import Decision
from teaming.model import Model, Outputs, load_model
from teaming.ops.log import NewDecision
from teaming.ops.loop import ReviewLoop
from teaming.ops.review import LoopRules
from teaming.ops.watch import WatchRules, look
from teaming.ops.webhooks import Deliverer

logger = logging.getLogger("bentoml.teaming")  # under bentoml so its log config shows it
metrics.own_prometheus_dir()  # before `bentoml serve` empties the shared one: replicas on one host keep theirs


@bentoml.service(  # admission at the door: admission.py
    resources=service_resources(),
    traffic={"timeout": TRAFFIC_TIMEOUT},
    workers=1,
    logging={"access": {"enabled": access_log()}},
)
@bentoml.asgi_app(web, path="/")
class Teaming:
    @bentoml.on_deployment
    def check() -> None:
        """Before any worker starts: a service that cannot work stops here, with one line, not in a crash loop."""
        preflight()

    def __init__(self) -> None:
        self.settings = s = get_settings()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        # every model call from one thread: a second thread in PyTorch's OpenMP made each forward 1.5 ms slower
        self.model_thread = ThreadPoolExecutor(1, thread_name_prefix="model")
        self.model, backend_name, why = self.model_thread.submit(self._load).result()
        self.model_version = self.model.version
        self.classes = self.model.classes
        self.store = open_store(s.db_url, s.db_wait_seconds)
        self.rng = random.Random(s.seed)
        self.policy = ServedPolicy(
            self.store, self.classes, self.model_version, s.policy_poll_seconds, s.policy, s.model_dir / "policy.json"
        )
        rules = LoopRules(s.audit_reviewers, s.unresolved_after, s.second_opinion_below, s.max_opinions)
        self.loop = ReviewLoop(self.store, self.classes, rules, webhooks=s.webhook_url is not None)
        self.loop.refresh_skills()
        self.pixel_budget = PixelBudget(s.pixel_budget)
        self.batcher = GreedyBatcher(
            self.classify_batch,
            s.max_batch_size,
            lambda job: len(job.images),
            metrics.observe_batch,
            s.batch_concurrency,
        )
        deliverer = None
        if s.webhook_url:
            deliverer = Deliverer(
                self.store.outbox,
                s.webhook_url,
                s.webhook_secret,
                s.webhook_max_attempts,
                retry_seconds=s.webhook_retry_seconds,
            )
        self.watch_rules = WatchRules(alpha=s.alarm_alpha, harm_tolerance=s.harm_tolerance,
                                      max_wait_seconds=s.max_wait_seconds, min_agreement=s.min_agreement,
                                      on_harm=s.on_harm)  # fmt: skip
        watch = lambda: look(self.store, self.model_version, self.watch_rules, self.loop.vote)  # noqa: E731
        self.background = Background(self.loop, deliverer, s.close_after_seconds, watch, s.watch_seconds).start()
        logger.info(
            "serving %s on %s with backend %s (%s; %d threads), policy %s (familiarity guard %s), log %s",
            self.model_version,
            self.device,
            backend_name,
            why,
            torch.get_num_threads(),
            self.policy.active[1],
            "on" if self.model.guard is not None and self.policy.active[0].unfamiliar_limit_ is not None else "off",
            s.db_url.split("@")[-1],
        )

    def _load(self) -> tuple[Model, str, str]:
        """The model with the backend chosen for this machine, warmed up (set-up cost is not a caller's)."""
        s = self.settings
        model = load_model(s.model_dir, self.device)
        name, why = backend(s, model.meta)
        model.use(name)
        model.warm_up()
        return model, name, why

    def _infer(self, images: list[Decoded]) -> Outputs:
        return self.model.outputs(torch.stack([item.pixels for item in images]))  # the backend moves it

    def __is_ready__(self) -> bool:
        """Ready while the log takes writes and images are not piling up faster than the model takes them."""
        backlog = self.batcher.queued() > 4 * self.settings.max_batch_size
        ready = not backlog and self.pixel_budget.used < self.pixel_budget.pixels and self.store.writable()
        metrics.ready.set(int(ready))
        return ready

    async def classify(self, job: ClassifyJob) -> list[Decision]:
        """Answer each image or defer it to people, batched with other requests; committed before the answer."""
        return await self.batcher.submit(job)

    def classify_batch(self, jobs: list[ClassifyJob]) -> list[list[Decision] | Refused]:
        """One model call, one policy decision and one log transaction for several requests' images; a request
        past its deadline is refused and logs nothing (its caller is about to be told it failed)."""
        requests = [job.images for job in jobs]
        images = [item for req in requests for item in req]
        out = self.model_thread.submit(self._infer, images).result()
        probs = out.probs.astype(np.float64)
        probs /= probs.sum(1, keepdims=True)
        self.policy.follow()
        policy, policy_version = self.policy.active
        s = self.settings
        reasons, scores = policy.judge(probs, unfamiliarity=out.unfamiliarity, features=out.features)
        rows = decision_rows(
            images,
            probs,
            reasons,
            scores,
            out.unfamiliarity,
            self.model_version,
            policy_version,
            s.audit_rate,
            s.audit_reviewers,
            self.rng,
        )
        ends = np.cumsum([len(req) for req in requests]).tolist()
        starts = [0, *ends[:-1]]
        late = [job.late() for job in jobs]
        groups = [rows[a:b] for a, b, gone in zip(starts, ends, late) if gone is None]
        logged = iter(self._log(groups) if groups else [])
        out: list[list[Decision] | Refused] = []
        for a, b, ids in zip(starts, ends, (gone or next(logged) for gone in late)):
            if isinstance(ids, Refused):
                out.append(ids)
                continue
            for row in rows[a:b]:
                metrics.decisions.labels(outcome=row.outcome).inc()
            out.append(answers(rows[a:b], ids, probs[a:b], self.classes))
        return out

    def _log(self, groups: list[list[NewDecision]]) -> list[list[tuple] | Refused]:
        """Commit every request's decisions and tasks before any reply: in one transaction, or, when the log
        refuses one request's data, each request alone, so that only it fails. 503 when the log is down."""
        if not self.settings.log_decisions:
            return [[(None, [None] * len(r.tasks)) for r in g] for g in groups]
        try:
            flat = self.store.log.record([r for g in groups for r in g])
        except OperationalError as err:
            raise Refused(
                503, f"the database is unreachable or refuses writes, retry later ({type(err).__name__})", 5
            ) from None
        except DBAPIError as err:
            if len(groups) == 1:
                return [Refused(400, f"the decision log refused this request ({type(err.orig).__name__})")]
            return [self._log([g])[0] for g in groups]
        ends = np.cumsum([len(g) for g in groups]).tolist()
        return [flat[e - len(g) : e] for g, e in zip(groups, ends)]


Teaming.add_asgi_middleware(Admission)
