"""What strangers, odd input and a failing database get: answers at the door before a body is read, one-line
refusals, images only to their lease holder, 503 when the database fails, a clear exit when it is absent."""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

from service.schemas import PixelBudget, Refused
from teaming.client import ApiError
from teaming.datasets import default_test_jpegs
from tests.support.process import ServiceProcess

CALLER = "tok-client"


def images(indices) -> list[tuple[str, bytes]]:
    return [(f"cifar10_test/{i}", b) for i, b in zip(indices, default_test_jpegs(list(indices)))]


def encoded(img: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def raw_request(url: str, head: str, body: bytes = b"", wait: float = 5.0) -> bytes:
    """Send `head` (and `body`) on a raw socket and return what came back within `wait` seconds."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(head.encode() + body)
        sock.settimeout(wait)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""


@pytest.fixture(scope="module")
def server(serve):
    return serve(audit_rate=0.0, TEAMING_CLASSIFY_TOKEN=CALLER, TEAMING_BODY_IDLE_SECONDS="1")


def test_strangers_are_answered_before_their_body_is_read(server):
    head = "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    for path in ("/classify", "/v1/queue/claim", "/v1/queue/tasks/1/label"):
        start = time.perf_counter()
        answer = raw_request(server.url, head.format(path=path))  # the body never comes
        assert answer.startswith(b"HTTP/1.1 401") and time.perf_counter() - start < 2, answer[:80]


def test_a_stalled_body_gets_408_and_too_many_get_429(server):
    head = (
        "POST /classify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\n"
        "Content-Length: 100000\r\n\r\n"
    ).format(tok=CALLER)
    answer = raw_request(server.url, head, b'{"images": [', wait=5)
    assert answer.startswith(b"HTTP/1.1 408")  # one second without a byte
    stalled = []
    host, port = server.url.removeprefix("http://").split(":")
    for _ in range(32):  # the default cap of unfinished uploads per client
        s = socket.create_connection((host, int(port)))
        s.sendall(head.encode())
        stalled.append(s)
    time.sleep(0.3)
    assert raw_request(server.url, head).startswith(b"HTTP/1.1 429")
    for s in stalled:
        s.close()
    time.sleep(1.5)
    assert len(server.client(CALLER).classify(images([7000]))) == 1  # the slots are free again


def test_odd_ids_labels_and_formats_are_refused_in_one_line(server):
    caller = server.client(CALLER)
    jpeg = base64.b64encode(default_test_jpegs([1])[0]).decode()
    r = httpx.post(
        f"{server.url}/classify", json={"images": [{"id": "a\x00b", "data": jpeg}]}, headers=caller.http.headers
    )
    assert r.status_code == 422 and r.json()["detail"].startswith("images.0.id: String should match pattern")
    photo = Image.new("RGB", (64, 48), "red")
    for fmt in ("TIFF", "PPM", "TGA", "PCX"):
        r = httpx.post(
            f"{server.url}/classify",
            json={"images": [{"id": fmt, "data": encoded(photo, fmt)}]},
            headers=caller.http.headers,
        )
        assert r.status_code == 415 and f"{fmt}: {fmt} images are not taken" in r.json()["detail"]
    bomb = Image.new("1", (20000, 20000))  # 48 kB of PNG, 400 million pixels
    r = httpx.post(
        f"{server.url}/classify",
        json={"images": [{"id": "bomb", "data": encoded(bomb, "PNG")}]},
        headers=caller.http.headers,
    )
    assert r.status_code == 400 and "bomb:" in r.json()["detail"]
    wide = caller.classify([("wide", base64.b64decode(encoded(Image.new("RGB", (300, 40), "blue"), "PNG")))])
    assert wide[0].item_id == "wide"  # any size within the limits; pixels are resized at intake
    [d] = [d for d in caller.classify(images(range(7000, 7016))) if d.decision == "deferred"][:1]
    alice = server.reviewer("alice")
    t = alice.claim().task
    for body in ({"lease_id": t.lease_id, "label": True}, {"lease_id": "ab\x00", "label": 1}):
        r = alice.http.post(f"/v1/queue/tasks/{t.task_id}/label", json=body)
        assert r.status_code == 422 and "\n" not in r.json()["detail"]
    anonymous = httpx.post(f"{server.url}/v1/queue/tasks/{t.task_id}/label", json={"bad": 1})
    assert anonymous.status_code == 401  # auth before validation
    r = alice.http.get("/v1/queue/tasks/2147483648/image")
    assert r.status_code == 404  # beyond a 32-bit id: no such row, not a server error
    alice.skip(t.task_id, t.lease_id)
    assert d.task_id


def test_reviewers_see_only_what_they_hold(server):
    caller = server.client(CALLER)
    caller.classify(images(range(7100, 7116)))
    alice, bob = server.reviewer("alice"), server.reviewer("bob")
    first = alice.claim().task
    again = alice.claim().task  # a page reload: the same item, not another one
    assert (again.task_id, again.lease_id) == (first.task_id, first.lease_id)
    held = alice.image(first.task_id)
    assert held[:2] == b"\xff\xd8" or held[:4] == b"\x89PNG"  # as sent (earlier tests in this module send PNGs)
    with pytest.raises(ApiError) as err:
        bob.image(first.task_id)  # not bob's lease
    assert err.value.status == 404
    assert server.admin().image(first.task_id) == held  # the admin sees any
    sent = alice.http.get(f"/v1/queue/tasks/{first.task_id}/image").headers  # gone from the browser with the lease
    assert sent["cache-control"] == "no-store" and sent["x-content-type-options"] == "nosniff"
    with pytest.raises(ApiError) as err:
        bob.outcome(1)
    assert err.value.status == 403
    alice.skip(first.task_id, first.lease_id)


def test_the_review_page_is_sent_with_a_content_security_policy(server):
    for path in ("/v1/review", "/v1/review.js", "/v1/review.css", "/v1/review.svg"):
        r = httpx.get(server.url + path)
        assert r.status_code == 200
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in httpx.get(f"{server.url}/v1/review").text  # no inline script to allow
    assert "sessionStorage" in httpx.get(f"{server.url}/v1/review.js").text
    assert "localStorage" not in httpx.get(f"{server.url}/v1/review.js").text


@pytest.mark.slow
def test_a_read_only_database_gives_503_and_not_ready(serve, tmp_path):
    db = tmp_path / "log.db"
    first = serve(audit_rate=0.0, db=f"sqlite:///{db}")
    first.client().classify(images(range(7000, 7016)))
    first.proc.stop()
    ro = serve(audit_rate=0.0, db=f"sqlite:///file:{db}?mode=ro&uri=true", ready_path="/livez")
    assert httpx.get(f"{ro.url}/readyz").status_code != 200
    r = httpx.post(
        f"{ro.url}/classify",
        json={"images": [{"id": "x", "data": base64.b64encode(default_test_jpegs([3])[0]).decode()}]},
    )
    assert r.status_code == 503 and r.headers["retry-after"] and "database" in r.json()["detail"]
    r = ro.reviewer("alice").http.post("/v1/queue/claim")
    assert r.status_code == 503 and r.headers["retry-after"]
    assert ro.admin().stats().decisions == 16  # reads still work


@pytest.mark.slow
def test_an_unreachable_database_at_start_exits_with_one_line(tmp_path, service_process):
    env = {"TEAMING_DB_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none", "TEAMING_DB_WAIT_SECONDS": "3"}
    proc = ServiceProcess({**env, "BENTOML_HOME": str(tmp_path / "bh")}, tmp_path / "log.txt")
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="service exited"):
        proc.start(timeout=60)
    log = (tmp_path / "log.txt").read_text()
    assert proc.proc.returncode != 0 and time.perf_counter() - start < 30
    assert "teaming: cannot serve: (psycopg.OperationalError)" in log
    assert log.count("Traceback") == 0


def test_a_database_path_that_is_no_url_stops_the_start_at_once(service_process):
    env = {**os.environ, "TEAMING_DB_URL": "runs/teaming.db"}
    code = "from service.preflight import preflight; preflight()"  # what `bentoml serve` runs before any worker
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "teaming: cannot serve: 'runs/teaming.db' is not a database URL; a SQLite file is sqlite:///runs/teaming.db"
    )


def test_the_pixel_budget_turns_away_what_it_cannot_hold():
    budget = PixelBudget(1000)
    with budget.hold(800, "a"):
        with pytest.raises(Refused) as err, budget.hold(300, "b"):
            pass
        assert err.value.status == 503 and err.value.retry_after == 1
    with budget.hold(5000, "alone"):  # one image larger than the budget still goes through alone
        assert budget.used == 5000
    assert budget.used == 0


def test_json_nested_thousands_deep_is_a_one_line_400(server):
    body = b'{"images": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    r = httpx.post(server.url + "/classify", content=body, headers={"Authorization": f"Bearer {CALLER}",
                                                                     "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and r.json() == {"detail": "the body's JSON is nested too deep"}


def test_a_database_from_a_newer_release_stops_the_start_with_one_line(tmp_path, service_process):
    from sqlalchemy import create_engine, text

    from teaming.ops.store import Store

    url = f"sqlite:///{tmp_path / 'newer.db'}"
    Store(url).dispose()
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))  # as a later release leaves it
    engine.dispose()
    proc = ServiceProcess({"TEAMING_DB_URL": url, "BENTOML_HOME": str(tmp_path / "bh")}, tmp_path / "log.txt")
    with pytest.raises(RuntimeError, match="service exited"):
        proc.start(timeout=120)
    log = (tmp_path / "log.txt").read_text()
    assert "teaming: cannot serve: the database's schema is at revision '9999', which this teaming does not know" in log
    assert log.count("Traceback") == 0


def test_a_request_past_its_deadline_gets_503_and_logs_nothing(serve):
    """Two legal, large requests at once once ended in BentoML's 504 while their decisions were committed after.
    Now a request not answered within TEAMING_REQUEST_SECONDS (here 2) gets 503 with Retry-After, and nothing
    of it is logged, then or later."""
    srv = serve(audit_rate=0.0, TEAMING_REQUEST_SECONDS="2", TEAMING_MAX_IMAGE_BYTES="", TEAMING_MAX_PIXELS="")
    y, x = np.mgrid[:3000, :3000]
    big = Image.fromarray(np.stack([(x * 255 // 3000), (y * 255 // 3000), ((x + y) % 256)], -1).astype(np.uint8))
    body = {"images": [{"id": f"big-{i}", "data": encoded(big, "PNG")} for i in range(16)]}

    def send(out: list) -> None:
        out.append(httpx.post(srv.url + "/classify", json=body, timeout=120))

    answers: list = []
    threads = [threading.Thread(target=send, args=(answers,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r.status_code for r in answers} <= {200, 503} and 503 in {r.status_code for r in answers}
    for r in answers:
        if r.status_code == 503:
            assert r.headers["retry-after"] == "5" and "nothing was logged" in r.json()["detail"]
    answered = 16 * sum(r.status_code == 200 for r in answers)
    time.sleep(3)  # nothing committed after the refusal either
    assert srv.admin().stats().decisions == answered


def test_paths_and_methods_nothing_serves_are_json_refusals(server, admin_token):
    admin = {"Authorization": f"Bearer {admin_token}"}
    r = httpx.get(server.url + "/v1/not-a-route", headers=admin)
    assert r.status_code == 404 and r.json() == {"detail": "/v1/not-a-route: no such path"}
    r = httpx.post(server.url + "/livez")
    assert r.status_code == 405 and r.json() == {"detail": "/livez: this path does not take that method"}
    assert httpx.get(server.url + "/v1/not-a-route").status_code == 401  # denied by default, before a 404
