"""The monitors on synthetic streams whose answer is known: no more false alarms than alpha at the boundary of
"no change", an alarm soon after a real change, and evidence that does not expire."""

import numpy as np
import pytest

from teaming.ops.monitors import agreement, bet_alarm, drift, harm, interval, waiting, wealth


def test_the_false_alarm_rate_holds_at_the_boundary_however_often_it_is_checked():
    """Checked after every outcome, over 400 streams of 2,000 outcomes whose mean sits exactly on the bound."""
    rng = np.random.default_rng(0)
    fired = sum(bet_alarm("x", rng.random(2000) < 0.9, 0.9, "below").raised for _ in range(400))
    low, high = interval(fired / 400, 400)
    assert low <= 0.05  # the nominal level lies within (or above) the measured rate's interval


def test_the_wealth_is_a_fair_bet_under_no_change_and_grows_under_change():
    rng = np.random.default_rng(1)
    same = np.mean([wealth(rng.random(500) < 0.2, 0.2, "above")[-1] for _ in range(300)])
    assert same < 1.5  # a supermartingale from 1: on average it does not grow
    assert wealth(rng.random(500) < 0.35, 0.2, "above")[-1] > 1e3


def test_harm_fires_when_auto_answers_get_worse_and_not_when_they_hold():
    rng = np.random.default_rng(2)
    held = harm(rng.random(600) < 0.97, accepted_accuracy=0.97, fitted_on=1200)
    assert not held.raised and "auto-answers hold" in held.says
    worse = harm(rng.random(600) < 0.85, accepted_accuracy=0.97, fitted_on=1200)
    assert worse.raised and worse.at < 300 and worse.side == "below"
    assert worse.bound == pytest.approx(interval(0.97, 1200)[0] - 0.02)
    assert "below the 93.9% bound (fitted 97.0%, less its 95% interval and 2 points;" in worse.says


def test_the_evidence_does_not_expire():
    bad_then_good = np.r_[np.zeros(40), np.ones(2000)]  # forty wrong answers in a row, then all right
    a = harm(bad_then_good, accepted_accuracy=0.97, fitted_on=1000)
    assert a.raised and a.at <= 40 and a.evidence >= a.needed and a.estimate > 0.95


def test_drift_fires_either_way_and_names_the_side():
    rng = np.random.default_rng(3)
    assert not drift("deferral_rate", rng.random(3000) < 0.2, 0.2, 1500).raised
    up = drift("deferral_rate", rng.random(3000) < 0.35, 0.2, 1500)
    assert up.raised and up.side == "above" and up.says.startswith("deferral rate is")
    down = drift("deferral_rate", rng.random(3000) < 0.05, 0.2, 1500)
    assert down.raised and down.side == "below"
    one_way = drift("unfamiliar_rate", rng.random(3000) < 0.0, 0.05, 1500, both_ways=False)
    assert not one_way.raised  # fewer unfamiliar items than fitted is no warning


def test_staffing_alarms():
    assert waiting(301, 300).raised and not waiting(299, 300).raised and not waiting(None, 300).raised
    rng = np.random.default_rng(4)
    assert agreement(rng.random(800) < 0.6, 0.8).raised
    assert not agreement(rng.random(800) < 0.9, 0.8).raised
