"""Simulated reviewers who differ: real CIFAR-10N workers' confusions and speeds, moved by each item's CIFAR-10H
difficulty."""

from __future__ import annotations

import numpy as np
import pytest

from teaming.crowd import SimReviewer, alike, answer_probs, cifar10n_workers, difficulty, spread


def reviewer(acc: float = 0.8, c: int = 3) -> SimReviewer:
    m = np.full((c, c), (1 - acc) / (c - 1))
    np.fill_diagonal(m, acc)
    return SimReviewer("r", m, 2.0)


def test_an_average_item_is_answered_with_the_reviewers_own_accuracy():
    votes = np.array([8, 2, 0])
    p = answer_probs(reviewer(0.8), 0, votes, easier=0.0)
    assert p.sum() == pytest.approx(1.0) and p[0] == pytest.approx(0.8)
    assert p[1] > p[2]  # the wrong answers lean to what the item's annotators said wrongly
    assert answer_probs(reviewer(0.8), 0, votes, 2.0)[0] > 0.95 > 0.5 > answer_probs(reviewer(0.8), 0, votes, -2.0)[0]
    assert np.allclose(alike(votes), [0.8, 0.2, 0.0])  # today's reviewers: a draw from the votes


def test_difficulty_is_measured_against_the_items_class():
    counts = np.array([[10, 0], [5, 5], [0, 10], [2, 8]])
    y = np.array([0, 0, 1, 1])
    d = difficulty(counts, y)
    assert d[0] > 0 > d[1] and d[2] > 0 > d[3]
    assert d[y == 0].mean() == pytest.approx(0) and d[y == 1].mean() == pytest.approx(0)


def test_cifar10n_workers_differ_in_skill_and_speed(shared_dir):
    workers = cifar10n_workers(shared_dir / "cifar10n_labels.npz", shared_dir / "cifar10n_side_info.csv")
    assert len(workers) >= 50
    assert all(np.allclose(w.confusion.sum(1), 1) and w.seconds > 0 for w in workers)
    three = spread(workers)
    accuracy = [w.accuracy for w in three]
    assert accuracy == sorted(accuracy, reverse=True) and accuracy[0] - accuracy[-1] > 0.03
    assert 0.5 < accuracy[-1] and accuracy[0] < 0.95  # neither a spammer nor a saint
