"""What the service does on its own, in one thread: deliver due webhooks, close items whose tasks waited past
the close time, and refit reviewer skills for consensus."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from teaming.ops.loop import ReviewLoop
from teaming.ops.webhooks import Deliverer

logger = logging.getLogger("bentoml.teaming")
TICK_SECONDS = 0.5
CLOSE_EVERY_SECONDS = 5.0
SKILLS_EVERY_SECONDS = 60.0


class Background:
    def __init__(self, loop: ReviewLoop, deliverer: Deliverer | None, close_after_seconds: float) -> None:
        self.loop = loop
        self.deliverer = deliverer
        self.close_after = close_after_seconds
        self.stopped = threading.Event()
        self.last = {"close": 0.0, "skills": 0.0}
        self.thread = threading.Thread(target=self._run, name="teaming-background", daemon=True)

    def start(self) -> "Background":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _due(self, what: str, every: float) -> bool:
        now = time.monotonic()
        if now - self.last[what] < every:
            return False
        self.last[what] = now
        return True

    def _run(self) -> None:
        while not self.stopped.wait(TICK_SECONDS):
            try:
                if self.deliverer is not None:
                    self.deliverer.deliver_due()
                if self._due("close", CLOSE_EVERY_SECONDS) and (n := self.loop.close_overdue(self.close_after)):
                    logger.info("closed %d items whose tasks waited over %.0f s", n, self.close_after)
                if self._due("skills", SKILLS_EVERY_SECONDS):
                    self.loop.refresh_skills()
            except SQLAlchemyError as err:  # the database is down or busy: try again next tick
                logger.warning("background work postponed: %s", type(err).__name__)
