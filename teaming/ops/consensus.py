"""What several people's answers add up to: Dawid-Skene consensus with each reviewer's confusion matrix
(crowd-kit), majority otherwise, and each reviewer's accuracy with an interval."""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

MIN_ITEMS = 30  # items with two or more class answers before Dawid-Skene is fitted; majority below
EPS = 1e-6


@dataclass
class Skills:
    """Fitted Dawid-Skene parameters: class priors and, per reviewer, P(answer | true class) (C x C)."""

    prior: np.ndarray
    confusion: dict[str, np.ndarray]
    items: int  # items with two or more class answers it was fitted on

    def vote(self, answers: Sequence) -> int | None:
        """The most probable class given class answers (objects with .reviewer and .label); None when a
        reviewer is unknown to the fit."""
        if any(a.reviewer not in self.confusion for a in answers):
            return None
        logp = np.log(self.prior + EPS)
        for a in answers:
            logp = logp + np.log(self.confusion[a.reviewer][:, a.label] + EPS)
        return int(np.argmax(logp))

    def accuracy(self, reviewer: str) -> float | None:
        """P(right) for a random item: sum over classes of prior x P(answer = class | class)."""
        m = self.confusion.get(reviewer)
        return None if m is None else float(self.prior @ np.diag(m))


def fit_skills(answers: Sequence[tuple[int, str, int]], num_classes: int, min_items: int = MIN_ITEMS) -> Skills | None:
    """Dawid-Skene (crowd-kit) on (item, reviewer, class) answers; None while fewer than `min_items` items have
    two or more answers (a confusion matrix needs overlap between people)."""
    per_item: dict[int, int] = defaultdict(int)
    for item, _, _ in answers:
        per_item[item] += 1
    shared = sum(n >= 2 for n in per_item.values())
    if shared < min_items:
        return None
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    frame = pd.DataFrame(answers, columns=["task", "worker", "label"])
    with warnings.catch_warnings():  # crowd-kit 1.4 still uses pandas keywords pandas 3 deprecates
        warnings.filterwarnings("ignore", module="crowdkit")
        ds = DawidSkene(n_iter=100).fit(frame)
    classes = np.arange(num_classes)
    prior = ds.priors_.reindex(classes).fillna(0).to_numpy(dtype=np.float64)
    prior = (prior + EPS) / (prior + EPS).sum()
    confusion = {}
    for reviewer, table in ds.errors_.groupby(level=0):
        observed_by_true = table.droplevel(0).reindex(index=classes, columns=classes).fillna(0).to_numpy()
        m = observed_by_true.T + EPS  # rows: true class, columns: the answer given
        confusion[str(reviewer)] = m / m.sum(1, keepdims=True)
    return Skills(prior, confusion, shared)


@dataclass
class ReviewerSkill:
    """How well one reviewer agrees with the others: on items where someone else answered too, the share of
    their answers equal to the others' consensus, with a 95% Wilson interval; and Dawid-Skene's accuracy."""

    reviewer: str
    answers: int
    compared: int
    agreement: float | None
    ci_low: float | None
    ci_high: float | None
    accuracy: float | None


def reviewer_skills(answers: Sequence[tuple[int, str, int]], skills: Skills | None = None) -> list[ReviewerSkill]:
    """Per reviewer: agreement with the consensus of the other answers on each shared item (leave-one-out, so
    nobody agrees with themselves), majority of the others with ties to the earliest."""
    by_item: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for item, reviewer, label in answers:
        by_item[item].append((reviewer, label))
    hits: dict[str, list[int]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for given in by_item.values():
        for i, (reviewer, label) in enumerate(given):
            counts[reviewer] += 1
            others = [lab for j, (_, lab) in enumerate(given) if j != i]
            if others:
                top = max(others.count(x) for x in others)
                hits[reviewer].append(int(label == next(x for x in others if others.count(x) == top)))
    out = []
    for reviewer in sorted(counts):
        h = hits.get(reviewer, [])
        if h:
            ci = stats.binomtest(sum(h), len(h)).proportion_ci(method="wilson")
            agreement, low, high = sum(h) / len(h), float(ci.low), float(ci.high)
        else:
            agreement = low = high = None
        acc = None if skills is None else skills.accuracy(reviewer)
        out.append(ReviewerSkill(reviewer, counts[reviewer], len(h), agreement, low, high, acc))
    return out
