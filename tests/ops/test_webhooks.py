"""Webhooks: signatures a receiver can check, and at-least-once delivery from the outbox to a real local HTTP
receiver that fails its first attempts, across a restart of the deliverer."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from teaming.ops.log import NewDecision
from teaming.ops.store import Store
from teaming.ops.webhooks import EVENT_ID, SIGNATURE, Deliverer, backoff, sign, verify

SECRET = "whsec-test"


class Receiver:
    """A local HTTP endpoint that answers 500 to its first `fail` requests, then 200, keeping what it got."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.got: list[tuple[str, bytes, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append((self.headers[EVENT_ID], body, self.headers[SIGNATURE]))
                ok = len(receiver.got) > receiver.fail
                self.send_response(200 if ok else 500)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_signatures_verify_and_refuse_tampering():
    body = b'{"id": "e1"}'
    header = sign(body, SECRET, timestamp=1_700_000_000)
    assert header.startswith("t=1700000000,v1=")
    assert verify(body, header, SECRET, now=1_700_000_100)
    assert not verify(body + b" ", header, SECRET, now=1_700_000_100)  # a changed body
    assert not verify(body, header, "other-secret", now=1_700_000_100)
    assert not verify(body, header, SECRET, now=1_700_001_000)  # too old: a replay
    assert not verify(body, "garbage", SECRET) and not verify(body, None, SECRET)
    assert [backoff(n) for n in (1, 2, 3, 10, 30)] == [1, 2, 4, 300, 300]


def test_every_event_arrives_at_least_once_with_one_idempotency_key(db_url):
    store = Store(db_url)
    [(did, _)] = store.log.record([NewDecision("x", "deferred", 0, 0.5, [0.5, 0.5], "m@1", "p", tasks=("defer",))])
    with store.begin() as conn:
        ids = [store.outbox.add(conn, did, "outcome.set", {"n": n}) for n in range(3)]
    receiver = Receiver(fail=3)
    try:
        first = Deliverer(store.outbox, receiver.url, SECRET)
        assert first.deliver_due() == 0  # three events, three 500s: each waits 1 s for its next try
        assert first.deliver_due() == 0  # not due yet: nothing is sent
        first.close()  # a restart: the outbox is in the database, not in the deliverer
        again = Deliverer(store.outbox, receiver.url, SECRET)
        deadline = time.time() + 10
        delivered = 0
        while delivered < 3 and time.time() < deadline:
            delivered += again.deliver_due()
            time.sleep(0.2)
        assert delivered == 3
        keys = [k for k, _, _ in receiver.got]
        assert sorted(set(keys)) == sorted(ids) and len(keys) == 6  # each event twice: once failed, once accepted
        for key, body, header in receiver.got:
            assert verify(body, header, SECRET) and json.loads(body)["id"] == key
        assert again.deliver_due() == 0  # delivered events are not sent again
        assert store.log.stats(3)["webhooks_pending"] == 0
    finally:
        receiver.close()
        store.dispose()


def test_an_event_is_given_up_after_its_attempts_and_counted(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    [(did, _)] = store.log.record([NewDecision("x", "deferred", 0, 0.5, [0.5, 0.5], "m@1", "p", tasks=("defer",))])
    with store.begin() as conn:
        store.outbox.add(conn, did, "outcome.set", {})
    deliverer = Deliverer(store.outbox, "http://127.0.0.1:9/nobody-listens", SECRET, max_attempts=1, timeout=1)
    assert deliverer.deliver_due() == 0
    stats = store.log.stats(3)
    assert stats["webhooks_failed"] == 1 and stats["webhooks_pending"] == 0
    store.dispose()


@pytest.mark.parametrize("fail", [0])
def test_the_receiver_example_in_the_readme_checks_signatures(fail):
    body = json.dumps({"id": "e", "type": "outcome.set"}).encode()
    assert verify(body, sign(body, SECRET), SECRET)


def _one_event(store: Store, written: float | None = None) -> None:
    [(did, _)] = store.log.record([NewDecision("x", "deferred", 0, 0.5, [0.5, 0.5], "m@1", "p", tasks=("defer",))])
    with store.begin() as conn:
        store.outbox.add(conn, did, "outcome.set", {})
    if written is not None:
        from sqlalchemy import update

        from teaming.ops.schema import events

        with store.begin() as conn:
            conn.execute(update(events).values(created_at=written))


def test_events_are_retried_for_a_day_then_given_up_until_redelivered(tmp_path):
    from tests.support.cli import cli

    url = f"sqlite:///{tmp_path / 'log.db'}"
    store = Store(url)
    _one_event(store, written=time.time() - 2 * 86400)  # written two days ago: its day of retries is over
    _one_event(store)  # written now
    nobody = Deliverer(store.outbox, "http://127.0.0.1:9/nobody-listens", SECRET, timeout=1)
    assert nobody.deliver_due() == 0
    stats = store.log.stats(3)
    assert stats["webhooks_failed"] == 1 and stats["webhooks_pending"] == 1  # the fresh one waits for its retry
    r = cli("webhooks", "redeliver", "--db", url, "--since", "3d")
    assert r.returncode == 0 and "queued 1 given-up event again" in r.stdout
    receiver = Receiver(fail=0)
    try:
        assert Deliverer(store.outbox, receiver.url, SECRET).deliver_due() == 1  # due again at once, a fresh day
    finally:
        receiver.close()
    assert store.log.stats(3)["webhooks_failed"] == 0
    bad = cli("webhooks", "redeliver", "--db", url, "--since", "last tuesday")
    assert bad.returncode == 2 and "neither an ISO date and time nor a span" in bad.stderr
    store.dispose()


class SlowReceiver(Receiver):
    """A receiver that takes `seconds` to answer each event."""

    def __init__(self, seconds: float) -> None:
        super().__init__(fail=0)
        handler = self.server.RequestHandlerClass
        slow = handler.do_POST

        def do_POST(self) -> None:
            time.sleep(seconds)
            slow(self)

        handler.do_POST = do_POST


def test_a_slow_receiver_gets_a_time_budget_and_the_rest_wait_unlocked(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'log.db'}")
    for _ in range(6):
        _one_event(store)
    receiver = SlowReceiver(1.0)
    try:
        deliverer = Deliverer(store.outbox, receiver.url, SECRET, timeout=5)
        start = time.monotonic()
        done = deliverer.deliver_due(budget_seconds=2.5)
        took = time.monotonic() - start
        assert 1 <= done < 6 and took < 6  # the budget ends the tick; a post already under way finishes
        from sqlalchemy import select

        from teaming.ops.schema import events

        with store.begin() as conn:
            locked = conn.execute(select(events.c.locked_until).where(events.c.delivered_at.is_(None))).scalars().all()
        assert locked and all(x is None for x in locked)  # what it did not get to is free for another replica
    finally:
        receiver.close()
        store.dispose()
