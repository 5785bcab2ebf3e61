"""The service's own work: a slow webhook receiver holds up its own thread, never the closing of overdue items."""

from __future__ import annotations

import threading
import time

from service.background import Background


class SlowDeliverer:
    """Takes `seconds` a tick, as a receiver that answers slowly does."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.ticks = seconds, 0

    def deliver_due(self, budget_seconds: float = 30.0) -> int:
        self.ticks += 1
        time.sleep(self.seconds)
        return 0


class Loop:
    """Counts when overdue items were looked at."""

    def __init__(self) -> None:
        self.closed_at: list[float] = []
        self.done = threading.Event()

    def close_overdue(self, after: float) -> int:
        self.closed_at.append(time.monotonic())
        if len(self.closed_at) >= 2:
            self.done.set()
        return 0

    def refresh_skills(self) -> None:
        pass


def test_closing_goes_on_while_webhooks_are_slow(monkeypatch):
    import service.background as background

    monkeypatch.setattr(background, "CLOSE_EVERY_SECONDS", 0.5)
    loop, slow = Loop(), SlowDeliverer(30.0)
    start = time.monotonic()
    work = Background(loop, slow, close_after_seconds=60).start()
    try:
        assert loop.done.wait(10)  # twice within seconds, while the deliverer sleeps through its first tick
        assert loop.closed_at[1] - start < 5 and slow.ticks == 1
    finally:
        work.stopped.set()
