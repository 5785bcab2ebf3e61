"""The live loop watches itself: photos turned upside down part-way raise the harm alarm, the fallback policy
is served by a second replica, the alarm reaches a webhook receiver, and an admin's all-clear restores the
policy on both replicas."""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("bentoml", reason="the service extra is not installed")

from teaming.datasets import load_cifar10h, load_default_test  # noqa: E402
from teaming.probes import upside_down  # noqa: E402


def flipped_photos(indices) -> list[tuple[str, bytes]]:
    """CIFAR-10 test photos from a camera mounted upside down, as PNG."""
    images = upside_down(load_default_test().images[list(indices)])
    out = []
    for i, img in zip(indices, images.permute(0, 2, 3, 1).numpy()):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        out.append((f"flipped/{i}", buf.getvalue()))
    return out


def receiver() -> tuple[ThreadingHTTPServer, list[dict]]:
    got: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def wait_for(what, seconds: float = 90.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if value := what():
            return value
        time.sleep(0.5)
    raise AssertionError("waited in vain")


@pytest.mark.slow
def test_a_shift_raises_harm_falls_back_on_both_replicas_and_an_admin_clears_it(serve, tmp_path):
    hook, got = receiver()
    db = f"sqlite:///{tmp_path / 'alarms.db'}"
    fast = dict(TEAMING_WATCH_SECONDS="1", TEAMING_POLICY_POLL_SECONDS="1", TEAMING_AUDIT_REVIEWERS="1")
    hooked = dict(TEAMING_WEBHOOK_URL=f"http://127.0.0.1:{hook.server_port}/hook", TEAMING_WEBHOOK_SECRET="s3cret")
    a = serve(audit_rate=1.0, db=db, **hooked, **fast)
    b = serve(audit_rate=1.0, db=db, **fast)  # a second replica on the same log, without webhooks
    try:
        before = a.admin().alarms()
        assert before.open == [] and {m.name for m in before.monitors} >= {"harm", "deferral_rate", "waiting"}
        served = before.policy_version
        votes = load_cifar10h().counts
        caller, alice = a.client(), a.reviewer("alice")
        for start in range(8500, 8820, 16):
            caller.classify(flipped_photos(range(start, start + 16)))
        while (t := alice.claim().task) is not None:  # every item audited by one person, who answers right
            alice.label(t.task_id, t.lease_id, int(np.argmax(votes[int(t.item_id.split("/")[1])])))
        raised = wait_for(lambda: [x for x in a.admin().alarms().open if x.name == "harm"])
        assert "below the" in raised[0].says and raised[0].action.startswith("defer-all: ")
        fallback = raised[0].action.removeprefix("defer-all: ")
        decision = wait_for(
            lambda: [d for d in b.client().classify(flipped_photos([9000])) if d.policy_version == fallback]
        )
        assert decision[0].decision == "deferred"  # replica b serves the fallback: everything goes to people
        alarms_b = b.admin().alarms()
        assert alarms_b.policy_version == fallback and alarms_b.fallback["replaces"] == served
        probe = wait_for(lambda: "alarm: harm" in (r := httpx.get(f"{b.url}/readyz")).text and r)
        assert probe.status_code == 200 and probe.text.startswith("ready\n")  # ready, and says why:
        assert f"alarm: harm on {served}: " in probe.text
        event = wait_for(lambda: [e for e in got if e["type"] == "alarm.raised" and e["data"]["name"] == "harm"])
        assert event[0]["data"]["policy_version"] == served and event[0]["data"]["raised"]
        cleared = b.admin().clear_alarms()
        assert cleared.open == [] and cleared.fallback is None and cleared.policy_version == served
        assert wait_for(lambda: [d for d in a.client().classify(flipped_photos([9001])) if d.policy_version == served])
        assert wait_for(lambda: [e for e in got if e["type"] == "alarm.cleared"])
        assert wait_for(lambda: httpx.get(f"{b.url}/readyz").text == "ready\n")
        metrics = a.admin().http.get("/metrics").text
        assert 'teaming_alarm{name="harm"}' in metrics
    finally:
        hook.shutdown()
