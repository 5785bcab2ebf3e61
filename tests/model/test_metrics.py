"""Metrics and temperature scaling, worked by hand."""

import numpy as np
import pytest

from teaming.model.calibration import fit_temperature, softmax
from teaming.model.metrics import (
    accuracy,
    cross_entropy,
    ece,
    multilabel_accuracy,
    reliability,
    second_best_accuracy,
)


def test_soft_cross_entropy_by_hand():
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    human = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    expected = (-np.log(0.5) + -(0.5 * np.log(0.8) + 0.5 * np.log(0.1))) / 2
    assert cross_entropy(probs, human) == pytest.approx(expected)
    assert cross_entropy(probs, np.array([0, 1])) == pytest.approx((-np.log(0.5) - np.log(0.8)) / 2)


def test_ece_by_hand():
    # confidence 0.9 (2 items, 1 right) and 0.6 (2 items, both right)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 0, 1])
    # two bins: all four share the upper bin, mean confidence 0.75 = accuracy 0.75, so errors cancel
    r = reliability(probs, labels, bins=2)
    assert r.counts.tolist() == [0, 4]
    assert ece(probs, labels, bins=2) == pytest.approx(0.0)
    r10 = reliability(probs, labels, bins=10)
    assert r10.counts[8] == 2 and r10.counts[5] == 2
    assert ece(probs, labels, bins=10) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)


def test_second_best_accuracy_by_hand():
    probs = np.array([[0.6, 0.3, 0.1], [0.6, 0.1, 0.3], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    counts = np.array([[40, 10, 1], [40, 10, 1], [5, 40, 0], [50, 0, 0]])
    # item 3 has no human second choice; items 0 and 2 match, item 1 does not
    assert second_best_accuracy(probs, counts) == pytest.approx(2 / 3)


def test_multilabel_accuracy_accepts_any_class_people_chose():
    probs = np.array([[0.6, 0.4, 0.0], [0.1, 0.2, 0.7], [0.1, 0.8, 0.1]])
    counts = np.array([[5, 5, 0], [9, 1, 0], [1, 9, 0]])
    assert accuracy(probs, counts.argmax(1)) == pytest.approx(2 / 3)
    assert multilabel_accuracy(probs, counts) == pytest.approx(2 / 3)
    assert multilabel_accuracy(np.array([[0.0, 1.0, 0.0]]), np.array([[9, 1, 0]])) == 1.0
    assert multilabel_accuracy(np.array([[0.0, 1.0, 0.0]]), np.array([[9, 1, 0]]), min_share=0.2) == 0.0


def test_temperature_scaling_recovers_a_known_temperature(rng):
    n, c, true_t = 20000, 10, 2.5
    logits = rng.normal(0, 3, (n, c))
    p = softmax(logits, true_t)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)
    assert fit_temperature(logits, p) == pytest.approx(true_t, rel=1e-3)  # soft targets pin it exactly
    assert ece(softmax(logits, fit_temperature(logits, labels)), labels) < ece(softmax(logits, 1.0), labels)


def test_metric_inputs_are_checked():
    with pytest.raises(ValueError, match="3 rows of probabilities but 2 labels"):
        accuracy(np.full((3, 2), 0.5), np.array([0, 1]))
    with pytest.raises(ValueError, match="non-empty"):
        ece(np.zeros((0, 2)), np.array([], dtype=int))
    with pytest.raises(ValueError, match="matching, non-empty"):
        fit_temperature(np.zeros((2, 2)), np.array([0]))


def test_the_calibration_bench_maps_recover_a_known_temperature_and_confusion_share(rng):
    """experiments/calibration_maps.py: its temperature map is the library's, and the votes-fitted mix recovers the
    share of the probabilities that went through the human confusion matrix."""
    import torch

    from tests.support.scripts import load_script

    maps = load_script("experiments/calibration_maps.py")
    fit_map, human_confusion = maps.fit_map, maps.human_confusion

    n, c, true_t, share = 5000, 4, 2.0, 0.4
    labels = rng.integers(0, c, n)
    counts = np.eye(c)[labels] * 8 + (rng.random((n, c)) < 0.3)
    confusion = human_confusion(counts, labels, c)
    assert torch.allclose(confusion.sum(1), torch.ones(c, dtype=torch.float64))
    assert confusion[0, 0] == pytest.approx(counts[labels == 0, 0].sum() / counts[labels == 0].sum())
    z = torch.from_numpy(rng.normal(0, 3, (n, c)))
    q = torch.softmax(z / true_t, 1)
    votes = (1 - share) * q + share * q @ confusion
    onehot = torch.eye(c, dtype=torch.float64)[labels]
    temperature = fit_map("temperature", z, q, onehot, confusion)(z)
    assert torch.allclose(temperature, torch.from_numpy(softmax(z.numpy(), fit_temperature(z.numpy(), q.numpy()))))
    mixed = fit_map("mix-human", z, votes, onehot, confusion)(z)
    assert torch.allclose(mixed, votes, atol=1e-4)
