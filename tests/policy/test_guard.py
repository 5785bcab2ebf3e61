"""Every policy defers items beyond its fitted unfamiliarity limit, with the reason "unfamiliar"."""

from __future__ import annotations

import json

import numpy as np
import pytest

from teaming.policy import CertifiedPolicy, PolicyError, ThresholdPolicy, load_policy, policy_from_dict, save_policy
from teaming.policy.base import UNFAMILIAR_QUANTILE


@pytest.fixture
def team(toy_team):
    probs, y, human = toy_team(20)
    u = np.random.default_rng(0).gamma(2.0, 10.0, len(y))
    return probs, y, human, u


@pytest.mark.parametrize("make", [lambda: ThresholdPolicy(), lambda: CertifiedPolicy(target_accuracy=0.8)])
def test_limit_is_the_fitted_quantile_and_defers_beyond_it(team, make):
    probs, y, human, u = team
    policy = make().fit(probs, y, human, unfamiliarity=u)
    assert policy.unfamiliar_limit_ == pytest.approx(np.quantile(u, UNFAMILIAR_QUANTILE))
    reasons = policy.reasons(probs, unfamiliarity=u)
    assert set(reasons[u > policy.unfamiliar_limit_]) == {"unfamiliar"}
    assert set(reasons) <= {"", "unsure", "unfamiliar"}
    assert (policy.decide(probs, unfamiliarity=u) == (reasons != "")).all()
    unsure = policy.decide(probs)  # without scores only confidence counts
    assert (unsure == (policy.reasons(probs) == "unsure")).all()
    assert policy.report_.unfamiliar_rate == pytest.approx(((u > policy.unfamiliar_limit_) & ~unsure).mean())
    assert policy.report_.deferral_rate == pytest.approx((unsure | (u > policy.unfamiliar_limit_)).mean())


def test_without_scores_a_policy_has_no_guard(team):
    probs, y, human, u = team
    policy = ThresholdPolicy().fit(probs, y, human)
    assert policy.unfamiliar_limit_ is None and policy.report_.unfamiliar_limit is None
    assert (policy.decide(probs, unfamiliarity=u) == policy.decide(probs)).all()


def test_limit_survives_json_and_old_files_keep_their_version(team, tmp_path):
    probs, y, human, u = team
    guarded = ThresholdPolicy().fit(probs, y, human, unfamiliarity=u)
    loaded = load_policy(save_policy(guarded, tmp_path / "p.json"))
    assert loaded.unfamiliar_limit_ == guarded.unfamiliar_limit_ and loaded.version == guarded.version
    assert (loaded.reasons(probs, unfamiliarity=u) == guarded.reasons(probs, unfamiliarity=u)).all()
    plain = ThresholdPolicy().fit(probs, y, human).to_dict()
    assert "unfamiliar_limit" not in plain and policy_from_dict(plain).version == plain["version"]
    edited = json.loads((tmp_path / "p.json").read_text())
    edited["unfamiliar_limit"] = 1e9
    with pytest.raises(PolicyError, match="does not match its version"):
        policy_from_dict(edited)


@pytest.mark.parametrize("bad", ["short", "nan"])
def test_bad_scores_are_refused(team, bad):
    probs, y, human, u = team
    scores = u[:3] if bad == "short" else np.where(np.arange(len(u)) == 5, np.nan, u)
    with pytest.raises(PolicyError, match="unfamiliarity must be"):
        ThresholdPolicy().fit(probs, y, human, unfamiliarity=scores)


def test_quantile_is_checked():
    with pytest.raises(PolicyError, match="unfamiliar_quantile"):
        ThresholdPolicy(unfamiliar_quantile=0.1).check_params()
