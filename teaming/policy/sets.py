"""Conformal prediction sets: the classes a reviewer of a deferred item may be shown, fitted with the policy.

Split conformal with the least-ambiguous score (one minus the probability of the true class, Sadinle et al.
2019), calibrated on the items the policy defers as unsure: the set then holds the true class with the stated
coverage on the items it is shown on, not on an average over items the model answers alone. It is never shown
on an item deferred as unfamiliar: nothing it was calibrated on is like that image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from teaming._validation import PolicyError, check_probs

MIN_ITEMS = 50  # fewer deferred calibration items than this and the sets are calibrated on every item


@dataclass(frozen=True)
class PredictionSets:
    """A fitted set rule: a class is in an item's set when its probability is at least `1 - qhat`."""

    coverage: float  # the stated chance that the set holds the true class
    qhat: float  # the conformal quantile of the calibration scores
    n_items: int  # calibration items
    on: str  # "deferred" (the calibration items the policy defers as unsure) | "all"

    def members(self, probs: np.ndarray) -> list[list[int]]:
        """Each item's set, most probable class first; never empty (the top class is always in it)."""
        p = check_probs(probs)
        keep = p >= 1 - self.qhat
        keep[np.arange(len(p)), p.argmax(1)] = True
        return [[int(c) for c in np.argsort(-row, kind="stable") if k[c]] for row, k in zip(p, keep)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PredictionSets":
        return cls(**d)


def fit_prediction_sets(
    probs: np.ndarray, y: np.ndarray, coverage: float, deferred: np.ndarray | None = None
) -> PredictionSets:
    """Calibrate sets of `coverage` on items (probs N x C, true labels y), on the `deferred` ones where there are
    at least MIN_ITEMS of them: qhat is the ceil((n + 1) coverage)-th smallest score (every class past n)."""
    if not 0 < coverage < 1:
        raise PolicyError(f"set coverage must lie in (0, 1), got {coverage}")
    p, y = check_probs(probs), np.asarray(y, dtype=np.int64)
    on = "all"
    if deferred is not None and int(np.sum(deferred)) >= MIN_ITEMS:
        p, y, on = p[deferred], y[deferred], "deferred"
    scores = np.sort(1 - p[np.arange(len(p)), y])
    k = math.ceil((len(scores) + 1) * coverage)
    qhat = 1.0 if k > len(scores) else float(scores[k - 1])
    return PredictionSets(coverage=float(coverage), qhat=qhat, n_items=len(scores), on=on)
