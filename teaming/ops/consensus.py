"""What several people's answers add up to: Dawid-Skene consensus with each reviewer's confusion matrix
(crowd-kit), majority otherwise, and each reviewer's accuracy with an interval."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from teaming.labels import earliest_majority
from teaming.ops.monitors import interval

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
    none_answers: int = 0
    unsure_answers: int = 0
    skips: int = 0
    flags: list[str] = field(default_factory=list)


def agreements(answers: Sequence[tuple[int, str, int]]) -> list[tuple[str, bool]]:
    """(reviewer, agrees) for each class answer on an item others answered too, items in id order: whether it is
    the majority of the other answers, ties to the earliest (leave-one-out, so nobody agrees with themselves)."""
    by_item: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for item, reviewer, label in answers:
        by_item[item].append((reviewer, label))
    out = []
    for item in sorted(by_item):
        given = by_item[item]
        for i, (reviewer, label) in enumerate(given):
            others = [lab for j, (_, lab) in enumerate(given) if j != i]
            if others:
                out.append((reviewer, label == earliest_majority(others)))
    return out


def reviewer_skills(answers: Sequence[tuple[int, str, int]], skills: Skills | None = None) -> list[ReviewerSkill]:
    """Per reviewer: agreement with the consensus of the other answers on each shared item (`agreements`)."""
    counts = Counter(reviewer for _, reviewer, _ in answers)
    hits: dict[str, list[int]] = defaultdict(list)
    for reviewer, agrees in agreements(answers):
        hits[reviewer].append(int(agrees))
    out = []
    for reviewer in sorted(counts):
        h = hits.get(reviewer, [])
        if h:
            low, high = interval(sum(h) / len(h), len(h))
            agreement = sum(h) / len(h)
        else:
            agreement = low = high = None
        acc = None if skills is None else skills.accuracy(reviewer)
        out.append(ReviewerSkill(reviewer, counts[reviewer], len(h), agreement, low, high, acc))
    return out


def unreliable_reviewers(
    answers: Sequence[tuple[int, str, int]], alpha: float = 0.01, min_compared: int = 10
) -> dict[str, str]:
    """Reviewers who agree with the others significantly less than the others agree among themselves, each
    with a sentence that says so.

    Pairwise: on every item two people answered, do they give the same class? A reviewer's pairs with the rest
    are compared with the rest's pairs among themselves (one-sided Fisher exact test at `alpha`, at least
    `min_compared` pairs each). Pairs, not a consensus of the others: with three people, one careless person
    drags a leave-one-out consensus down for everyone else too."""
    by_item: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for item, reviewer, label in answers:
        by_item[item].append((reviewer, label))
    pairs: dict[tuple[str, str], list[int]] = defaultdict(list)  # (a, b) with a < b -> same answer or not
    for given in by_item.values():
        for i, (a, la) in enumerate(given):
            for b, lb in given[i + 1 :]:
                if a != b:
                    pairs[tuple(sorted((a, b)))].append(int(la == lb))
    out = {}
    for r in sorted({name for pair in pairs for name in pair}):
        mine = [h for pair, hs in pairs.items() if r in pair for h in hs]
        rest = [h for pair, hs in pairs.items() if r not in pair for h in hs]
        if len(mine) < min_compared or len(rest) < min_compared:
            continue
        table = [[sum(mine), len(mine) - sum(mine)], [sum(rest), len(rest) - sum(rest)]]
        p = stats.fisher_exact(table, alternative="less").pvalue
        if p < alpha:
            out[r] = (
                f"{r} gives the same answer as another reviewer on {sum(mine) / len(mine):.0%} of {len(mine)} shared "
                f"items, the others among themselves on {sum(rest) / len(rest):.0%} of {len(rest)} (Fisher p={p:.2g})"
            )
    return out


def with_work(skills: list[ReviewerSkill], work: dict[str, dict[str, int]], alpha: float = 0.01) -> list[ReviewerSkill]:
    """`skills` (and every reviewer who has only non-class answers or skips) with their none-of-these, can't-tell
    and skip counts, and a flag where a share of them is far above the rest of the team's (one-sided Fisher exact
    test at `alpha`, at least 10 tasks): someone who only answers "can't tell" is not someone who never worked."""
    by_name = {s.reviewer: s for s in skills}
    for name in work:
        by_name.setdefault(name, ReviewerSkill(name, 0, 0, None, None, None, None))
    for name, s in by_name.items():
        w = work.get(name, {})
        s.none_answers, s.unsure_answers, s.skips = w.get("none", 0), w.get("unsure", 0), w.get("skips", 0)
    for what, part, whole in (
        ("answers none of these or can't tell", lambda w: w.get("none", 0) + w.get("unsure", 0), _answered),
        ("skips", lambda w: w.get("skips", 0), lambda w: _answered(w) + w.get("skips", 0)),
    ):
        for name, s in by_name.items():
            mine, total = part(work.get(name, {})), whole(work.get(name, {}))
            rest = sum(part(w) for o, w in work.items() if o != name)
            rest_total = sum(whole(w) for o, w in work.items() if o != name)
            if total < 10 or not rest_total:
                continue
            p = stats.fisher_exact([[mine, total - mine], [rest, rest_total - rest]], alternative="greater").pvalue
            if p < alpha:
                s.flags.append(
                    f"{what} {mine / total:.0%} of the time, the rest of the team {rest / rest_total:.0%} (p={p:.2g})"
                )
    return sorted(by_name.values(), key=lambda s: s.reviewer)


def _answered(w: dict[str, int]) -> int:
    return w.get("class", 0) + w.get("none", 0) + w.get("unsure", 0)
