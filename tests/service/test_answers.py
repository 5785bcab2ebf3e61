"""The loop as callers, reviewers and operators meet it over HTTP: answers back to the caller (by item id, paged,
by signed webhook, across a SIGKILL), "none of these" and "can't tell", policies bound to their model, metrics
kept per process, and client mistakes answered as client errors."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from teaming.client import ApiError
from teaming.datasets import default_test_jpegs
from teaming.ops.webhooks import verify
from teaming.policy import ThresholdPolicy, load_policy, save_policy
from tests.support.common import metric_total

CALLER = "tok-client"
SECRET = "whsec-test"


def images(indices) -> list[tuple[str, bytes]]:
    return [(f"cifar10_test/{i}", b) for i, b in zip(indices, default_test_jpegs(list(indices)))]


@pytest.fixture(scope="module")
def server(serve):
    return serve(audit_rate=0.0, TEAMING_CLASSIFY_TOKEN=CALLER, TEAMING_UNRESOLVED_AFTER="2")


def deferred_items(server, start: int, n: int):
    decisions = server.client(CALLER).classify(images(range(start, start + 16)))
    out = [d for d in decisions if d.decision == "deferred"][:n]
    assert len(out) == n
    return out


def test_the_caller_gets_the_human_answer_by_item_id_and_by_page(server):
    [d] = deferred_items(server, 7000, 1)
    caller = server.client(CALLER)
    [before] = caller.outcomes(item_id=d.item_id).items
    assert (before.status, before.final_label, before.closed, before.reviews) == ("pending", None, False, None)
    alice = server.reviewer("alice")
    while (t := alice.claim().task) is not None and t.task_id != d.task_id:
        alice.skip(t.task_id, t.lease_id)
    alice.label(t.task_id, t.lease_id, "frog")
    after = caller.outcome(d.decision_id)
    assert (after.status, after.final_label, after.source, after.closed) == ("answered", "frog", "reviewer", True)
    page = caller.outcomes(after=0, limit=5)
    assert len(page.items) == 5 and page.next_after == page.items[-1].decision_id
    assert [o.decision_id for o in caller.outcomes(after=page.next_after, limit=5).items][0] > page.next_after
    assert server.admin().outcome(d.decision_id).reviews[0].reviewer == "alice"  # names for the admin only
    for who in (server.reviewer("bob"), server.client()):
        with pytest.raises(ApiError) as err:
            who.outcome(d.decision_id)
        assert err.value.status in (401, 403)  # reviewers never see outcomes: audits stay blind


def test_none_of_these_and_cant_tell_close_an_item_unresolved(server, reviewers):
    [d] = deferred_items(server, 7100, 1)
    answered = []
    for name, verdict in (("alice", "none"), ("bob", "unsure")):
        c = server.reviewer(name)
        while (t := c.claim().task) is not None and t.item_id != d.item_id:
            c.skip(t.task_id, t.lease_id)
        answered.append(c.label(t.task_id, t.lease_id, None, verdict).verdict)
    assert answered == ["none", "unsure"]
    out = server.client(CALLER).outcome(d.decision_id)
    assert (out.status, out.final_label, out.closed) == ("unresolved", None, True)
    assert server.admin().stats().unresolved_items >= 1
    skills = {r.reviewer: r for r in server.admin().reviewers()}
    assert set(skills) == set(reviewers)  # every reviewer with a token, whether or not they named a class yet
    idle = [r for name, r in skills.items() if name != "alice"]  # alice names a class in the test above
    assert all((r.answers, r.compared, r.agreement) == (0, 0, None) for r in idle)  # bob said only "unsure"
    with pytest.raises(ApiError) as err:  # a verdict with a label is a contradiction
        c = server.reviewer("carol")
        t = c.claim().task
        c.label(t.task_id, t.lease_id, "cat", "none")
    assert err.value.status == 422


def claim_item(client, item_id: str):
    """The task of `item_id` for this reviewer (the others given back)."""
    while (t := client.claim().task) is not None and t.item_id != item_id:
        client.skip(t.task_id, t.lease_id)
    return t


def test_a_reviewer_corrects_a_misclick_and_the_caller_hears_of_it(server, reviewers):
    [d] = deferred_items(server, 7200, 1)
    carol = server.reviewer("carol")
    t = claim_item(carol, d.item_id)
    saved = carol.label(t.task_id, t.lease_id, "cat")
    assert saved.correctable_until is not None and saved.correctable_until > time.time() + 30  # 60 s by default
    assert server.client(CALLER).outcome(d.decision_id).final_label == "cat"
    fixed = carol.correct(saved.answer_id, t.lease_id, "dog")
    assert (fixed.answer_id, fixed.task_id, fixed.label) == (saved.answer_id, t.task_id, "dog")
    assert fixed.correctable_until == pytest.approx(saved.correctable_until, abs=1)  # the window does not restart
    assert server.client(CALLER).outcome(d.decision_id).final_label == "dog"
    out = server.admin().outcome(d.decision_id)
    assert [(r.reviewer, r.label) for r in out.reviews] == [("carol", "dog")]
    refusals = [
        (server.reviewer("alice"), saved.answer_id, t.lease_id, "cat", 404, "no answer"),  # not hers
        (carol, saved.answer_id, "0" * 32, "cat", 409, "another lease"),
        (carol, saved.answer_id, t.lease_id, "giraffe", 422, "not one of the classes"),
        (carol, 2**61, t.lease_id, "cat", 404, "no answer"),
    ]
    for who, answer_id, lease, label, status, says in refusals:
        with pytest.raises(ApiError) as err:
            who.correct(answer_id, lease, label)
        assert (err.value.status, says in str(err.value)) == (status, True), str(err.value)
    r = httpx.put(f"{server.url}/v1/answers/{saved.answer_id}", json={"lease_id": t.lease_id, "label": "cat"})
    assert r.status_code == 401  # a reviewer token, or nothing
    assert server.client(CALLER).outcome(d.decision_id).final_label == "dog"  # no refusal changed anything


def test_after_the_correction_window_an_answer_is_final(serve):
    server = serve(audit_rate=0.0, TEAMING_CLASSIFY_TOKEN=CALLER, TEAMING_CORRECTION_SECONDS="0")
    [d] = deferred_items(server, 7300, 1)
    alice = server.reviewer("alice")
    t = claim_item(alice, d.item_id)
    saved = alice.label(t.task_id, t.lease_id, "cat")
    assert saved.correctable_until is None
    with pytest.raises(ApiError) as err:
        alice.correct(saved.answer_id, t.lease_id, "dog")
    assert err.value.status == 409 and "is final" in str(err.value)
    assert server.client(CALLER).outcome(d.decision_id).final_label == "cat"


def test_client_mistakes_are_client_errors_in_one_line(server):
    url = f"{server.url}/classify"
    auth = {"Authorization": f"Bearer {CALLER}"}
    jpeg = default_test_jpegs([1])[0]
    r = httpx.post(url, files={"file": ("cat.jpg", jpeg, "image/jpeg")}, headers=auth)  # curl -F
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = httpx.post(url, content=b"hello", headers={**auth, "Content-Type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(url, content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json() == {"detail": "the body is not valid JSON"}
    r = httpx.post(url, json={"images": [{"id": "x", "data": "aGVsbG8="}]}, headers=auth)
    assert r.status_code == 400 and "object at 0x" not in r.text and "x: cannot decode image" in r.json()["detail"]
    r = httpx.post(url, json={"images": "nope"}, headers=auth)
    assert r.status_code == 422 and "\n" not in r.json()["detail"] and r.json()["detail"].startswith("images:")
    log = server.proc.log_path.read_text()
    assert "Traceback" not in log and log.count("refused POST /classify") >= 5


@pytest.mark.slow
def test_policies_are_bound_to_their_model(serve, tmp_path, toy_team):
    pytest.importorskip("bentoml")
    probs, y, human = toy_team(10)
    other = ThresholdPolicy().fit(probs, y, human, [str(c) for c in range(10)])
    other.model_ = {"name": "another-model", "created": "2026-01-01T00:00:00+00:00"}
    path = save_policy(other, tmp_path / "other.json")
    with pytest.raises(RuntimeError, match="fitted for model another-model@2026-01-01"):
        serve(audit_rate=0.0, TEAMING_POLICY=str(path))
    shipped = load_policy("models/cifar10h-default/policy.json")
    shipped.threshold_ = 0.5  # a policy for this very model, chosen explicitly
    explicit = save_policy(shipped, tmp_path / "explicit.json")
    db = f"sqlite:///{tmp_path / 'bound.db'}"
    first = serve(audit_rate=0.0, db=db)
    default_version = first.admin().reload_policy().policy_version
    first.proc.stop()
    second = serve(audit_rate=0.0, db=db, TEAMING_POLICY=str(explicit))  # the same log, an explicit file
    info = second.admin().reload_policy()
    assert info.threshold == 0.5 and info.policy_version == shipped.version != default_version


@pytest.mark.slow
def test_webhooks_reach_a_flaky_receiver_across_a_sigkill(serve, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got: list[tuple[str, bytes, str]] = []
    accepted: set[str] = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.headers["Teaming-Event-Id"], body, self.headers["Teaming-Signature"]))
            ok = len(got) > 3  # the first three attempts fail
            if ok:
                accepted.add(self.headers["Teaming-Event-Id"])
            self.send_response(200 if ok else 503)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_port}/hook"
    db = f"sqlite:///{tmp_path / 'hooks.db'}"
    env = dict(TEAMING_WEBHOOK_URL=hook, TEAMING_WEBHOOK_SECRET=SECRET, TEAMING_CLASSIFY_TOKEN=CALLER)
    srv = serve(audit_rate=0.0, db=db, **env)
    try:
        decisions = srv.client(CALLER).classify(images(range(7200, 7216)))
        deferred = [d for d in decisions if d.decision == "deferred"]
        alice = srv.reviewer("alice")
        while (t := alice.claim().task) is not None:
            alice.label(t.task_id, t.lease_id, "cat")
        srv.proc.kill()  # between commit and delivery: the events wait in the outbox
        srv = serve(audit_rate=0.0, db=db, **env)
        deadline = time.time() + 60
        while len(accepted) < len(deferred) and time.time() < deadline:
            time.sleep(0.5)
        bodies = {k: json.loads(b) for k, b, _ in got}
        assert len(bodies) == len(accepted) == len(deferred)  # every event arrived and was accepted
        assert len(got) >= len(deferred) + 3  # the failed attempts were retried
        assert {b["data"]["decision_id"] for b in bodies.values()} == {d.decision_id for d in deferred}
        assert all(b["type"] == "outcome.set" and b["data"]["final_label"] == "cat" for b in bodies.values())
        assert all(verify(b, sig, SECRET) for _, b, sig in got)  # every attempt signed, retries too
        for key, body, _ in got:
            assert json.loads(body)["id"] == key  # a duplicate carries the same idempotency key
        for _ in range(20):  # the last acceptance is marked in the outbox just after the receiver answers
            if srv.admin().stats().webhooks_pending == 0:
                break
            time.sleep(0.25)
        assert srv.admin().stats().webhooks_pending == 0
    finally:
        receiver.shutdown()


@pytest.mark.slow
def test_replicas_on_one_host_keep_their_own_metrics(serve, tmp_path):
    shared_home = str(tmp_path / "bentoml")  # the same BENTOML_HOME, as two replicas on one host would have
    a = serve(audit_rate=0.0, BENTOML_HOME=shared_home)
    a.client().classify(images(range(7000, 7003)))
    b = serve(audit_rate=0.0, BENTOML_HOME=shared_home)  # starting b must not wipe a's counters
    b.client().classify(images(range(7000, 7002)))
    assert metric_total(a.client().metrics(), "teaming_decisions_total") == 3
    assert metric_total(b.client().metrics(), "teaming_decisions_total") == 2


def test_skill_routing_serves_every_deferred_item_once(serve):
    server = serve(audit_rate=0.0, TEAMING_CLASSIFY_TOKEN=CALLER, TEAMING_ROUTING="skill")
    deferred = {
        d.item_id for d in server.client(CALLER).classify(images(range(7500, 7516))) if d.decision == "deferred"
    }
    alice, taken = server.reviewer("alice"), []
    while (t := alice.claim().task) is not None:  # no skills fitted yet: every reviewer alike, oldest first
        taken.append(t.item_id)
        alice.label(t.task_id, t.lease_id, "cat")
    assert sorted(taken) == sorted(deferred) and len(taken) == len(set(taken))
