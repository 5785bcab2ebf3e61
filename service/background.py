"""What the service does on its own: deliver due webhooks on a thread of their own (a slow receiver delays
nothing else), and on another close items whose tasks waited past the close time, refit reviewer skills for
consensus, and look at the log with the monitors (raising alarms, falling back on harm)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from service import metrics
from teaming.ops.alarmbook import alarm_line
from teaming.ops.loop import ReviewLoop
from teaming.ops.watch import Watched
from teaming.ops.webhooks import Deliverer

logger = logging.getLogger("bentoml.teaming")
TICK_SECONDS = 0.5
CLOSE_EVERY_SECONDS = 5.0
SKILLS_EVERY_SECONDS = 60.0
DELIVER_BUDGET_SECONDS = 20.0


class Background:
    def __init__(
        self,
        loop: ReviewLoop,
        deliverer: Deliverer | None,
        close_after_seconds: float,
        watch: Callable[[], Watched] | None = None,
        watch_seconds: float = 5.0,
    ) -> None:
        self.loop = loop
        self.deliverer = deliverer
        self.close_after = close_after_seconds
        self.watch, self.watch_seconds = watch, watch_seconds
        self.stopped = threading.Event()
        self.last = {"close": 0.0, "skills": 0.0, "watch": 0.0}
        self.open_alarms: list[str] = []  # as of the last look: what /readyz's body says
        self.threads = [threading.Thread(target=self._run, name="teaming-background", daemon=True)]
        if deliverer is not None:
            self.threads.append(threading.Thread(target=self._deliver, name="teaming-webhooks", daemon=True))

    def start(self) -> "Background":
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=10)

    def _deliver(self) -> None:
        """Due webhooks, a time budget a tick, so that stopping never waits long."""
        while not self.stopped.wait(TICK_SECONDS):
            try:
                self.deliverer.deliver_due(budget_seconds=DELIVER_BUDGET_SECONDS)
            except SQLAlchemyError as err:  # the database is down or busy: try again next tick
                logger.warning("webhook delivery postponed: %s", type(err).__name__)

    def _due(self, what: str, every: float) -> bool:
        now = time.monotonic()
        if now - self.last[what] < every:
            return False
        self.last[what] = now
        return True

    def _look(self) -> None:
        """The monitors' look at the log: gauges always, one WARNING line per alarm this replica raised."""
        watched = self.watch()
        metrics.observe_alarms(watched.alarms)
        metrics.observe_webhooks(*self.loop.store.outbox.backlog())
        self.open_alarms = [alarm_line(a) for a in watched.open]
        for a in watched.raised:
            logger.warning("alarm %s raised on policy %s: %s", a.name, watched.policy_version, a.says)
        if watched.fell_back_to:
            logger.warning("fell back to policy %s after harm on %s", watched.fell_back_to, watched.policy_version)

    def _run(self) -> None:
        while not self.stopped.wait(TICK_SECONDS):
            try:
                if self._due("close", CLOSE_EVERY_SECONDS) and (n := self.loop.close_overdue(self.close_after)):
                    logger.info("closed %d items whose tasks waited over %.0f s", n, self.close_after)
                if self._due("skills", SKILLS_EVERY_SECONDS):
                    self.loop.refresh_skills()
                if self.watch is not None and self._due("watch", self.watch_seconds):
                    self._look()
            except SQLAlchemyError as err:  # the database is down or busy: try again next tick
                logger.warning("background work postponed: %s", type(err).__name__)
