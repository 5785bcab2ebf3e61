"""`teaming simulate` with the README's three reviewers and audits on: nothing stuck, every deferred item gets a
human answer, audits change answers, the retuned policy's deferral estimate holds live; and it refuses a log
with real work in it."""

from __future__ import annotations

import pytest

from teaming.datasets import default_test_jpegs
from teaming.ops.simulate import simulate

README_REVIEWERS = {"alice": "alice-secret", "bob": "bob-secret", "carol": "carol-secret"}


@pytest.mark.slow
def test_simulated_loop_with_three_reviewers(serve, admin_token):
    tokens = ",".join(f"{k}:{v}" for k, v in README_REVIEWERS.items())
    srv = serve(audit_rate=1.0, TEAMING_REVIEWER_TOKENS=tokens, TEAMING_MAX_IMAGES="64")
    items = list(range(7000, 7300))
    r = simulate(srv.url, list(README_REVIEWERS.values()), admin_token, srv.db, items, seed=1, progress=False)
    assert r.fit_items == r.live_items == 150 and r.audited_items == 150
    assert r.stuck_tasks == 0 and r.deferred_without_answer == 0
    assert r.changed_by_audit > 0  # the consensus of three people overrode some first answers
    assert r.answers == 3 * 300  # k = 3 people per item, the defer reviewer among them
    e = r.deferral_estimate
    assert e.low <= r.live_deferral <= e.high, (r.live_deferral, str(e))
    assert r.team_accuracy > r.machine_accuracy  # the team beats its model on the live half
    with srv.admin() as admin:
        assert admin.reload_policy().policy_version == r.policy_version


def test_simulate_refuses_a_log_with_real_work(serve, reviewers, admin_token):
    srv = serve(audit_rate=0.0)
    srv.client().classify([("a-real-photo", default_test_jpegs([0])[0])])
    with pytest.raises(ValueError, match="holds 1 decisions that teaming simulate did not make"):
        simulate(srv.url, list(reviewers.values()), admin_token, srv.db, [7000, 7001], progress=False)
    with srv.admin() as admin:
        assert admin.stats().decisions == 1  # nothing was classified or answered
