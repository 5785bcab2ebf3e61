"""The statistics under the rules: Liu et al.'s selection on a hand-worked table, resamples, Learn then Test."""

from __future__ import annotations

import numpy as np
import pytest

from teaming._validation import PolicyError
from teaming.policy.stats import certify_sequence, resample_weights, select_threshold


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


def test_resamples_are_disjoint_folds_or_bootstrap_weights():
    rng = np.random.default_rng(0)
    folds = resample_weights(100, "folds", 10, rng)
    assert folds.shape == (10, 100) and np.allclose(folds.sum(1), 1)
    assert ((folds > 0).sum(0) == 1).all()  # every item in exactly one fold
    boot = resample_weights(100, "bootstrap", 5, rng)
    assert boot.shape == (5, 100) and np.allclose(boot.sum(1), 1)
    with pytest.raises(PolicyError, match="20 folds need at least 20 items"):
        resample_weights(10, "folds", 20, rng)


def test_certify_sequence_stops_at_the_first_failure():
    # 100 items auto-answered at every threshold; errors 0, 20, 1, 0 from the lowest threshold up.
    accepted = np.array([100, 100, 100, 100])
    errors = np.array([0, 20, 1, 0])
    pvals, certified = certify_sequence(accepted, errors, 0.9, 0.05, 50)
    assert certified.tolist() == [False, False, True, True]  # 0 is never tested: the sequence stopped at 1
    assert pvals[1] > 0.05 and pvals[0] < 0.05
    with pytest.raises(PolicyError, match="auto-answers 200 items"):
        certify_sequence(accepted, errors, 0.9, 0.05, 200)


def test_certify_sequence_starts_where_a_pass_is_possible():
    """60 flawless items cannot certify 98% at delta 0.05 (0.98^60 = 0.30); starting there would end the
    sequence before the 400- and 1000-item thresholds below it were tested."""
    accepted, errors = np.array([1000, 400, 60]), np.array([12, 2, 0])
    pvals, certified = certify_sequence(accepted, errors, 0.98, 0.05, 50)
    assert pvals[2] > 0.05 and certified.tolist() == [True, True, False]
