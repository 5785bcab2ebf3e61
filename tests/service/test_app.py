"""The service as it runs: `bentoml serve` in a subprocess on a free loopback port, talked to over HTTP."""

from __future__ import annotations

import base64
import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import func, select

from teaming.api import Task
from teaming.client import ApiError
from teaming.datasets import default_test_jpegs, load_cifar10h
from teaming.ops.retune import retune
from teaming.ops.schema import reviews
from teaming.ops.store import Store
from tests.support.common import jpeg_payloads, metric_total

MODEL = Path(__file__).resolve().parents[2] / "models" / "cifar10h-default"


def item(i: int) -> dict:
    return jpeg_payloads(1, start=i)[0]


def images(indices) -> list[tuple[str, bytes]]:
    return [(f"cifar10_test/{i}", b) for i, b in zip(indices, default_test_jpegs(list(indices)))]


@pytest.fixture(scope="module")
def server(serve):
    return serve(audit_rate=0.25)


def classify(server, items: list[dict], token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{server.url}/classify", json={"images": items}, timeout=60, headers=headers)


def decisions_logged(server) -> int:
    return server.admin().stats().decisions


def test_health_metrics_and_openapi(server):
    assert httpx.get(f"{server.url}/livez").status_code == 200
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    paths = httpx.get(f"{server.url}/docs.json").json()["paths"]
    assert "/classify" in paths and "/v1/queue/claim" in paths and "/v1/admin/policy/reload" in paths


def test_classify_answers_or_defers_and_logs_first(server):
    decisions = server.client().classify(images(range(7000, 7016)))
    assert len(decisions) == 16
    admin = server.admin()
    policy = admin.reload_policy()
    for d in decisions:
        assert d.decision in ("auto", "deferred")
        assert d.policy_version == policy.policy_version and d.model_version.startswith("cifar10h-default@")
        assert len(d.top_k) == 3 and d.top_k[0].probability == pytest.approx(d.confidence)
        assert (d.decision == "deferred") == (d.reason is not None)
        if d.reason != "unfamiliar":  # the familiarity guard defers unfamiliar images however confident
            assert (d.confidence < policy.threshold) == (d.decision == "deferred")
        if d.decision == "auto":
            assert d.label == d.top_k[0].label and d.task_id is None
        else:
            assert d.label is None and d.task_id is not None
        out = admin.outcome(d.decision_id)  # committed before the answer: the outcome is readable right away
        assert out.item_id == d.item_id and out.outcome == d.decision and out.defer_reason == d.reason
    assert any(d.decision == "deferred" for d in decisions) and any(d.decision == "auto" for d in decisions)


def test_unfamiliar_images_go_to_people_and_say_why(server):
    """Noise and flat colours (none of the classes) are deferred as unfamiliar, and the log keeps the reason."""
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    photos += [np.full((48, 64, 3), c, dtype=np.uint8) for c in ((200, 30, 30), (20, 120, 220))]
    blobs = []
    for k, pixels in enumerate(photos):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        blobs.append((f"odd-{k}", buf.getvalue()))
    decisions = server.client().classify(blobs)
    assert [d.decision for d in decisions] == ["deferred"] * len(blobs)
    assert [d.reason for d in decisions][:4] == ["unfamiliar"] * 4  # noise: the model may even be confident
    assert all(d.reason in ("unsure", "unfamiliar") for d in decisions)
    store = Store(server.db)
    from teaming.ops.schema import decisions as table

    with store.engine.connect() as conn:
        rows = conn.execute(select(table.c.defer_reason, table.c.unfamiliarity).where(table.c.item_id.like("odd-%")))
        logged = rows.all()
    assert len(logged) == len(blobs) and all(r[0] in ("unsure", "unfamiliar") and r[1] is not None for r in logged)


def test_metrics_report_deferral_queue_and_batches(server):
    client = server.client()
    before = client.metrics()
    client.classify(images([7100, 7101, 7102]))
    text = client.metrics()
    for name in ("teaming_queue_depth", "teaming_deferral_rate", "teaming_review_latency_seconds_count"):
        assert name in text

    def grew(name: str) -> float:
        return metric_total(text, name) - metric_total(before, name)

    assert grew("teaming_decisions_total") == 3
    assert grew("teaming_batch_images_sum") == 3
    assert grew("teaming_batch_requests_count") == 1
    deadline = time.monotonic() + 60  # the database-wide gauges come from the monitors' next look at the log
    while "teaming_webhooks_given_up" not in (text := client.metrics()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert metric_total(text, "teaming_ready") == 1  # set by the last /readyz
    assert metric_total(text, "teaming_webhooks_given_up") == 0 and metric_total(text, "teaming_webhooks_pending") == 0
    assert metric_total(text, "teaming_oldest_wait_seconds") >= 0


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "payload, status, message",
    [
        ([{"id": "x", "data": base64.b64encode(b"this is not an image").decode()}], 400, "cannot decode"),
        ([{"id": "x", "data": base64.b64encode(default_test_jpegs([1])[0][:200]).decode()}], 400, "cannot decode"),
        ([{"data": base64.b64encode(b"no image, no id").decode()}], 400, "images.1: cannot decode"),  # by position
        ([{"id": "x", "data": ""}], 422, "data: String should have at least 1 character"),  # the schema says so
        ([{"id": "x", "data": "!!not base64!!"}], 400, "base64"),
        ([{"id": "x", "data": base64.b64encode(b"\xff" * 300000).decode()}], 400, "size limit"),
        ([{"id": "bomb", "data": base64.b64encode(_png(1100, 1000)).decode()}], 400, "over the limit"),
        ([item(1)] * 17, 400, "at most 16 items"),
        ([], 422, "at least 1 item"),
    ],
)
def test_bad_images_get_4xx_and_write_nothing(server, payload, status, message):
    before = decisions_logged(server)
    r = classify(server, [item(2)] + payload if payload and len(payload) == 1 else payload)
    assert r.status_code == status, r.text
    assert message in r.text
    assert decisions_logged(server) == before  # the good image in the same request was not logged either


def test_auth(server, reviewers):
    assert httpx.post(f"{server.url}/v1/queue/claim").status_code == 401
    bad = httpx.post(f"{server.url}/v1/queue/claim", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and "unknown token" in bad.json()["detail"]  # a token nobody holds
    with pytest.raises(ApiError) as err:
        server.reviewer("alice").reload_policy()
    assert err.value.status == 403
    assert httpx.post(f"{server.url}/v1/admin/policy/reload").status_code == 401
    assert httpx.get(f"{server.url}/v1/outcomes/1").status_code == 401


def test_review_flow_and_refusals(server):
    server.client().classify(images(range(7200, 7216)))
    alice = server.reviewer("alice")
    claim = alice.claim()
    task = claim.task
    assert task is not None and claim.classes[0] == "airplane"
    img = alice.http.get(task.image_url)
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    tid, lease = task.task_id, task.lease_id
    for bad in ("unicorn", 10):
        with pytest.raises(ApiError) as err:
            alice.label(tid, lease, bad)
        assert err.value.status == 422 and (bad == 10 or "not one of the classes" in err.value.message)
        assert err.value.message.endswith("(or ids 0..9)")
    r = alice.http.post(f"/v1/queue/tasks/{tid}/label", json={"lease_id": lease, "verdict": "maybe"})
    assert (
        r.status_code == 422
        and r.json()["detail"] == "body.verdict: should be 'class' (with a label), 'none' or 'unsure'"
    )
    r = alice.http.post(f"/v1/queue/tasks/{tid}/label", data={"lease_id": lease, "label": "cat"})
    assert r.status_code == 415 and "takes a JSON body" in r.json()["detail"]
    r = alice.http.post(f"/v1/queue/tasks/{tid}/label", json={"lease_id": lease, "verdict": "none", "label": "cat"})
    assert r.status_code == 422 and r.json()["detail"].endswith("answer names no class: leave it out")
    wrong = b'{"lease_id": "%s", "verdict": "maybe"}' % lease.encode()
    r = alice.http.post(f"/v1/queue/tasks/{tid}/label", content=wrong, headers={"Content-Type": "application/x+json"})
    assert r.status_code == 422 and r.json()["detail"].startswith("body.verdict")  # a +json type is JSON
    assert "kind" not in Task.model_fields  # a claim does not say whether it is an audit: audits stay blind
    assert alice.label(tid, lease, "cat").label == "cat"
    with pytest.raises(ApiError, match="already resolved") as err:
        alice.label(tid, lease, "dog")
    assert err.value.status == 409
    with pytest.raises(ApiError) as err:
        alice.label(987654, lease, "dog")
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        server.admin().outcome(987654)
    assert err.value.status == 404
    with Store(server.db).engine.connect() as conn:  # the refused writes left exactly one review
        assert conn.execute(select(func.count()).where(reviews.c.task_id == tid)).scalar_one() == 1


def test_expired_lease_returns_the_item(server, lease_seconds):
    server.client().classify(images(range(7300, 7316)))
    bob, carol = server.reviewer("bob"), server.reviewer("carol")
    task = bob.claim().task
    time.sleep(lease_seconds + 0.5)
    with pytest.raises(ApiError, match="expired") as err:
        bob.label(task.task_id, task.lease_id, 1)
    assert err.value.status == 409
    seen = set()
    while (t := carol.claim().task) is not None and t.task_id != task.task_id:
        seen.add(t.task_id)
        carol.skip(t.task_id, t.lease_id)
        if len(seen) > 200:
            break
    assert t is not None and t.task_id == task.task_id  # back in the queue for someone else
    carol.skip(t.task_id, t.lease_id)


def test_concurrent_clients_and_reviewers(server, reviewers):
    before = decisions_logged(server)
    with ThreadPoolExecutor(8) as pool:
        batches = list(
            pool.map(lambda k: server.client().classify(images(range(8000 + 4 * k, 8004 + 4 * k))), range(24))
        )
    ids = [d.decision_id for batch in batches for d in batch]
    assert len(set(ids)) == 96 and decisions_logged(server) == before + 96

    def work(name: str) -> list[int]:
        c, done = server.reviewer(name), []
        while (t := c.claim().task) is not None:
            c.label(t.task_id, t.lease_id, 0)
            done.append(t.task_id)
        return done

    with ThreadPoolExecutor(len(reviewers)) as pool:
        claimed = [tid for f in [pool.submit(work, n) for n in reviewers] for tid in f.result()]
    assert len(claimed) == len(set(claimed))  # no task claimed twice
    s = server.admin().stats()
    assert s.queue_open == 0 and s.queue_claimed == 0  # nothing lost or stuck


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_full_loop_retune_and_reload(serve, backend, reviewers, tmp_path, request):
    """classify -> defer -> review -> outcome -> retune from audits -> taken up, on SQLite and on PostgreSQL.

    This server also protects classify with a token.
    """
    db_url = f"sqlite:///{tmp_path / 'loop.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    srv = serve(audit_rate=1.0, db=db_url, TEAMING_CLASSIFY_TOKEN="tok-client", TEAMING_POLICY_POLL_SECONDS="1")
    try:
        assert classify(srv, [item(1)]).status_code == 401
        assert classify(srv, [item(1)], token="wrong").status_code == 401
        caller = srv.client("tok-client")
        items = list(range(7000, 7160))
        for k in range(0, len(items), 16):
            caller.classify(images(items[k : k + 16]))
        admin = srv.admin()
        first = admin.reload_policy().policy_version
        votes = load_cifar10h().counts

        def work(name: str, seed: int) -> int:
            c, local, done = srv.reviewer(name), np.random.default_rng(seed), 0
            while (t := c.claim().task) is not None:
                v = votes[int(t.item_id.rsplit("/", 1)[1])]
                c.label(t.task_id, t.lease_id, int(local.choice(10, p=v / v.sum())))
                done += 1
            return done

        with ThreadPoolExecutor(len(reviewers)) as pool:
            assert sum(f.result() for f in [pool.submit(work, n, k) for k, n in enumerate(reviewers)]) > 0
        stats = admin.stats()
        assert (stats.audited_items, stats.audits_closed, stats.retune_needs) == (len(items), len(items), 50)
        out = admin.outcome(1)
        assert out.audit and len(out.reviews) == 3 and out.closed  # k = 3 people, the defer reviewer among them
        assert out.final_label is not None and out.status == "answered"
        tuned = retune(srv.db, tmp_path / "retuned.json", max_deferral=0.05)  # a capacity cut: a significant change
        policy = tuned.policy
        assert tuned.activated and tuned.audited_items == len(items) and policy.model_["retuned_from"] == first
        time.sleep(1.5)  # past the poll interval: the service takes up the new policy with no reload call
        d = caller.classify(images([9999]))[0]
        assert d.policy_version == policy.version != first  # new decisions use the retuned policy, no restart
        assert admin.reload_policy().policy_version == policy.version
    finally:
        srv.proc.stop()


def test_a_learned_rejector_policy_is_served_on_the_models_features(serve, tmp_path):
    """fit-policy --kind rejector writes a policy the service serves: it decides on the features of each batch."""
    from typer.testing import CliRunner

    from teaming.cli import app

    policy = tmp_path / "rejector.json"
    r = CliRunner().invoke(
        app,
        ["fit-policy", str(MODEL), "--out", str(policy), "--items", "7000:8500", "--kind", "rejector"],
    )
    assert r.exit_code == 0, r.output
    served = serve(audit_rate=0.0, TEAMING_POLICY=str(policy))
    decisions = served.client().classify(images(range(8500, 8516)))
    assert all(d.policy_version.startswith("rejector-") for d in decisions)
    assert any(d.decision == "deferred" for d in decisions) and any(d.decision == "auto" for d in decisions)
    assert all((d.decision == "deferred") == (d.reason is not None) for d in decisions)
