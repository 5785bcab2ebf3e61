"""Simulated reviewers who differ, built from real annotators: each CIFAR-10N worker's confusion matrix (estimated
on the training images that worker labelled) and speed (their seconds per image), combined with each item's
difficulty from its CIFAR-10H votes.

A reviewer with per-class accuracy a[y] answers an item of true class y right with probability
sigmoid(logit(a[y]) + d), where d is how much easier (d > 0) or harder the item is than its class's mean, in
logits of the share of CIFAR-10H annotators who were right. A wrong answer is drawn half from the reviewer's own
confusions on y and half from the item's wrong votes: people confuse what they confuse, on the items that
confuse. `alike` keeps today's simulated reviewers, each answer a draw from the item's votes.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit, logit

EPS = 1e-3


@dataclass(frozen=True)
class SimReviewer:
    name: str
    confusion: np.ndarray  # true class x answered, rows summing to 1
    seconds: float  # per answer: the worker's median seconds per image

    @property
    def accuracy(self) -> float:
        """Mean per-class accuracy (classes weighed alike)."""
        return float(np.diag(self.confusion).mean())


def cifar10n_workers(labels: Path, side_info: Path, min_items: int = 500) -> list[SimReviewer]:
    """Every CIFAR-10N worker who labelled at least `min_items` training images: their confusion against the clean
    label (one pseudo-count per cell) and their median seconds per image."""
    with np.load(labels) as z:
        clean = z["clean_label"]
        said = [z[f"random_label{k}"] for k in (1, 2, 3)]
    pairs: dict[str, list[tuple[int, int]]] = {}
    seconds: dict[str, list[float]] = {}
    with open(side_info, newline="") as f:
        for row in csv.DictReader(f):
            lo, hi = (int(x) for x in row["Image-batch"].split("--"))
            for k in (1, 2, 3):
                worker = row[f"Worker{k}-id"]
                pairs.setdefault(worker, []).extend((clean[i], said[k - 1][i]) for i in range(lo, hi + 1))
                seconds.setdefault(worker, []).append(float(row[f"Work-time-in-seconds-{k}"]) / (hi - lo + 1))
    c = int(clean.max()) + 1
    out = []
    for worker, got in pairs.items():
        if len(got) < min_items:
            continue
        m = np.ones((c, c))
        np.add.at(m, tuple(np.array(got).T), 1)
        out.append(SimReviewer(f"worker-{worker}", m / m.sum(1, keepdims=True), float(np.median(seconds[worker]))))
    return out


def spread(workers: list[SimReviewer], k: int = 3) -> list[SimReviewer]:
    """k workers who differ: from the most to the least accurate, at evenly spaced ranks (the best and worst
    tenth left out, so that no one simulated is a spammer or a saint)."""
    ranked = sorted(workers, key=lambda w: -w.accuracy)
    at = np.linspace(0.1, 0.9, k) * (len(ranked) - 1)
    return [ranked[int(round(i))] for i in at]


def difficulty(counts: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per item: the logit of the share of its annotators who were right, less its class's mean of the same."""
    right = np.clip(counts[np.arange(len(y)), y] / counts.sum(1), EPS, 1 - EPS)
    z = logit(right)
    means = np.array([z[y == c].mean() if (y == c).any() else 0.0 for c in range(counts.shape[1])])
    return z - means[y]


def answer_probs(reviewer: SimReviewer, y: int, votes: np.ndarray, easier: float) -> np.ndarray:
    """P(each answer) of this reviewer on an item of true class y with these CIFAR-10H votes and difficulty."""
    c = len(votes)
    right = expit(logit(np.clip(reviewer.confusion[y, y], EPS, 1 - EPS)) + easier)
    own = reviewer.confusion[y].copy()
    own[y] = 0
    theirs = votes.astype(np.float64).copy()
    theirs[y] = 0
    wrong = 0.5 * own / own.sum() + 0.5 * (theirs / theirs.sum() if theirs.sum() else np.full(c, 1 / c))
    wrong[y] = 0
    p = (1 - right) * wrong / wrong.sum()
    p[y] = right
    return p


def alike(votes: np.ndarray) -> np.ndarray:
    """Today's simulated reviewer: an answer drawn from the item's votes, whoever answers."""
    return votes / votes.sum()
