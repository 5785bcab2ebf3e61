"""Deferral policies: the t-test rule on hand-worked tables, constraints, certification, JSON, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from teaming.policy import (
    CertifiedPolicy,
    PolicyError,
    ThresholdPolicy,
    confidence,
    human_answers,
    load_policy,
    select_threshold,
)


def probs_with_confidence(conf: np.ndarray, pred: np.ndarray, c: int = 10) -> np.ndarray:
    """Probabilities whose top class is `pred` with probability `conf`, the rest spread evenly."""
    p = np.repeat(((1 - conf) / (c - 1))[:, None], c, 1)
    p[np.arange(len(conf)), pred] = conf
    return p


def pattern(copies: int, human_wrong_at: tuple[float, ...] = ()):
    """Nine confidences 0.15..0.95 repeated; the machine is wrong below 0.6, the human only where told."""
    conf = np.tile(np.arange(0.15, 1.0, 0.1), copies)
    y = np.tile(np.arange(9), copies)
    pred = np.where(conf < 0.6, (y + 1) % 10, y)
    wrong_h = np.isin(np.round(conf, 2), np.round(human_wrong_at, 2))
    human = np.where(wrong_h, (y + 2) % 10, y)
    return probs_with_confidence(conf, pred), human, y


def test_select_threshold_hand_worked():
    # Three thresholds, four paired resamples. 0.9 is best; 0.7 differs by [.01, 0, .01, 0]:
    # mean .005, sd .005774, t = .005 / (.005774 / 2) = 1.732, p = 0.1817 (df 3): not significantly worse.
    acc = np.array([[0.80, 0.89, 0.90], [0.82, 0.92, 0.92], [0.81, 0.90, 0.91], [0.83, 0.93, 0.93]])
    deferral = np.array([0.1, 0.3, 0.6])
    grid = np.array([0.5, 0.7, 0.9])
    chosen, best, cands = select_threshold(acc, deferral, grid, 0.05, "folds")
    assert best == 2 and chosen == 1
    assert cands[1].t == pytest.approx(1.7320508, rel=1e-5)
    assert cands[1].p == pytest.approx(0.18169, abs=1e-4)
    assert cands[0].p == 0.0 and not cands[0].eligible  # a constant 0.10 loss is significant
    assert cands[2].p == 1.0 and cands[2].eligible
    # At alpha 0.2 the same 0.005 loss is significant, so the rule keeps the best threshold.
    chosen, _, _ = select_threshold(acc, deferral, grid, 0.2, "folds")
    assert chosen == 2


def test_fit_picks_known_threshold():
    probs, human, y = pattern(100)
    pol = ThresholdPolicy(candidates=np.round(np.arange(0.1, 1.0, 0.1), 2)).fit(probs, human, y)
    r = pol.report_
    # Deferring below 0.6 catches every machine error while the human is always right: team 100%.
    assert r.best_threshold == pytest.approx(0.6) and pol.threshold_ == pytest.approx(0.6)
    assert r.team_accuracy == 1.0 and r.deferral_rate == pytest.approx(5 / 9)
    assert r.machine_accuracy == pytest.approx(4 / 9) and r.human_accuracy == 1.0
    assert r.candidate(0.5).p < 0.05 and not r.candidate(0.5).eligible


def test_cheaper_threshold_not_significantly_worse_is_chosen():
    # The human also errs at confidence 0.55, so deferring it gains nothing: 0.5 ties 0.6 in every fold.
    probs, human, y = pattern(100, human_wrong_at=(0.55,))
    pol = ThresholdPolicy(candidates=np.round(np.arange(0.1, 1.0, 0.1), 2)).fit(probs, human, y)
    assert pol.report_.candidate(0.5).p == 1.0
    assert pol.threshold_ == pytest.approx(0.5)
    assert pol.report_.deferral_rate == pytest.approx(4 / 9)


def test_decide_defers_below_threshold():
    probs, human, y = pattern(10)
    pol = ThresholdPolicy(candidates=[0.3, 0.6]).fit(probs, human, y)
    np.testing.assert_array_equal(pol.decide(probs), confidence(probs) < 0.6)


def test_constraints():
    probs, human, y = pattern(100)
    grid = np.round(np.arange(0.1, 1.0, 0.1), 2)
    capped = ThresholdPolicy(candidates=grid, max_deferral=0.35).fit(probs, human, y)
    assert capped.report_.deferral_rate == pytest.approx(3 / 9)
    assert capped.threshold_ == pytest.approx(0.4)  # the best the cap allows
    floor = ThresholdPolicy(candidates=grid, alpha=0.01, min_accuracy=0.99).fit(probs, human, y)
    assert floor.report_.team_accuracy >= 0.99
    with pytest.raises(PolicyError, match="reaches team accuracy"):
        ThresholdPolicy(candidates=grid, max_deferral=0.35, min_accuracy=0.95).fit(probs, human, y)
    with pytest.raises(PolicyError, match="defers at most"):
        ThresholdPolicy(candidates=[0.5, 0.9], max_deferral=0.2).fit(probs, human, y)


def test_human_majority_of_reviewers():
    answers = np.array([[1, 1, 2], [0, 2, 2], [3, 4, 5], [7, 6, 6]])
    np.testing.assert_array_equal(human_answers(answers, 10), [1, 2, 3, 6])
    probs, human, y = pattern(50)
    three = np.stack([human, human, (human + 1) % 10], 1)  # two of three reviewers agree with `human`
    a = ThresholdPolicy().fit(probs, three, y)
    b = ThresholdPolicy().fit(probs, human, y)
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


def test_models_and_bootstrap_resamples():
    probs, human, y = pattern(50)
    rng = np.random.default_rng(1)
    several = np.stack([probs, probs_with_confidence(confidence(probs), probs.argmax(1) * 0 + y)])
    pol = ThresholdPolicy().fit(several, human, y)
    assert pol.report_.resample == "models" and pol.report_.n_resamples == 2
    boot = ThresholdPolicy(resample="bootstrap", n_resamples=30, random_state=int(rng.integers(100))).fit(
        probs, human, y
    )
    c = boot.report_.candidate(boot.threshold_)
    assert c.ci_low <= c.mean_accuracy <= c.ci_high
    with pytest.raises(PolicyError, match="K x N x C"):
        ThresholdPolicy(resample="models").fit(probs, human, y)


def test_json_round_trip(tmp_path):
    probs, human, y = pattern(30)
    pol = ThresholdPolicy(score="margin", per_class=True, min_class_items=10).fit(probs, human, y)
    pol.model_ = {"name": "toy"}
    path = pol.save(tmp_path / "p.json")
    back = load_policy(path)
    assert isinstance(back, ThresholdPolicy)
    assert back.version == pol.version and back.version.startswith("threshold-")
    assert back.report_ == pol.report_ and back.params() == pol.params() and back.model_ == {"name": "toy"}
    np.testing.assert_array_equal(back.decide(probs), pol.decide(probs))
    cert = CertifiedPolicy(0.9, min_accepted=10).fit(probs, y, human)
    back = load_policy(cert.save(tmp_path / "c.json"))
    assert isinstance(back, CertifiedPolicy) and back.version == cert.version
    np.testing.assert_array_equal(back.decide(probs), cert.decide(probs))
    edited = json.loads(path.read_text())
    edited["threshold"] = 0.1
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(PolicyError, match="version"):
        load_policy(tmp_path / "edited.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        load_policy(tmp_path / "junk.json")
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy(tmp_path / "missing.json")


def test_certified_policy_holds_on_fresh_items():
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
    with pytest.raises(PolicyError, match="certifies"):
        CertifiedPolicy(target_accuracy=0.999, delta=0.01).fit(probs[:300], y[:300])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p, h, y: (p * 0.5, h, y), "sum to 1"),
        (lambda p, h, y: (p, h[:-1], y), "one entry per item"),
        (lambda p, h, y: (np.where(p == p.max(), np.nan, p), h, y), "NaN"),
        (lambda p, h, y: (p, np.where(h == 3, 10, h), y), "outside the classes"),
        (lambda p, h, y: (p, h, y.astype(float) + 0.5), "integer class ids"),
        (lambda p, h, y: (-p, h, y), r"\[0, 1\]"),
        (lambda p, h, y: (p[:0], h[:0], y[:0]), "N >= 1"),
    ],
)
def test_bad_input_raises(mutate, message):
    probs, human, y = pattern(5)
    with pytest.raises(PolicyError, match=message):
        ThresholdPolicy().fit(*mutate(probs, human, y))


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
def test_bad_parameters_raise(kwargs, message):
    probs, human, y = pattern(5)
    with pytest.raises(PolicyError, match=message):
        ThresholdPolicy(**kwargs).fit(probs, human, y)


def test_decide_needs_a_fitted_policy_and_matching_probs():
    probs, human, y = pattern(5)
    with pytest.raises(PolicyError, match="not fitted"):
        ThresholdPolicy().decide(probs)
    pol = ThresholdPolicy().fit(probs, human, y)
    with pytest.raises(PolicyError, match="sum to 1"):
        pol.decide(probs[:, :5])
