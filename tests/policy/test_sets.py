"""Conformal prediction sets: the stated coverage holds on items the sets were not fitted on, where they are shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from teaming.policy import PolicyError, ThresholdPolicy, load_policy, policy_from_dict, save_policy
from teaming.policy.sets import MIN_ITEMS, PredictionSets, fit_prediction_sets

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "cifar10h-default" / "policy.json"


def _calibrated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a perfectly calibrated model, with labels drawn from them."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(10, 0.3), n)
    return probs, np.array([rng.choice(10, p=p) for p in probs])


def _held(sets: PredictionSets, probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean([label in s for label, s in zip(y, sets.members(probs))]))


@pytest.mark.parametrize("coverage", [0.8, 0.95])
def test_coverage_holds_on_fresh_items(coverage):
    sets = fit_prediction_sets(*_calibrated(4000, 0), coverage)
    assert sets.on == "all" and sets.n_items == 4000
    assert abs(_held(sets, *_calibrated(20000, 1)) - coverage) < 0.015


def test_sets_are_ranked_never_empty_and_grow_with_coverage():
    probs, y = _calibrated(2000, 2)
    small, large = fit_prediction_sets(probs, y, 0.5), fit_prediction_sets(probs, y, 0.95)
    for row, a, b in zip(probs[:200], small.members(probs[:200]), large.members(probs[:200])):
        assert a and a[0] == row.argmax() and set(a) <= set(b)
        assert list(row[b]) == sorted(row[b], reverse=True)
    assert len(fit_prediction_sets(probs[:5], y[:5], 0.9).members(probs[:1])[0]) == 10  # too few: every class


def test_calibrated_on_deferred_items_when_there_are_enough():
    probs, y = _calibrated(1000, 3)
    unsure = probs.max(1) < 0.6
    assert fit_prediction_sets(probs, y, 0.9, unsure).on == "deferred"
    few = np.zeros(len(y), bool)
    few[: MIN_ITEMS - 1] = True
    assert fit_prediction_sets(probs, y, 0.9, few).on == "all"
    with pytest.raises(PolicyError, match="coverage"):
        fit_prediction_sets(probs, y, 1.0)


def test_the_shipped_policy_cross_fits_to_its_coverage_on_deferred_items(shipped_probs):
    """Fitted on 7000..7749's items deferred as unsure, the shipped policy's sets hold the label of 7750..8499's
    about as often as stated."""
    shipped = load_policy(SHIPPED)
    assert shipped.prediction_sets_ is not None and shipped.prediction_sets_.coverage == 0.9
    from teaming.datasets import load_default_test

    labels = load_default_test().labels
    fit, held = np.arange(7000, 7750), np.arange(7750, 8500)
    shipped.fit_sets(shipped_probs(fit), labels[fit], 0.9)
    deferred = shipped.reasons(shipped_probs(held)) == "unsure"  # where sets are shown
    covered = _held(shipped.prediction_sets_, shipped_probs(held)[deferred], labels[held][deferred])
    assert deferred.sum() > 100 and covered > 0.84


def test_sets_travel_with_the_policy_file_and_survive_a_refit(toy_team, tmp_path):
    probs, y, human = toy_team(20)
    policy = ThresholdPolicy().fit(probs, y, human).fit_sets(probs, y, 0.9)
    back = load_policy(save_policy(policy, tmp_path / "p.json"))
    assert back.prediction_sets_ == policy.prediction_sets_ and back.version == policy.version
    assert back.refit(probs, y, human, alpha=0.2).prediction_sets_ == policy.prediction_sets_
    plain = ThresholdPolicy().fit(probs, y, human).to_dict()
    assert "prediction_sets" not in plain and policy_from_dict(plain).prediction_sets_ is None
