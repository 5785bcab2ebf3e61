"""The threshold rule (Liu et al.): known thresholds, the t-test choice, constraints, reviewers, resamples,
per-class thresholds, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest

from teaming._validation import PolicyError, TeamingError
from teaming.confidence import confidence
from teaming.labels import vote
from teaming.policy import ThresholdPolicy


def test_fit_picks_known_threshold(toy_team):
    probs, y, human = toy_team(100)
    pol = ThresholdPolicy(candidates=np.round(np.arange(0.1, 1.0, 0.1), 2)).fit(probs, y, human)
    r = pol.report_
    # Deferring below 0.6 catches every machine error while the human is always right: team 100%.
    assert r.best_threshold == pytest.approx(0.6) and pol.threshold_ == pytest.approx(0.6)
    assert r.team_accuracy == 1.0 and r.deferral_rate == pytest.approx(5 / 9)
    assert r.machine_accuracy == pytest.approx(4 / 9) and r.human_accuracy == 1.0
    assert r.candidate(0.5).p < 0.05 and not r.candidate(0.5).eligible


def test_cheaper_threshold_not_significantly_worse_is_chosen(toy_team):
    # The human also errs at confidence 0.55, so deferring it gains nothing: 0.5 ties 0.6 in every fold.
    probs, y, human = toy_team(100, human_wrong_at=(0.55,))
    pol = ThresholdPolicy(candidates=np.round(np.arange(0.1, 1.0, 0.1), 2)).fit(probs, y, human)
    assert pol.report_.candidate(0.5).p == 1.0
    assert pol.threshold_ == pytest.approx(0.5)
    assert pol.report_.deferral_rate == pytest.approx(4 / 9)


def test_decide_defers_below_threshold(toy_team):
    probs, y, human = toy_team(10)
    pol = ThresholdPolicy(candidates=[0.3, 0.6]).fit(probs, y, human)
    np.testing.assert_array_equal(pol.decide(probs), confidence(probs) < 0.6)


def test_constraints(toy_team):
    probs, y, human = toy_team(100)
    grid = np.round(np.arange(0.1, 1.0, 0.1), 2)
    capped = ThresholdPolicy(candidates=grid, max_deferral=0.35).fit(probs, y, human)
    assert capped.report_.deferral_rate == pytest.approx(3 / 9)
    assert capped.threshold_ == pytest.approx(0.4)  # the best the cap allows
    floor = ThresholdPolicy(candidates=grid, alpha=0.01, min_accuracy=0.99).fit(probs, y, human)
    assert floor.report_.team_accuracy >= 0.99
    with pytest.raises(PolicyError, match="reaches team accuracy"):
        ThresholdPolicy(candidates=grid, max_deferral=0.35, min_accuracy=0.95).fit(probs, y, human)
    with pytest.raises(PolicyError, match="defers at most"):
        ThresholdPolicy(candidates=[0.5, 0.9], max_deferral=0.2).fit(probs, y, human)


def test_human_majority_of_reviewers(toy_team):
    answers = np.array([[1, 1, 2], [0, 2, 2], [3, 4, 5], [7, 6, 6]])
    np.testing.assert_array_equal(vote(answers, 10), [1, 2, 3, 6])  # ties: the earliest reviewer's
    probs, y, human = toy_team(50)
    three = np.stack([human, human, (human + 1) % 10], 1)  # two of three reviewers agree with `human`
    a = ThresholdPolicy().fit(probs, y, three)
    b = ThresholdPolicy().fit(probs, y, human)
    assert a.threshold_ == b.threshold_ and a.report_.human_accuracy == b.report_.human_accuracy


def test_per_class_thresholds():
    rng = np.random.default_rng(0)
    n = 4000
    pred = rng.integers(0, 2, n)
    conf = rng.uniform(0.5, 1.0, n)
    y = np.where(conf < np.where(pred == 0, 0.8, 0.6), 1 - pred, pred)  # class 0 is trustworthy only above 0.8
    probs = np.zeros((n, 2))
    probs[np.arange(n), pred] = conf
    probs[np.arange(n), 1 - pred] = 1 - conf
    pol = ThresholdPolicy(per_class=True).fit(probs, y, y, classes=["a", "b"])
    assert pol.class_thresholds_[0] == pytest.approx(0.8, abs=0.011)
    assert pol.class_thresholds_[1] == pytest.approx(0.6, abs=0.011)
    assert pol.report_.class_thresholds == {"a": pol.class_thresholds_[0], "b": pol.class_thresholds_[1]}
    glob = ThresholdPolicy().fit(probs, y, y)
    assert pol.report_.deferral_rate < glob.report_.deferral_rate  # same accuracy, fewer items deferred
    assert pol.report_.team_accuracy == 1.0


def test_models_and_bootstrap_resamples(toy_team, probs_with_confidence):
    probs, y, human = toy_team(50)
    rng = np.random.default_rng(1)
    several = np.stack([probs, probs_with_confidence(confidence(probs), probs.argmax(1) * 0 + y)])
    pol = ThresholdPolicy().fit(several, y, human)
    assert pol.report_.resample == "models" and pol.report_.n_resamples == 2
    boot = ThresholdPolicy(resample="bootstrap", n_resamples=30, random_state=int(rng.integers(100))).fit(
        probs, y, human
    )
    c = boot.report_.candidate(boot.threshold_)
    assert c.ci_low <= c.mean_accuracy <= c.ci_high
    with pytest.raises(PolicyError, match="K x N x C"):
        ThresholdPolicy(resample="models").fit(probs, y, human)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p, y, h: (p * 0.5, y, h), "sum to 1"),
        (lambda p, y, h: (p, y, h[:-1]), "one entry per item"),
        (lambda p, y, h: (np.where(p == p.max(), np.nan, p), y, h), "NaN"),
        (lambda p, y, h: (p, y, np.where(h == 3, 10, h)), "outside the classes"),
        (lambda p, y, h: (p, y.astype(float) + 0.5, h), "integer class ids"),
        (lambda p, y, h: (-p, y, h), r"\[0, 1\]"),
        (lambda p, y, h: (p[:0], y[:0], h[:0]), "N >= 1"),
        (lambda p, y, h: (p, y, None), "pass the human answers"),
    ],
)
def test_bad_input_raises(toy_team, mutate, message):
    probs, y, human = toy_team(5)
    with pytest.raises(TeamingError, match=message):
        ThresholdPolicy().fit(*mutate(probs, y, human))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=1.5), "alpha"),
        (dict(max_deferral=2.0), "max_deferral"),
        (dict(min_accuracy=-0.1), "min_accuracy"),
        (dict(n_resamples=1), "n_resamples"),
        (dict(score="vibes"), "unknown score"),
        (dict(resample="jackknife"), "unknown resample"),
        (dict(candidates=[0.5]), "candidates"),
    ],
)
def test_bad_parameters_raise(toy_team, kwargs, message):
    probs, y, human = toy_team(5)
    with pytest.raises(PolicyError, match=message):
        ThresholdPolicy(**kwargs).fit(probs, y, human)


def test_decide_needs_a_fitted_policy_and_matching_probs(toy_team):
    probs, y, human = toy_team(5)
    with pytest.raises(PolicyError, match="not fitted"):
        ThresholdPolicy().decide(probs)
    pol = ThresholdPolicy().fit(probs, y, human)
    with pytest.raises(TeamingError, match="sum to 1"):
        pol.decide(probs[:, :5])


def test_an_estimator_like_scikit_learns(toy_team):
    from sklearn.base import clone

    pol = ThresholdPolicy(alpha=0.1, max_deferral=0.5)
    assert clone(pol).get_params() == pol.get_params() and "alpha=0.1" in repr(pol)
    probs, y, human = toy_team(20)
    assert pol.fit(probs, y, human) is pol and not hasattr(clone(pol), "threshold_")
