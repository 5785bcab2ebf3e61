"""The service as it runs: `bentoml serve` in a subprocess on a free loopback port, talked to over HTTP."""

from __future__ import annotations

import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

pytest.importorskip("bentoml", reason="the service extra (pip install -e '.[serve]') is not installed")

from bench.common import drop_postgres, jpeg_payloads, metric_total  # noqa: E402
from service.process import ServiceProcess  # noqa: E402
from teaming.data import pack_jpegs  # noqa: E402
from teaming.labels import load_cifar10h  # noqa: E402
from teaming.loop import retune  # noqa: E402
from teaming.store import Store, reviews  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKENS = {"alice": "tok-alice", "bob": "tok-bob", "carol": "tok-carol", "dave": "tok-dave"}
ADMIN = "tok-admin"
LEASE_SECONDS = 8  # long enough for a slow CI machine between claim and label


def jpeg(i: int) -> bytes:
    return pack_jpegs([i])[0]


def item(i: int) -> dict:
    return jpeg_payloads(1, start=i)[0]


class Server(ServiceProcess):
    """The service with test settings: four reviewers, an admin, short leases, small limits."""

    def __init__(self, tmp: Path, audit_rate: float, db: str | None = None, **extra_env: str) -> None:
        self.db = db or f"sqlite:///{tmp / 'service.db'}"
        env = {
            "TEAMING_DB_URL": self.db,
            "TEAMING_REVIEWER_TOKENS": ",".join(f"{k}:{v}" for k, v in TOKENS.items()),
            "TEAMING_ADMIN_TOKEN": ADMIN,
            "TEAMING_AUDIT_RATE": str(audit_rate),
            "TEAMING_SEED": "0",
            "TEAMING_LEASE_SECONDS": str(LEASE_SECONDS),
            "TEAMING_MAX_IMAGES": "16",
            "TEAMING_MAX_IMAGE_BYTES": "200000",
            "TEAMING_MAX_PIXELS": "1000000",
            "BENTOML_HOME": str(tmp / "bentoml"),
            **extra_env,
        }
        super().__init__(env, tmp / "server.log")
        self.start()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("svc"), audit_rate=0.25)
    yield s
    s.stop()


def reviewer(server: Server, name: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKENS[name]}"})


def admin(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {ADMIN}"})


def classify(server: Server, items: list[dict], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{server.url}/classify", json={"images": items}, timeout=60, headers=headers)


def stats(server: Server) -> dict:
    return admin(server).get("/v1/queue/stats").raise_for_status().json()


def test_health_metrics_and_openapi(server):
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    paths = httpx.get(f"{server.url}/docs.json").json()["paths"]
    assert "/classify" in paths and "/v1/queue/claim" in paths and "/v1/admin/policy/reload" in paths


def test_classify_answers_or_defers_and_logs_first(server):
    r = classify(server, [item(i) for i in range(7000, 7016)])
    assert r.status_code == 200, r.text
    decisions = r.json()
    assert len(decisions) == 16
    policy = admin(server).post("/v1/admin/policy/reload").json()
    for d in decisions:
        assert d["decision"] in ("auto", "deferred")
        assert d["policy_version"] == policy["policy_version"] and d["model_version"].startswith("cifar10h-default@")
        assert len(d["top_k"]) == 3 and d["top_k"][0]["probability"] == pytest.approx(d["confidence"])
        assert (d["confidence"] < policy["threshold"]) == (d["decision"] == "deferred")
        if d["decision"] == "auto":
            assert d["label"] == d["top_k"][0]["label"] and d["review_id"] is None
        else:
            assert d["label"] is None and d["review_id"] is not None
        # committed before the answer: the outcome is readable right away
        out = admin(server).get(f"/v1/outcomes/{d['decision_id']}").json()
        assert out["item_id"] == d["item_id"] and out["outcome"] == d["decision"]
    assert any(d["decision"] == "deferred" for d in decisions) and any(d["decision"] == "auto" for d in decisions)


def test_metrics_report_deferral_queue_and_batches(server):
    before = httpx.get(f"{server.url}/metrics").text
    classify(server, [item(7100), item(7101), item(7102)]).raise_for_status()
    text = httpx.get(f"{server.url}/metrics").text
    for name in ("teaming_queue_depth", "teaming_deferral_rate", "teaming_review_latency_seconds_count"):
        assert name in text

    def grew(name: str) -> float:
        return metric_total(text, name) - metric_total(before, name)

    assert grew("teaming_decisions_total") == 3
    assert grew("teaming_batch_images_sum") == 3
    assert grew("teaming_batch_requests_count") == 1


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ([{"id": "x", "data": base64.b64encode(b"this is not an image").decode()}], 400, "cannot decode"),
        ([{"id": "x", "data": base64.b64encode(jpeg(1)[:200]).decode()}], 400, "cannot decode"),
        ([{"id": "x", "data": ""}], 400, "zero bytes"),
        ([{"id": "x", "data": "!!not base64!!"}], 400, "base64"),
        ([{"id": "x", "data": base64.b64encode(b"\xff" * 300000).decode()}], 400, "size limit"),
        ([{"id": "bomb", "data": base64.b64encode(_png(1100, 1000)).decode()}], 400, "over the limit"),
        ([item(1)] * 17, 400, "at most 16 items"),
        ([], 400, "at least 1 item"),
    ],
)
def test_bad_images_get_4xx_and_write_nothing(server, payload, status, message):
    before = stats(server)["decisions"]
    r = classify(server, [item(2)] + payload if payload and len(payload) == 1 else payload)
    assert r.status_code == status, r.text
    assert message in r.text
    assert stats(server)["decisions"] == before  # the good image in the same request was not logged either


def test_auth(server):
    assert httpx.post(f"{server.url}/v1/queue/claim").status_code == 401
    bad = httpx.post(f"{server.url}/v1/queue/claim", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 403 and "detail" in bad.json()
    assert reviewer(server, "alice").post("/v1/admin/policy/reload").status_code == 403
    assert httpx.post(f"{server.url}/v1/admin/policy/reload").status_code == 401
    assert httpx.get(f"{server.url}/v1/outcomes/1").status_code == 401


def test_review_flow_and_refusals(server):
    classify(server, [item(i) for i in range(7200, 7216)]).raise_for_status()
    alice = reviewer(server, "alice")
    claim = alice.post("/v1/queue/claim").json()
    task = claim["task"]
    assert task is not None and claim["classes"][0] == "airplane"
    img = alice.get(task["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    tid, lease = task["task_id"], task["lease_id"]
    r = alice.post(f"/v1/queue/tasks/{tid}/label", json={"lease_id": lease, "label": "unicorn"})
    assert r.status_code == 422 and "not one of the classes" in r.text
    r = alice.post(f"/v1/queue/tasks/{tid}/label", json={"lease_id": lease, "label": 10})
    assert r.status_code == 422
    r = alice.post(f"/v1/queue/tasks/{tid}/label", json={"lease_id": lease, "label": "cat"})
    assert r.status_code == 200 and r.json()["label"] == "cat"
    r = alice.post(f"/v1/queue/tasks/{tid}/label", json={"lease_id": lease, "label": "dog"})
    assert r.status_code == 409 and "already resolved" in r.text
    r = alice.post("/v1/queue/tasks/987654/label", json={"lease_id": lease, "label": "dog"})
    assert r.status_code == 404
    assert alice.get("/v1/outcomes/987654").status_code == 404
    with Store(server.db).engine.connect() as conn:  # the refused writes left exactly one review
        assert conn.execute(select(func.count()).where(reviews.c.task_id == tid)).scalar_one() == 1


def test_expired_lease_returns_the_item(server):
    classify(server, [item(i) for i in range(7300, 7316)]).raise_for_status()
    bob, carol = reviewer(server, "bob"), reviewer(server, "carol")
    task = bob.post("/v1/queue/claim").json()["task"]
    time.sleep(LEASE_SECONDS + 0.5)
    r = bob.post(f"/v1/queue/tasks/{task['task_id']}/label", json={"lease_id": task["lease_id"], "label": 1})
    assert r.status_code == 409 and "expired" in r.text
    seen = set()
    while (t := carol.post("/v1/queue/claim").json()["task"]) is not None and t["task_id"] != task["task_id"]:
        seen.add(t["task_id"])
        carol.post(f"/v1/queue/tasks/{t['task_id']}/skip", json={"lease_id": t["lease_id"]}).raise_for_status()
        if len(seen) > 200:
            break
    assert t is not None and t["task_id"] == task["task_id"]  # back in the queue for someone else
    carol.post(f"/v1/queue/tasks/{t['task_id']}/skip", json={"lease_id": t["lease_id"]}).raise_for_status()


def test_concurrent_clients_and_reviewers(server):
    before = stats(server)["decisions"]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda k: classify(server, [item(8000 + 4 * k + j) for j in range(4)]), range(24)))
    assert all(r.status_code == 200 for r in results)
    ids = [d["decision_id"] for r in results for d in r.json()]
    assert len(set(ids)) == 96 and stats(server)["decisions"] == before + 96
    claimed, lock = [], threading.Lock()

    def work(name: str) -> None:
        c = reviewer(server, name)
        while (t := c.post("/v1/queue/claim").json()["task"]) is not None:
            r = c.post(f"/v1/queue/tasks/{t['task_id']}/label", json={"lease_id": t["lease_id"], "label": 0})
            assert r.status_code == 200, r.text
            with lock:
                claimed.append(t["task_id"])

    threads = [threading.Thread(target=work, args=(n,)) for n in TOKENS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed))  # no task claimed twice
    s = stats(server)
    assert s["queue_open"] == 0 and s["queue_claimed"] == 0  # nothing lost or stuck


@pytest.fixture(params=["sqlite", "postgresql"])
def loop_db(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'loop.db'}"
        return
    from test_store import postgres_url

    url = postgres_url()
    yield url
    drop_postgres(url)


def test_full_loop_retune_and_reload(tmp_path, loop_db):
    """classify -> defer -> review -> outcome -> retune from audits -> taken up, on SQLite and on PostgreSQL.

    This server also protects classify with a token.
    """
    srv = Server(
        tmp_path, audit_rate=1.0, db=loop_db, TEAMING_CLASSIFY_TOKEN="tok-client", TEAMING_POLICY_POLL_SECONDS="1"
    )
    try:
        assert classify(srv, [item(1)]).status_code == 401
        assert classify(srv, [item(1)], token="wrong").status_code == 401
        items = list(range(7000, 7160))
        for k in range(0, len(items), 16):
            classify(srv, [item(i) for i in items[k : k + 16]], token="tok-client").raise_for_status()
        first = admin(srv).post("/v1/admin/policy/reload").json()["policy_version"]
        votes = load_cifar10h().counts

        def work(name: str, seed: int) -> None:
            c = reviewer(srv, name)
            local = np.random.default_rng(seed)
            while (t := c.post("/v1/queue/claim").json()["task"]) is not None:
                v = votes[int(t["item_id"].rsplit("/", 1)[1])]
                label = int(local.choice(10, p=v / v.sum()))
                c.post(f"/v1/queue/tasks/{t['task_id']}/label", json={"lease_id": t["lease_id"], "label": label})

        threads = [threading.Thread(target=work, args=(n, k)) for k, n in enumerate(TOKENS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out = admin(srv).get("/v1/outcomes/1").json()
        assert out["audit"] and len([r for r in out["reviews"] if r["kind"] == "audit"]) == 3
        assert out["final_label"] is not None
        policy = retune(srv.db, tmp_path / "retuned.json", max_deferral=0.5)
        assert policy.report_.n_items == len(items) and policy.model_["retuned_from"] == first
        time.sleep(1.5)  # past the poll interval: the service takes up the new policy with no reload call
        d = classify(srv, [item(9999)], token="tok-client").json()[0]
        assert d["policy_version"] == policy.version != first  # new decisions use the retuned policy, no restart
        r = admin(srv).post("/v1/admin/policy/reload").json()
        assert r["policy_version"] == policy.version
    finally:
        srv.stop()
