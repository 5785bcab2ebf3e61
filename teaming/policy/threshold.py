"""The threshold rule of Liu et al.: defer as little as possible without a significant loss of team accuracy.

Team accuracy (the model answers above the threshold, a person below it) is measured for every candidate
threshold on K paired resamples of the items; the best candidate by mean wins, then the candidate that defers
the fewest items among those a paired t-test cannot tell apart from the best is chosen.
"""

from __future__ import annotations

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
    """

    kind = "threshold"

    def __init__(
        self,
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

    def _fit_confidence(self, models: np.ndarray, y: np.ndarray, h: np.ndarray) -> np.ndarray:
        """The scores thresholds are chosen on (M x N): the confidence score of each model's probabilities."""
        return confidence(models, self.score)

    def fit(
        self,
        probs: np.ndarray,
        y: np.ndarray,
        human: np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        unfamiliarity: np.ndarray | None = None,
    ) -> "ThresholdPolicy":
        p, y, h = self._inputs(probs, y, human, classes, unfamiliarity)
        if h is None:
            raise PolicyError("the threshold rule weighs the model against people: pass the human answers")
        n, c = p.shape[-2], p.shape[-1]
        grid = self._grid()
        rng = np.random.default_rng(self.random_state)
        if p.ndim == 3:
            resample, k = "models", p.shape[0]
            if k < 2:
                raise PolicyError("a paired t-test across models needs at least 2 models")
            weights = None
        else:
            if self.resample == "models":
                raise PolicyError("resample='models' needs K x N x C probabilities from K models")
            resample, k = self.resample, self.n_resamples
            weights = resample_weights(n, resample, k, rng)
        models = p if p.ndim == 3 else p[None]
        conf = self._fit_confidence(models, y, h)  # M x N
        pred = models.argmax(-1)
        machine_ok = pred == y
        human_ok = h == y

        def curves(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            defer = conf[:, items, None] < grid  # M x n x T
            ok = np.where(defer, human_ok[items, None], machine_ok[:, items, None]).astype(np.float64)
            if weights is None:
                return ok.mean(1), defer.mean((0, 1))
            w = weights[:, items]
            return w @ ok[0] / w.sum(1, keepdims=True), defer[0].mean(0)

        acc, deferral = curves(np.arange(n))
        chosen, best, cands = select_threshold(
            acc, deferral, grid, self.alpha, resample, self.max_deferral, self.min_accuracy
        )
        self.threshold_ = float(grid[chosen])
        self.class_thresholds_ = None
        if self.per_class:
            self.class_thresholds_ = np.full(c, self.threshold_)
            for cls in range(c):
                items = np.flatnonzero(pred[0] == cls)
                if len(items) < max(self.min_class_items, k):
                    continue
                if weights is not None and np.any(weights[:, items].sum(1) == 0):
                    continue
                cacc, cdef = curves(items)
                try:
                    j, _, _ = select_threshold(cacc, cdef, grid, self.alpha, resample, self.max_deferral)
                except PolicyError:
                    continue
                self.class_thresholds_[cls] = grid[j]
        self.resample_ = resample
        unsure = conf < (self.class_thresholds_[pred] if self.class_thresholds_ is not None else self.threshold_)
        guard = self._guard_report(unsure[0], unfamiliarity)
        defer = unsure | self.unfamiliar(unfamiliarity, n)
        rate, accepted, human_acc, team_acc = team_figures(defer, machine_ok, human_ok)
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
            machine_accuracy=float(machine_ok.mean()),
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
