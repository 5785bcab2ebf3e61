"""`teaming simulate` against a running service: every queued item is reviewed, the retuned policy is served."""

from __future__ import annotations

import pytest

from teaming.ops.simulate import simulate
from teaming.ops.store import Store


@pytest.mark.slow
def test_simulated_loop_retunes_and_reloads(serve, reviewers, admin_token):
    srv = serve(audit_rate=1.0)
    items = list(range(7000, 7120))
    res = simulate(srv.url, list(reviewers.values()), admin_token, srv.db, items, seed=1, batch=16, progress=False)
    assert res.items == 120 and res.audited_items == 120
    assert res.reviews == res.deferred + 3 * 120  # every defer task and every audit task was answered
    stats = Store(srv.db).stats()
    assert stats["queue_open"] == 0 and stats["queue_claimed"] == 0
    assert srv.admin().reload_policy().policy_version == res.policy_version
    assert 0 <= res.deferral_rate <= 1 and res.hindsight_accuracy >= res.hindsight_same_budget - 1e-9
    assert res.team_accuracy <= res.hindsight_accuracy + 1e-9  # nothing beats the best threshold on these items
    with pytest.raises(ValueError, match="audits need 3 different reviewers"):
        simulate(srv.url, ["only-one"], admin_token, srv.db, items)
