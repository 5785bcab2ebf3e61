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
