"""The threshold rule of Liu et al.: defer as little as possible without a significant loss of team accuracy.

Team accuracy (the model answers above the threshold, a person below it) is measured for every candidate
threshold on K paired resamples of the items; the best candidate by mean wins, then the candidate that defers
the fewest items among those a paired t-test cannot tell apart from the best is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from teaming._validation import PolicyError
from teaming.confidence import Score, confidence
from teaming.policy.base import UNFAMILIAR_QUANTILE, DeferralPolicy, PolicyReport, team_figures
from teaming.policy.stats import Resample, resample_weights, select_threshold


class ThresholdPolicy(DeferralPolicy):
    """Defer items whose confidence is below a threshold chosen by paired t-tests (Liu et al.).

    fit(probs, y, human): probs N x C calibrated probabilities (or K x N x C from K models, which then are the
    paired resamples), y the reference labels, human the reviewers' answers (N, or N x k -> their majority).
    `max_deferral` is the reviewers' capacity, `min_accuracy` a floor on team accuracy.

    Fitted attributes are documented on `DeferralPolicy` (`threshold_`, `report_`, ...).

    >>> import numpy as np
    >>> from teaming.policy import ThresholdPolicy
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 400)
    >>> sure = rng.random(400) < 0.7                      # the model is sure and right on 70% of items
    >>> pred = np.where(sure | (rng.random(400) < 0.5), y, 1 - y)
    >>> conf = np.where(sure, 0.95, 0.55)
    >>> probs = np.stack([np.where(pred == 0, conf, 1 - conf), np.where(pred == 1, conf, 1 - conf)], 1)
    >>> human = np.where(rng.random(400) < 0.95, y, 1 - y)  # people are right 95% of the time
    >>> policy = ThresholdPolicy().fit(probs, y, human)
    >>> 0.55 < policy.threshold_ <= 0.95                   # the unsure items go to people
    True
    >>> policy.decide(np.array([[0.95, 0.05], [0.45, 0.55]])).tolist()
    [False, True]
    """

    kind = "threshold"

    def __init__(
        self,
        *,
        score: Score = "max_prob",
        alpha: float = 0.05,
        resample: Resample = "folds",
        n_resamples: int = 10,
        max_deferral: float | None = None,
        min_accuracy: float | None = None,
        per_class: bool = False,
        min_class_items: int = 50,
        candidates: int | Sequence[float] = 101,
        random_state: int = 0,
        unfamiliar_quantile: float = UNFAMILIAR_QUANTILE,
    ) -> None:
        self.score = score
        self.alpha = alpha
        self.resample = resample
        self.n_resamples = n_resamples
        self.max_deferral = max_deferral
        self.min_accuracy = min_accuracy
        self.per_class = per_class
        self.min_class_items = min_class_items
        self.candidates = candidates
        self.random_state = random_state
        self.unfamiliar_quantile = unfamiliar_quantile

    def check_params(self) -> None:
        super().check_params()
        if not 0 < self.alpha < 1:
            raise PolicyError(f"alpha must lie strictly between 0 and 1, got {self.alpha}")
        if self.max_deferral is not None and not 0 <= self.max_deferral <= 1:
            raise PolicyError(f"max_deferral is a rate in [0, 1], got {self.max_deferral}")
        if self.min_accuracy is not None and not 0 <= self.min_accuracy <= 1:
            raise PolicyError(f"min_accuracy is a rate in [0, 1], got {self.min_accuracy}")
        if self.resample != "models" and self.n_resamples < 2:
            raise PolicyError(f"a paired t-test needs n_resamples >= 2, got {self.n_resamples}")

    def refit(
        self, probs: np.ndarray, y: np.ndarray, human: np.ndarray, *, scores: np.ndarray | None = None, **params
    ) -> "ThresholdPolicy":
        return type(self)(**{**self.get_params(), **params}).fit(probs, y, human, self.classes_).kept_from(self)

    def load_extra(self, d: dict) -> None:
        self.resample_ = self.report_.resample

    def _fit_confidence(self, models: np.ndarray, y: np.ndarray, h: np.ndarray) -> np.ndarray:
        """The scores thresholds are chosen on (M x N): the confidence score of each model's probabilities."""
        return confidence(models, self.score)

    def fit(
        self,
        probs: np.ndarray,
        y: np.ndarray,
        human: np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        *,
        unfamiliarity: np.ndarray | None = None,
        features: np.ndarray | None = None,
        human_accuracy: np.ndarray | None = None,
    ) -> "ThresholdPolicy":
        p, y, h = self._inputs(probs, y, human, classes, unfamiliarity)
        if h is None:
            raise PolicyError("the threshold rule weighs the model against people: pass the human answers")
        n, c = p.shape[-2], p.shape[-1]
        grid = self._grid()
        resample, k, weights = self._resamples(p)
        models = p if p.ndim == 3 else p[None]
        conf = self._fit_confidence(models, y, h)  # M x N
        pred = models.argmax(-1)
        curves = _Curves(conf, pred == y, h == y, grid, weights)
        acc, deferral = curves.on(np.arange(n))
        chosen, best, cands = select_threshold(
            acc, deferral, grid, self.alpha, resample, self.max_deferral, self.min_accuracy
        )
        self.threshold_ = float(grid[chosen])
        self.class_thresholds_ = self._per_class_thresholds(curves, pred[0], c, k, resample) if self.per_class else None
        self.resample_ = resample
        unsure = conf < (self.class_thresholds_[pred] if self.class_thresholds_ is not None else self.threshold_)
        guard = self._guard_report(unsure[0], unfamiliarity)
        defer = unsure | self.unfamiliar(unfamiliarity, n)
        rate, accepted, human_acc, team_acc = team_figures(defer, curves.machine_ok, curves.human_ok)
        if self.per_class and self.min_accuracy is not None and team_acc < self.min_accuracy:
            raise PolicyError(
                f"per-class thresholds give team accuracy {team_acc:.2%}, below min_accuracy {self.min_accuracy:.2%}"
            )
        names = self.classes_ or [str(i) for i in range(c)]
        self.report_ = PolicyReport(
            kind=self.kind,
            score=self.score,
            n_items=n,
            threshold=self.threshold_,
            deferral_rate=rate,
            machine_accuracy=float(curves.machine_ok.mean()),
            accepted_accuracy=accepted,
            human_accuracy=human_acc,
            team_accuracy=team_acc,
            rule=f"fewest deferrals not significantly worse than the best (paired t-tests over {k} {resample})",
            alpha=self.alpha,
            best_threshold=float(grid[best]),
            resample=resample,
            n_resamples=k,
            candidates=cands,
            class_thresholds=None
            if self.class_thresholds_ is None
            else {names[i]: float(t) for i, t in enumerate(self.class_thresholds_)},
            **guard,
        )
        return self

    def _resamples(self, p: np.ndarray) -> tuple[str, int, np.ndarray | None]:
        """(how the paired resamples are drawn, how many, their item weights): K models' probabilities are
        their own resamples (no weights); otherwise folds or bootstrap draws over the items."""
        if p.ndim == 3:
            if p.shape[0] < 2:
                raise PolicyError("a paired t-test across models needs at least 2 models")
            return "models", p.shape[0], None
        if self.resample == "models":
            raise PolicyError("resample='models' needs K x N x C probabilities from K models")
        rng = np.random.default_rng(self.random_state)
        return self.resample, self.n_resamples, resample_weights(p.shape[0], self.resample, self.n_resamples, rng)

    def _per_class_thresholds(self, curves: "_Curves", pred: np.ndarray, c: int, k: int, resample: str) -> np.ndarray:
        """One threshold per predicted class by the same rule; the overall one where a class has too few items."""
        out = np.full(c, self.threshold_)
        for cls in range(c):
            items = np.flatnonzero(pred == cls)
            if len(items) < max(self.min_class_items, k):
                continue
            if curves.weights is not None and np.any(curves.weights[:, items].sum(1) == 0):
                continue
            cacc, cdef = curves.on(items)
            try:
                j, _, _ = select_threshold(cacc, cdef, curves.grid, self.alpha, resample, self.max_deferral)
            except PolicyError:
                continue
            out[cls] = curves.grid[j]
        return out


@dataclass
class _Curves:
    """Team accuracy per resample and deferral rate against the candidate thresholds, on any subset of items."""

    conf: np.ndarray  # M x N confidence scores
    machine_ok: np.ndarray  # M x N
    human_ok: np.ndarray  # N
    grid: np.ndarray  # T candidate thresholds
    weights: np.ndarray | None  # R x N resample weights; None when the M models are the resamples

    def on(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(accuracy per resample x threshold, deferral per threshold) on `items`."""
        defer = self.conf[:, items, None] < self.grid  # M x n x T
        ok = np.where(defer, self.human_ok[items, None], self.machine_ok[:, items, None]).astype(np.float64)
        if self.weights is None:
            return ok.mean(1), defer.mean((0, 1))
        w = self.weights[:, items]
        return w @ ok[0] / w.sum(1, keepdims=True), defer[0].mean(0)
