"""Deferral methods side by side at fixed budgets, cross-fitted: the threshold rules, the learned ones and the two
oracle bounds, with paired t-tests against the best threshold rule (plain, and corrected for overlapping splits).

Each method is fitted on a random half of the items and scored on the other half, over `splits` halvings; it
defers the given share of the scored half that it ranks first, and the model answers the rest. A deferred item
counts its human accuracy (for one sampled annotator: the share of its annotators who were right).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from teaming.confidence import confidence
from teaming.policy.l2d import L2D
from teaming.policy.learned import Rejector

RULES = ("max_prob", "margin", "entropy")
LEARNED = ("rejector (learned)", "L2D, CE surrogate (learned)")
Method = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # (fit idx, score idx) -> (score, pred)


@dataclass
class DeferralComparison:
    """Team accuracy per method, split and budget (`accuracy[name]`: splits x rates) and the tests of each
    learned method against the best threshold rule at each budget."""

    rates: tuple[float, ...]
    accuracy: dict[str, np.ndarray]
    tests: list[tuple[str, str, float, float, float, float]]  # method, best rule, rate, gain, p, corrected p

    @property
    def splits(self) -> int:
        return len(next(iter(self.accuracy.values())))


def methods(probs: np.ndarray, features: np.ndarray, y: np.ndarray, hacc: np.ndarray) -> dict[str, Method]:
    pred = probs.argmax(1)
    out: dict[str, Method] = {}
    for rule in RULES:
        out[f"threshold ({rule})"] = lambda a, b, r=rule: (-confidence(probs[b], r), pred[b])

    def rejector(a, b):
        r = Rejector().fit(probs[a], features[a], y[a], hacc[a])
        return r.defer_score(probs[b], features[b]), pred[b]

    def l2d(a, b):
        m = L2D().fit(probs[a], features[a], y[a], hacc[a])
        return m.defer_score(probs[b], features[b]), m.predict(probs[b], features[b])

    out[LEARNED[0]], out[LEARNED[1]] = rejector, l2d
    out["oracle: true human accuracy"] = lambda a, b: (hacc[b] - probs[b].max(1), pred[b])
    out["oracle: where the model is wrong"] = lambda a, b: ((pred[b] != y[b]) + 1e-3 * hacc[b], pred[b])
    return out


def team_accuracy(score: np.ndarray, pred: np.ndarray, y: np.ndarray, hacc: np.ndarray, rate: float) -> float:
    """Expected team accuracy when the `rate` share with the highest scores goes to people."""
    defer = np.zeros(len(y), bool)
    defer[np.argsort(-score, kind="stable")[: int(round(rate * len(y)))]] = True
    return float(np.where(defer, hacc, pred == y).mean())


def corrected_p(diff: np.ndarray, test_share: float = 0.5) -> float:
    """Nadeau & Bengio's corrected resampled t-test: the variance grows by n_test/n_train for overlapping splits."""
    k, sd = len(diff), diff.std(ddof=1)
    if sd == 0:
        return 0.0 if diff.mean() != 0 else 1.0
    t = diff.mean() / (sd * np.sqrt(1 / k + test_share / (1 - test_share)))
    return float(2 * stats.t.sf(abs(t), k - 1))


def compare_deferral(
    probs: np.ndarray,
    features: np.ndarray,
    y: np.ndarray,
    hacc: np.ndarray,
    rates: tuple[float, ...] = (0.05, 0.10, 0.20),
    splits: int = 20,
    seed: int = 0,
    progress: Callable | None = None,
) -> DeferralComparison:
    """Every method over `splits` random halvings at each budget in `rates`."""
    ms = methods(probs, features, y, hacc)
    rng = np.random.default_rng(seed)
    acc = {m: np.zeros((splits, len(rates))) for m in ms}
    for s in (progress or (lambda r: r))(range(splits)):
        perm = rng.permutation(len(y))
        a, b = np.sort(perm[: len(y) // 2]), np.sort(perm[len(y) // 2 :])
        for name, method in ms.items():
            score, pred = method(a, b)
            acc[name][s] = [team_accuracy(score, pred, y[b], hacc[b], r) for r in rates]
    tests = []
    for j, r in enumerate(rates):
        best = max(RULES, key=lambda rule: acc[f"threshold ({rule})"][:, j].mean())
        base = acc[f"threshold ({best})"][:, j]
        for name in LEARNED:
            diff = acc[name][:, j] - base
            p = float(stats.ttest_rel(acc[name][:, j], base).pvalue) if diff.std() > 0 else 1.0
            tests.append((name, best, r, float(diff.mean()), p, corrected_p(diff)))
    return DeferralComparison(tuple(rates), acc, tests)


def markdown(c: DeferralComparison) -> str:
    """The two tables of EXPERIMENTS.md: accuracy per method and budget, then the tests."""
    lines = ["| method | " + " | ".join(f"{r:.0%} deferred" for r in c.rates) + " |", "|---|" + "---|" * len(c.rates)]
    for name, a in c.accuracy.items():
        cells = " | ".join(f"{100 * m:.2f} ± {100 * sd:.2f}" for m, sd in zip(a.mean(0), a.std(0)))
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "| learned method | budget | gain over the best threshold rule (points) | p (paired t) | p (corrected) |",
    ]
    lines.append("|---|---|---|---|---|")
    for name, best, r, gain, p, pc in c.tests:
        lines.append(f"| {name} vs {best} | {r:.0%} | {100 * gain:+.2f} | {p:.3g} | {pc:.3g} |")
    return "\n".join(lines)
