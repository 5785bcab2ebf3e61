"""Human-AI teaming analysis after Liu et al.: team bounds and curves, how people and machines err differently.

All functions take plain arrays: class probabilities (N x C), answers as class ids (N,), reference labels (N,).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Mapping, Sequence

import numpy as np
from scipy import stats

from teaming._validation import InputError, check_probs
from teaming.confidence import confidence


@dataclass
class Interval:
    """A mean over n draws (seeds, splits) with its 95% t-interval."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        if self.n < 2:
            return f"{self.mean:.2%}"
        return f"{self.mean:.2%} (95% CI {self.low:.2%} to {self.high:.2%}, {self.n} draws)"


def mean_interval(values: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    """The mean of `values` and its t-interval (the interval is the mean itself for one value); for shares (all
    values in [0, 1]) the interval is kept within [0, 1], where a symmetric t-interval near 100% would spill."""
    v = np.asarray(values, dtype=np.float64).ravel()
    m = float(v.mean())
    if len(v) < 2 or np.all(v == v[0]):
        return Interval(m, m, m, len(v))
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    low, high = m - half, m + half
    if v.min() >= 0 and v.max() <= 1:
        low, high = max(low, 0.0), min(high, 1.0)
    return Interval(m, low, high, len(v))


def oracle_accuracy(pred_a: np.ndarray, pred_b: np.ndarray, y: np.ndarray) -> float:
    """Upper bound of any team of two: an item counts as right when either member is right."""
    return float(((np.asarray(pred_a) == y) | (np.asarray(pred_b) == y)).mean())


def team_curve(
    conf: np.ndarray, first: np.ndarray, second: np.ndarray, y: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Team accuracy and deferral rate per threshold when items with conf < threshold go to `second`."""
    defer = conf[:, None] < thresholds[None, :]
    ok = np.where(defer, (second == y)[:, None], (first == y)[:, None])
    return ok.mean(0), defer.mean(0)


@dataclass
class TeamPoint:
    """A team at one threshold."""

    threshold: float
    accuracy: float
    deferral_rate: float


def best_in_hindsight(
    probs: np.ndarray, second: np.ndarray, y: np.ndarray, grid: int = 101, max_deferral: float | None = None
) -> TeamPoint:
    """The best team a threshold can make on these very items (an optimistic bound, not a fitted policy)."""
    p = check_probs(probs)
    thresholds = np.linspace(0, 1, grid)
    acc, deferral = team_curve(confidence(p), p.argmax(1), np.asarray(second), np.asarray(y), thresholds)
    if max_deferral is not None:
        acc = np.where(deferral <= max_deferral + 1e-12, acc, -1)
    j = int(np.argmax(acc))
    return TeamPoint(float(thresholds[j]), float(acc[j]), float(deferral[j]))


def cross_fitted_team(
    fit: Callable[[np.ndarray, np.ndarray, np.ndarray], object],
    probs: np.ndarray,
    human: np.ndarray,
    y: np.ndarray,
    repeats: int = 20,
    seed: int = 0,
) -> tuple[TeamPoint, np.ndarray]:
    """Fit a policy on a random half, score the team on the other half, over `repeats` splits.

    `fit(probs, y, human)` returns a fitted policy with `decide` (e.g. `ThresholdPolicy().fit`). Returns the
    mean TeamPoint and the per-split (threshold, accuracy, deferral) rows, so the spread can be reported.
    """
    p = check_probs(probs)
    y = np.asarray(y)
    h = np.asarray(human)
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(repeats):
        perm = rng.permutation(len(y))
        a, b = perm[: len(y) // 2], perm[len(y) // 2 :]
        policy = fit(p[a], y[a], h[a])
        defer = policy.decide(p[b])
        ok = np.where(defer, h[b] == y[b], p[b].argmax(1) == y[b])
        rows.append((policy.threshold_, ok.mean(), defer.mean()))
    rows = np.array(rows)
    return TeamPoint(*(float(v) for v in rows.mean(0))), rows


@dataclass
class PairTeam:
    """`first` answers when confident and hands the rest to `second`."""

    first: str
    second: str
    first_accuracy: float
    second_accuracy: float
    oracle: float
    best: TeamPoint


def pair_teams(
    machines: Mapping[str, np.ndarray], y: np.ndarray, others: Mapping[str, np.ndarray] | None = None
) -> list[PairTeam]:
    """Every machine-led team: with each other machine (others=None) or with each answer set in `others`.

    Each team is scored at its best threshold in hindsight, which flatters machine-machine teams.
    """
    rows = []
    for a, pa in machines.items():
        pa = check_probs(pa)
        pred_a = pa.argmax(1)
        partners = {b: check_probs(pb).argmax(1) for b, pb in machines.items() if b != a} if others is None else others
        for b, pred_b in partners.items():
            pred_b = np.asarray(pred_b)
            rows.append(
                PairTeam(
                    a,
                    b,
                    float((pred_a == y).mean()),
                    float((pred_b == y).mean()),
                    oracle_accuracy(pred_a, pred_b, y),
                    best_in_hindsight(pa, pred_b, y),
                )
            )
    return rows


def error_confusion(pred_a: np.ndarray, pred_b: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """C x C shares over items both get wrong: row = a's wrong answer, column = b's. The diagonal is shared mistakes."""
    a, b, y = (np.asarray(v) for v in (pred_a, pred_b, y))
    both = (a != y) & (b != y)
    m = np.zeros((num_classes, num_classes))
    np.add.at(m, (a[both], b[both]), 1)
    return m / max(both.sum(), 1)


@dataclass
class ConfusionTest:
    """Paired t-tests between two pair types' error confusions: diagonal entries, then off-diagonal ones."""

    label_x: str
    label_y: str
    diag_x: float
    diag_y: float
    diag_t: float
    diag_p: float
    off_t: float
    off_p: float


def compare_confusions(x: np.ndarray, y: np.ndarray, label_x: str = "x", label_y: str = "y") -> ConfusionTest:
    """Paired t-tests (scipy ttest_rel) of the C diagonal entries and the C(C-1) off-diagonal entries."""
    if x.shape != y.shape or x.ndim != 2 or x.shape[0] != x.shape[1]:
        raise InputError(f"need two square matrices of one shape, got {x.shape} and {y.shape}")
    off = ~np.eye(len(x), dtype=bool)
    d = stats.ttest_rel(np.diag(x), np.diag(y))
    o = stats.ttest_rel(x[off], y[off])
    return ConfusionTest(
        label_x,
        label_y,
        float(np.trace(x)),
        float(np.trace(y)),
        float(d.statistic),
        float(d.pvalue),
        float(o.statistic),
        float(o.pvalue),
    )


def group_confusions(
    humans: Mapping[str, np.ndarray], machines: Mapping[str, np.ndarray], y: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Mean error confusion over all human-human, machine-machine and human-machine pairs."""
    groups: dict[str, list[np.ndarray]] = {"human-human": [], "machine-machine": [], "human-machine": []}
    for a, b in combinations(humans.values(), 2):
        groups["human-human"].append(error_confusion(a, b, y, num_classes))
    for a, b in combinations(machines.values(), 2):
        groups["machine-machine"].append(error_confusion(a, b, y, num_classes))
    for m in machines.values():
        for h in humans.values():
            groups["human-machine"].append(error_confusion(m, h, y, num_classes))
    return {k: np.mean(v, 0) for k, v in groups.items() if v}


@dataclass
class Matching:
    """On a class-balanced sample: how often both err, and how often their wrong answers then match."""

    n_items: int
    both_wrong: float
    same_wrong_answer: float


def matching_percentage(
    pred_a: np.ndarray, pred_b: np.ndarray, y: np.ndarray, seed: int = 0, per_class: int | None = None
) -> Matching:
    """Share of both-wrong items where a and b give the same wrong answer, on equal items per true class."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    k = per_class or int(counts.min())
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False) for c in classes])
    a, b, t = np.asarray(pred_a)[idx], np.asarray(pred_b)[idx], y[idx]
    both = (a != t) & (b != t)
    same = float((a[both] == b[both]).mean()) if both.any() else 0.0
    return Matching(len(idx), float(both.mean()), same)


@dataclass
class BinnedAccuracy:
    """Accuracy per bin of some item property, with the OLS slope of accuracy on the bin centre."""

    edges: np.ndarray
    centers: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray
    slope: float
    intercept: float
    p: float


def accuracy_by_bins(correct: np.ndarray, value: np.ndarray, edges: Sequence[float]) -> BinnedAccuracy:
    """Accuracy within bins of `value` (machine confidence, human entropy, ...) and its OLS trend (linregress)."""
    correct = np.asarray(correct, dtype=np.float64)
    value = np.asarray(value, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    which = np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(edges) - 2)
    counts = np.bincount(which, minlength=len(edges) - 1)
    sums = np.bincount(which, weights=correct, minlength=len(edges) - 1)
    acc = np.divide(sums, counts, out=np.full(len(counts), np.nan), where=counts > 0)
    centers = (edges[:-1] + edges[1:]) / 2
    keep = counts > 0
    if keep.sum() >= 3:
        fit = stats.linregress(centers[keep], acc[keep])
        slope, intercept, p = float(fit.slope), float(fit.intercept), float(fit.pvalue)
    else:
        slope = intercept = p = float("nan")
    return BinnedAccuracy(edges, centers, acc, counts, slope, intercept, p)
