"""The statistics deferral rules are built on: paired resamples of items, paired t-tests against the best
threshold (Liu et al.), and exact binomial tests in fixed sequence (Learn then Test)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

from teaming._validation import PolicyError
from teaming.policy.base import Candidate

Resample = Literal["folds", "bootstrap", "models"]


def resample_weights(n: int, kind: Resample, k: int, rng: np.random.Generator) -> np.ndarray:
    """K x N weights, each row summing to 1: disjoint folds or bootstrap replicates of the items."""
    if kind == "folds":
        if k > n:
            raise PolicyError(f"{k} folds need at least {k} items, got {n}")
        fold = np.empty(n, dtype=np.int64)
        fold[rng.permutation(n)] = np.arange(n) % k
        w = (fold[None, :] == np.arange(k)[:, None]).astype(np.float64)
    elif kind == "bootstrap":
        w = rng.multinomial(n, np.full(n, 1 / n), size=k).astype(np.float64)
    else:
        raise PolicyError(f"unknown resample {kind!r}; choose folds, bootstrap, or pass K x N x C probs for models")
    return w / w.sum(1, keepdims=True)


def paired_test(acc: np.ndarray, best: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided paired t-test (scipy ttest_rel) of every column of K x T accuracies against column `best`."""
    diff = acc[:, [best]] - acc
    t = np.zeros(acc.shape[1])
    p = np.ones(acc.shape[1])
    varies = diff.std(0) > 1e-12  # float noise in fold means is not variation
    if varies.any():
        res = stats.ttest_rel(acc[:, [best] * int(varies.sum())], acc[:, varies], axis=0)
        t[varies], p[varies] = res.statistic, res.pvalue
    same_nonzero = ~varies & (np.abs(diff[0]) > 1e-12)
    t[same_nonzero] = np.inf * np.sign(diff[0, same_nonzero])
    p[same_nonzero] = 0.0
    return t, p


def select_threshold(
    acc: np.ndarray,
    deferral: np.ndarray,
    thresholds: np.ndarray,
    alpha: float,
    resample: str,
    max_deferral: float | None = None,
    min_accuracy: float | None = None,
) -> tuple[int, int, list[Candidate]]:
    """Liu et al.'s rule on K x T team accuracies: (chosen index, best index, every candidate's statistics).

    Best = highest mean among candidates within the deferral cap; chosen = fewest deferrals among those not
    significantly worse than the best (paired t-test, two-sided, at alpha) that also reach min_accuracy.
    """
    k = acc.shape[0]
    mean = acc.mean(0)
    feasible = np.ones(len(thresholds), bool) if max_deferral is None else deferral <= max_deferral + 1e-12
    if not feasible.any():
        raise PolicyError(
            f"no threshold defers at most {max_deferral:.1%} of items; the fewest is "
            f"{deferral.min():.1%}: raise max_deferral (reviewer capacity)"
        )
    masked = np.where(feasible, mean, -np.inf)
    best = int(np.flatnonzero(masked == masked.max())[np.argmin(deferral[masked == masked.max()])])
    t, p = paired_test(acc, best)
    if resample == "bootstrap":
        lo, hi = np.percentile(acc, [2.5, 97.5], axis=0)
    else:
        half = stats.t.ppf(0.975, k - 1) * acc.std(0, ddof=1) / np.sqrt(k)
        lo, hi = np.clip(mean - half, 0, 1), np.clip(mean + half, 0, 1)  # an accuracy's interval stays in 0..100%
    not_worse = (p >= alpha) | (mean >= mean[best])
    eligible = feasible & not_worse
    if min_accuracy is not None:
        eligible &= mean >= min_accuracy
    if not eligible.any():
        raise PolicyError(
            f"no threshold reaches team accuracy {min_accuracy:.2%} within the deferral cap; the "
            f"best is {mean[best]:.2%} at {deferral[best]:.1%} deferred"
        )
    order = np.lexsort((-mean, deferral))
    chosen = int(next(i for i in order if eligible[i]))
    cands = [
        Candidate(
            threshold=float(thresholds[j]),
            deferral_rate=float(deferral[j]),
            p=float(p[j]),
            eligible=bool(eligible[j]),
            mean_accuracy=float(mean[j]),
            ci_low=float(lo[j]),
            ci_high=float(hi[j]),
            t=float(t[j]),
            feasible=bool(feasible[j]),
        )
        for j in range(len(thresholds))
    ]
    return chosen, best, cands


def certify_sequence(
    accepted: np.ndarray, errors: np.ndarray, target_accuracy: float, delta: float, min_accepted: int
) -> tuple[np.ndarray, np.ndarray]:
    """Learn then Test over thresholds in increasing order: (binomial p-values, certified mask).

    H0 at each threshold: the error rate on the items it auto-answers exceeds 1 - target. Tests run in fixed
    sequence downwards from the highest threshold that auto-answers `min_accepted` items and enough to pass
    with no error at all (149 for 98% at delta 0.05; a smaller top set would fail and end the sequence at once),
    stopping at the first that fails; the order depends on the scores only, so the family-wise error stays at
    delta.
    """
    pvals = np.where(accepted > 0, stats.binom.cdf(errors, np.maximum(accepted, 1), 1 - target_accuracy), 1.0)
    certified = np.zeros(len(accepted), bool)
    passable = int(np.ceil(np.log(delta) / np.log(target_accuracy)))
    need = max(min_accepted, passable)
    start = np.flatnonzero(accepted >= need)
    if start.size == 0:
        raise PolicyError(
            f"no threshold certifies {target_accuracy:.2%} accuracy: none auto-answers {need} items, the fewest that "
            f"can pass at delta {delta} (or min_accepted {min_accepted}); lower the target or add calibration items"
        )
    for j in range(int(start.max()), -1, -1):
        if pvals[j] > delta:
            break
        certified[j] = True
    return pvals, certified
