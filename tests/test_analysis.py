"""Teaming analysis on small real slices: CIFAR-10H with the shipped model, CIFAR-10N annotators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from teaming._validation import InputError
from teaming.analysis import (
    accuracy_by_bins,
    best_in_hindsight,
    compare_confusions,
    cross_fitted_team,
    error_confusion,
    group_confusions,
    matching_percentage,
    oracle_accuracy,
    pair_teams,
    team_curve,
)
from teaming.confidence import confidence
from teaming.datasets import load_cifar10n
from teaming.labels import vote
from teaming.policy import ThresholdPolicy

ITEMS = np.arange(7000, 8500)
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "cifar10h-default"


@pytest.fixture(scope="module")
def cifar10h_team(cifar_test, cifar10h, shipped_probs):
    """Shipped model probabilities, one sampled CIFAR-10H annotator and the CIFAR-10 label for 1,500 held-out items."""
    probs = shipped_probs(ITEMS)
    human = cifar10h.subset(ITEMS)
    return probs, human.sample(0), cifar_test.labels[ITEMS], human


def test_bounds_and_curve_ends(cifar10h_team):
    probs, human, y, _ = cifar10h_team
    pred = probs.argmax(1)
    oracle = oracle_accuracy(pred, human, y)
    assert oracle >= max((pred == y).mean(), (human == y).mean())
    acc, deferral = team_curve(confidence(probs), pred, human, y, np.array([0.0, 1.01]))
    assert acc[0] == (pred == y).mean() and deferral[0] == 0  # nobody deferred: the machine alone
    assert acc[1] == (human == y).mean() and deferral[1] == 1  # everybody deferred: the human alone
    best = best_in_hindsight(probs, human, y)
    assert max(acc) <= best.accuracy <= oracle
    capped = best_in_hindsight(probs, human, y, max_deferral=0.1)
    assert capped.deferral_rate <= 0.1 and capped.accuracy <= best.accuracy


def test_human_ai_team_beats_both_on_real_data(cifar10h_team):
    probs, human, y, _ = cifar10h_team
    team, rows = cross_fitted_team(ThresholdPolicy().fit, probs, human, y, repeats=5)
    assert rows.shape == (5, 3)
    assert team.accuracy > (probs.argmax(1) == y).mean() + 0.02  # deferring pays on held-out halves (91% model)
    assert 0 < team.deferral_rate < 0.6


def test_people_are_steadier_where_the_machine_is_unsure(cifar10h_team):
    probs, human, y, counts = cifar10h_team
    conf = confidence(probs)
    edges = np.linspace(0.2, 1.0, 9)
    machine = accuracy_by_bins(probs.argmax(1) == y, conf, edges)
    person = accuracy_by_bins(human == y, conf, edges)
    assert machine.counts.sum() == len(y)
    assert machine.slope > 0.3 and person.slope < machine.slope / 2
    low = machine.centers < 0.6
    assert np.nanmean(person.accuracy[low]) > np.nanmean(machine.accuracy[low])
    by_entropy = accuracy_by_bins(human == y, counts.entropy(), np.linspace(0, counts.entropy().max(), 6))
    assert by_entropy.slope < 0  # people err more where people disagree


def test_accuracy_by_bins_hand_worked():
    b = accuracy_by_bins(
        np.array([1, 0, 1, 1, 1, 0]), np.array([0.1, 0.15, 0.5, 0.55, 0.9, 0.95]), [0, 1 / 3, 2 / 3, 1]
    )
    np.testing.assert_allclose(b.accuracy, [0.5, 1.0, 0.5])
    np.testing.assert_array_equal(b.counts, [2, 2, 2])
    assert b.slope == pytest.approx(0.0)


def test_error_confusion_hand_worked():
    y = np.array([0, 0, 1, 1, 2])
    a = np.array([1, 2, 0, 1, 0])
    b = np.array([1, 1, 0, 2, 2])
    m = error_confusion(a, b, y, 3)  # both wrong on items 0, 1, 2: (1,1), (2,1), (0,0)
    assert m.sum() == pytest.approx(1) and np.trace(m) == pytest.approx(2 / 3)
    assert m[2, 1] == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def cifar10n_slice(shared_dir):
    items = np.arange(40000, 42000)
    humans = {
        c: load_cifar10n(shared_dir / "cifar10n_labels.npz", [c]).subset(items).majority()
        for c in ("random_label1", "random_label2", "random_label3", "aggre_label")
    }
    with np.load(shared_dir / "cifar10n_labels.npz") as z:
        y = z["clean_label"][items].astype(np.int64)
    return humans, y


def test_cifar10n_humans_and_their_majority(cifar10n_slice):
    humans, y = cifar10n_slice
    singles = [humans[c] for c in ("random_label1", "random_label2", "random_label3")]
    for h in singles:
        assert 0.75 < (h == y).mean() < 0.9  # one CIFAR-10N annotator is ~82% right
    majority = vote(np.stack(singles, 1), 10)
    assert (majority == y).mean() > max((h == y).mean() for h in singles) + 0.05  # aggregated humans do better
    answers = np.stack(singles, 1)
    split = (answers[:, 0] != answers[:, 1]) & (answers[:, 1] != answers[:, 2]) & (answers[:, 0] != answers[:, 2])
    assert (majority == humans["aggre_label"])[~split].all()  # CIFAR-10N's own majority, wherever two agree
    assert split.mean() < 0.1  # three different answers (our tie rule: the first annotator's) are rare
    m = matching_percentage(singles[0], singles[1], y)
    assert m.n_items == 10 * np.bincount(y).min()
    assert 0 < m.both_wrong < 0.1 and 0 < m.same_wrong_answer <= 1


def test_machines_share_mistakes_more_than_with_people(cifar10n_slice):
    """Two machines that err alike vs the same machines with CIFAR-10N people, on real labels."""
    humans, y = cifar10n_slice
    rng = np.random.default_rng(0)
    # Two 'machines' derived from one: they share its wrong answers, as Liu et al. find nets do.
    base = np.where(rng.uniform(size=len(y)) < 0.85, y, (y + 1 + rng.integers(0, 2, len(y))) % 10)
    machines = {"m1": base, "m2": np.where(rng.uniform(size=len(y)) < 0.1, y, base)}
    people = {c: humans[c] for c in ("random_label1", "random_label2")}
    groups = group_confusions(people, machines, y, 10)
    assert set(groups) == {"human-human", "machine-machine", "human-machine"}
    test = compare_confusions(groups["machine-machine"], groups["human-machine"], "mm", "hm")
    assert test.diag_x > test.diag_y and test.diag_p < 0.05
    with pytest.raises(InputError, match="square"):
        compare_confusions(np.eye(3), np.eye(4))


def test_pair_teams_machine_and_human_partners(cifar10h_team):
    probs, human, y, _ = cifar10h_team
    other = np.roll(probs, 1, axis=1)  # a much worse second machine
    machines = {"model": probs, "shifted": other / other.sum(1, keepdims=True)}
    ai_ai = pair_teams(machines, y)
    assert len(ai_ai) == 2 and all(r.oracle >= r.best.accuracy for r in ai_ai)
    with_people = pair_teams({"model": probs}, y, {"annotator": human})
    best_ai = max(r.best.accuracy for r in ai_ai if r.first == "model")
    assert with_people[0].best.accuracy > best_ai
