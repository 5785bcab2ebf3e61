"""Learned deferral scores: they find what they are told to find, and refuse malformed inputs."""

from __future__ import annotations

import numpy as np
import pytest

from teaming.policy import PolicyError
from teaming.policy.l2d import L2D
from teaming.policy.learned import Rejector


def _world(n: int = 1200, seed: int = 0):
    """Items in two regions by feature 0: people are right in region 1 only, the model right 70% everywhere with
    the same confidence, so only the features can tell where to defer."""
    rng = np.random.default_rng(seed)
    region = rng.integers(0, 2, n)
    feats = np.column_stack([region + 0.1 * rng.normal(size=n), rng.normal(size=(n, 3))])
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.7, y, (y + 1) % 3)
    probs = np.full((n, 3), 0.15)
    probs[np.arange(n), pred] = 0.7
    hacc = np.where(region == 1, 0.98, 0.3)
    return probs, feats, y, hacc, region


@pytest.mark.parametrize("make", [Rejector, L2D])
def test_defers_where_people_are_right(make):
    probs, feats, y, hacc, region = _world()
    model = make().fit(probs[:800], feats[:800], y[:800], hacc[:800])
    score = model.defer_score(probs[800:], feats[800:])
    top = np.argsort(-score)[:100]
    assert region[800:][top].mean() > 0.9


def test_l2d_keeps_the_models_answers_when_features_say_nothing_about_classes():
    probs, feats, y, hacc, _ = _world()
    model = L2D().fit(probs[:800], feats[:800], y[:800], hacc[:800])
    assert (model.predict(probs[800:], feats[800:]) == probs[800:].argmax(1)).mean() > 0.95


@pytest.mark.parametrize("make", [Rejector, L2D])
def test_bad_inputs_are_refused(make):
    probs, feats, y, hacc, _ = _world(50)
    with pytest.raises(PolicyError, match="features must be"):
        make().fit(probs, feats[:10], y, hacc)
    with pytest.raises(PolicyError, match="human_accuracy"):
        make().fit(probs, feats, y, hacc * 3)


def test_rejector_policy_fits_saves_and_refits_its_threshold(tmp_path):
    from teaming.policy import RejectorPolicy, load_policy, save_policy

    probs, feats, y, hacc, region = _world(1500)
    human = np.where(np.random.default_rng(1).random(len(y)) < hacc, y, (y + 2) % 3)
    policy = RejectorPolicy(n_resamples=5).fit(probs, y, human, features=feats, human_accuracy=hacc)
    assert policy.report_.kind == "rejector" and policy.report_.score == "rejector"
    defer = policy.decide(probs, features=feats)
    assert region[defer].mean() > 0.9 and policy.report_.team_accuracy > policy.report_.machine_accuracy
    with pytest.raises(PolicyError, match="features"):
        policy.decide(probs)
    loaded = load_policy(save_policy(policy, tmp_path / "r.json"))
    assert loaded.version == policy.version and (loaded.decide(probs, features=feats) == defer).all()
    again = loaded.refit(probs, y, human, scores=loaded.confidence(probs, feats))
    assert again.rejector_ is loaded.rejector_ and abs(again.threshold_ - policy.threshold_) < 0.1
    with pytest.raises(PolicyError, match="features"):
        RejectorPolicy().fit(probs, y, human)
