"""The certified rule (Learn then Test): what it certifies holds on fresh items."""

from __future__ import annotations

import numpy as np
import pytest

from teaming._validation import PolicyError
from teaming.policy import CertifiedPolicy


def test_certified_policy_holds_on_fresh_items(probs_with_confidence):
    rng = np.random.default_rng(0)

    def draw(n):
        conf = rng.uniform(0.3, 1.0, n)
        y = rng.integers(0, 10, n)
        pred = np.where(rng.uniform(size=n) < conf, y, (y + 1) % 10)  # calibrated: P(right) = conf
        return probs_with_confidence(conf, pred), y

    probs, y = draw(5000)
    pol = CertifiedPolicy(target_accuracy=0.95, delta=0.05).fit(probs, y)
    fresh, y2 = draw(50000)
    keep = ~pol.decide(fresh)
    assert (fresh[keep].argmax(1) == y2[keep]).mean() >= 0.95
    assert 0.85 < pol.threshold_ < 1.0
    r = pol.report_
    assert r.kind == "certified" and r.accepted_accuracy >= 0.95 and r.human_accuracy is None
    assert r.candidate(pol.threshold_).eligible and r.candidate(pol.threshold_).accepted > 0
    with pytest.raises(PolicyError, match="certifies"):
        CertifiedPolicy(target_accuracy=0.999, delta=0.01).fit(probs[:300], y[:300])


def test_human_answers_only_feed_the_team_figures(toy_team):
    probs, y, human = toy_team(50)
    alone = CertifiedPolicy(target_accuracy=0.9, min_accepted=10).fit(probs, y)
    with_people = CertifiedPolicy(target_accuracy=0.9, min_accepted=10).fit(probs, y, human)
    assert alone.threshold_ == with_people.threshold_
    assert with_people.report_.team_accuracy == 1.0 and with_people.report_.human_accuracy == 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(target_accuracy=1.0), "target_accuracy"), (dict(delta=0.0), "delta"), (dict(score="x"), "unknown score")],
)
def test_bad_parameters_raise(toy_team, kwargs, message):
    probs, y, _ = toy_team(5)
    with pytest.raises(PolicyError, match=message):
        CertifiedPolicy(**kwargs).fit(probs, y)
