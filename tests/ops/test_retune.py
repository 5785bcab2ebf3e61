"""Retuning from the log: audited items refit the served model's policy; it is activated only when it differs
significantly from the active one; the estimates come with intervals next to the live figures."""

from __future__ import annotations

import numpy as np
import pytest

from teaming._validation import InputError, PolicyError
from teaming.ops.log import NewDecision
from teaming.ops.retune import MIN_AUDITED, Estimate, retune, significant_change
from teaming.ops.store import Store
from teaming.policy import RejectorPolicy, ThresholdPolicy, load_policy
from tests.support.logs import MODEL, audited_log


def test_retune_refits_estimates_and_activates_a_significant_change(db_url, tmp_path, toy_team):
    probs, y, human = toy_team(10)  # 90 items; the machine is wrong below 0.6, people always right
    grid = [0.3, 0.65, 0.9]
    active = ThresholdPolicy(candidates=grid).fit(probs, y, (y + 2) % 10)  # fitted where people were wrong
    assert active.threshold_ == pytest.approx(0.3)
    audited_log(db_url, probs, np.stack([human, y, y], 1), active)
    r = retune(db_url, tmp_path / "retuned.json")
    p = r.policy
    assert p.get_params()["candidates"] == grid and r.model_version == MODEL
    assert r.audited_items == len(y) and p.model_["retuned_from"] == active.version
    assert p.threshold_ == pytest.approx(0.65)  # defers every machine error, and no more
    assert r.team_accuracy.value == 1.0 and r.deferral.value == pytest.approx(5 / 9)
    assert r.deferral.low < 5 / 9 < r.deferral.high and r.deferral.n == len(y)
    assert r.live_deferral.value == pytest.approx(2 / 9)  # every decision logged under the active policy
    assert r.active_team_accuracy.value == pytest.approx(6 / 9)
    assert r.activated and "(significant)" in r.why
    assert "the active threshold 0.3 fails the rule on these items (p=" in r.why  # why more work is needed
    store = Store(db_url)
    assert store.active_policy_version(MODEL) == p.version
    assert load_policy(tmp_path / "retuned.json").version == p.version
    store.dispose()


def test_retune_takes_only_blind_answers_as_the_person_and_measures_the_set_arm(db_url, toy_team):
    """Every deferred item's reviewer saw a set and answered wrong; the blind auditors were right."""
    probs, y, human = toy_team(10)
    active = ThresholdPolicy(candidates=[0.3, 0.65, 0.9]).fit(probs, y, human)
    shown = lambda c: "lenient" if c.kind == "defer" else "blind"  # noqa: E731
    audited_log(db_url, probs, np.stack([(y + 1) % 10, y, y], 1), active, view=shown)
    r = retune(db_url)
    deferred = active.decide(probs)
    assert r.active_team_accuracy.value == pytest.approx(np.where(deferred, True, probs.argmax(1) == y).mean())
    assert set(r.view_arms) == {"lenient"}  # no deferred item was answered blind first
    arm = r.view_arms["lenient"]
    assert (arm.items, arm.asked_right, arm.auditor_right) == (deferred.sum(), 0, deferred.sum())
    assert arm.only_auditor == deferred.sum() >= 6 and arm.p < 0.05


def test_retune_keeps_the_active_version_without_a_significant_change(db_url, toy_team):
    probs, y, human = toy_team(10)
    active = ThresholdPolicy().fit(probs, y, human)
    audited_log(db_url, probs, np.stack([human, y, y], 1), active)
    r = retune(db_url)
    assert not r.activated and "no change significant" in r.why
    store = Store(db_url)
    assert store.active_policy_version(MODEL) == active.version
    store.dispose()


def test_retune_keeps_the_guard(db_url, toy_team):
    probs, y, human = toy_team(10)
    u = np.random.default_rng(0).gamma(2.0, 1.0, len(y))
    guarded = ThresholdPolicy(candidates=[0.3, 0.65, 0.9]).fit(probs, y, (y + 2) % 10, unfamiliarity=u)
    audited_log(db_url, probs, np.stack([human, y, y], 1), guarded)
    assert retune(db_url).policy.unfamiliar_limit_ == guarded.unfamiliar_limit_


def test_retune_estimates_count_what_the_guard_defers(db_url, toy_team):
    """Items beyond the guard's limit (logged scores) stay deferred under both policies' estimates."""
    probs, y, human = toy_team(10)
    u = np.random.default_rng(0).gamma(2.0, 1.0, len(y))
    guarded = ThresholdPolicy(candidates=[0.3, 0.65, 0.9]).fit(probs, y, (y + 2) % 10, unfamiliarity=u)
    audited_log(db_url, probs, np.stack([human, y, y], 1), guarded, unfamiliarity=u)
    r = retune(db_url)
    beyond = u > guarded.unfamiliar_limit_
    assert beyond.any() and r.policy.unfamiliar_limit_ == guarded.unfamiliar_limit_
    assert r.active_deferral.value == pytest.approx(guarded.decide(probs, unfamiliarity=u).mean())
    assert r.deferral.value == pytest.approx((r.policy.decide(probs) | beyond).mean())
    assert r.deferral.value > r.policy.decide(probs).mean()


def test_retune_reads_a_missing_guard_score_as_familiar(db_url, toy_team):
    """Rows logged without a score (before the model had a guard) do not switch the guard off for the others."""
    probs, y, human = toy_team(10)
    u = np.random.default_rng(0).gamma(2.0, 1.0, len(y))
    guarded = ThresholdPolicy(candidates=[0.3, 0.65, 0.9]).fit(probs, y, (y + 2) % 10, unfamiliarity=u)
    logged = u.copy()
    logged[:9] = np.nan
    audited_log(db_url, probs, np.stack([human, y, y], 1), guarded, unfamiliarity=logged)
    r = retune(db_url)
    beyond = (u > guarded.unfamiliar_limit_) & ~np.isnan(logged)
    assert r.deferral.value == pytest.approx((r.policy.decide(probs) | beyond).mean())


def test_retune_refits_a_rejector_on_the_scores_it_logged(db_url, toy_team):
    probs, y, human = toy_team(10)
    feats = np.random.default_rng(1).normal(size=(len(y), 4))
    rejector = RejectorPolicy(n_resamples=5).fit(probs, y, (y + 2) % 10, features=feats)
    audited_log(db_url, probs, np.stack([human, y, y], 1), rejector, feats)
    r = retune(db_url)
    assert isinstance(r.policy, RejectorPolicy) and r.policy.report_.score == "rejector"
    assert r.policy.extra_body() == rejector.extra_body() and r.audited_items == len(y)
    other = RejectorPolicy(n_resamples=5, C=1.0).fit(probs, y, human, features=feats[:, ::-1])
    store = Store(db_url)
    store.add_policy(other.to_dict(), MODEL, activate=True)
    store.dispose()
    with pytest.raises(PolicyError, match="scored by the active rejector"):
        retune(db_url)  # the log's scores came from another rejector


def test_retune_needs_enough_fully_audited_items(tmp_path):
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with pytest.raises(InputError, match="no database at"):  # a typo makes no empty log
        retune(url)
    assert not (tmp_path / "log.db").exists()
    store = Store(url)
    with pytest.raises(PolicyError, match="holds no decisions yet"):
        retune(url)
    store.log.record([NewDecision("x", "auto", 0, 0.9, [0.9, 0.1], MODEL, "p", True, None, None, ("audit",) * 3)])
    store.dispose()
    with pytest.raises(
        PolicyError, match=f"only 0 fully audited items of {MODEL} in the log; retuning needs {MIN_AUDITED}"
    ):
        retune(url)


def test_estimates_and_the_change_test():
    e = Estimate.of(np.array([1] * 30 + [0] * 70))
    assert e.value == 0.3 and e.low < 0.3 < e.high and e.n == 100 and "95%" in str(e)
    same = np.array([True] * 50 + [False] * 50)
    assert not significant_change(same, same, same, same, 0.05)[0]
    better = same.copy()
    better[50:80] = True
    differs, why = significant_change(same, better, same, same, 0.05)
    assert differs and "+30/-0" in why


def test_one_careless_reviewer_who_claims_first_is_left_out_and_named(db_url, toy_team):
    """reviewer-0 claims first and always answers class 0: as "the person" of every item she would make deferral
    look useless. Retune leaves her out, names her, and keeps the honest team's policy."""
    probs, y, human = toy_team(10)
    active = ThresholdPolicy().fit(probs, y, human)
    audited_log(db_url, probs, np.stack([np.zeros_like(y), y, y], 1), active)
    r = retune(db_url)
    assert set(r.unreliable) == {"reviewer-0"}
    assert "reviewer-0 gives the same answer as another reviewer on 11% of" in r.unreliable["reviewer-0"]
    assert r.left_out == r.audited_items == len(y)  # the next reviewer stands in on every item she was asked
    assert not r.activated and r.policy.threshold_ >= active.threshold_  # deferral is not switched off


def test_less_deferral_needs_team_accuracy_kept_unless_over_capacity():
    from teaming.ops.retune import less_deferral

    same, defer = np.ones(60, bool), np.zeros(60, bool)
    defer[:12] = True  # the active policy defers 20%
    assert less_deferral(ThresholdPolicy(), same, same, defer)[0]
    lost = same.copy()
    lost[:3] = False  # 5 points worse on its own estimate: not taken up, however significant the deferral saving
    holds, said = less_deferral(ThresholdPolicy(), same, lost, defer)
    assert not holds and "less deferral is not taken up: team accuracy loss 5.0 points" in said
    holds, said = less_deferral(ThresholdPolicy(max_deferral=0.05), same, lost, defer)  # the people cannot take 20%
    assert holds and "over capacity 5.0%: taken up (team accuracy loss 5.0 points" in said
