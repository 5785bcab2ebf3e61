"""`teaming simulate` with the README's three reviewers and audits on: nothing stuck, every deferred item gets a
human answer, audits change answers, the retuned policy's deferral estimate holds live; and it refuses a log
with real work in it."""

from __future__ import annotations

import numpy as np
import pytest

from teaming.datasets import default_test_jpegs, shared_data_dir
from teaming.ops.simulate import VOTE_SECONDS, cifar10n_people, cifar_replay, simulate, vote_people, wait_interval

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
    assert r.team_interval.value == r.team_accuracy and len(r.served_right) == 150
    assert r.answers_per_item == 3  # every live item audited by three people
    assert len(r.waits) == 0  # every deferred item was audited too: none waits as a plain deferral
    with srv.admin() as admin:
        assert admin.reload_policy().policy_version == r.policy_version


def test_simulate_refuses_a_log_with_real_work(serve, reviewers, admin_token):
    srv = serve(audit_rate=0.0)
    srv.client().classify([("a-real-photo", default_test_jpegs([0])[0])])
    with pytest.raises(ValueError, match="holds 1 decisions that teaming simulate did not make"):
        simulate(srv.url, list(reviewers.values()), admin_token, srv.db, [7000, 7001], progress=False)
    with srv.admin() as admin:
        assert admin.stats().decisions == 1  # nothing was classified or answered


def test_simulated_people_answer_with_their_own_skill_and_pace():
    replay = cifar_replay()
    votes = vote_people(replay, 3)
    assert votes.seconds == [VOTE_SECONDS] * 3
    rng = np.random.default_rng(0)
    items = np.arange(7000, 7400)
    right = np.mean([votes.answer(0, int(i), rng) == replay.truth[i] for i in items])
    assert right > 0.9  # CIFAR-10H's annotators are right about 95% of the time
    shared = shared_data_dir()
    if shared is None:
        pytest.skip("../shared/data (CIFAR-10N's workers) is absent")
    people = cifar10n_people(replay, 4, shared)
    assert people.names[3] == people.names[0] and len(set(people.names)) == 3  # three workers, in turn
    rights = [np.mean([people.answer(k, int(i), rng) == replay.truth[i] for i in items]) for k in range(3)]
    assert rights[0] > rights[2] and all(0.6 < r < right for r in rights)  # ranked best first, below CIFAR-10H


def test_wait_percentiles_come_with_a_bootstrap_interval():
    waits = np.random.default_rng(0).exponential(100.0, 400)
    value, low, high = wait_interval(waits, 50)
    assert value == pytest.approx(np.median(waits)) and low < value < high
    assert abs(value - 100 * np.log(2)) < high - low
    assert wait_interval(np.array([5.0]), 95) == (5.0, 5.0, 5.0)
