"""Liu et al.'s threshold rule on a learned score: a rejector (teaming.policy.learned.Rejector) estimates, from the
model's features and probabilities, how likely the model and the person are to be right on each item, and the
policy defers where the person's edge is largest, as far as the paired t-tests allow.

The rejector is cross-fitted on the fitting items (each item scored by a rejector that never saw it) to choose
the threshold, then refitted on all of them. Deciding needs the model's penultimate features.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.model_selection import KFold

from teaming._validation import PolicyError
from teaming.policy.base import UNFAMILIAR_QUANTILE
from teaming.policy.learned import Rejector
from teaming.policy.stats import Resample
from teaming.policy.threshold import ThresholdPolicy


class RejectorPolicy(ThresholdPolicy):
    """Defer items whose learned score (1 - human edge) / 2 lies below a threshold chosen by paired t-tests.

    fit(probs, y, human, classes, unfamiliarity, features, human_accuracy): `features` are the model's penultimate
    features per item; `human_accuracy` the share of annotators right on each item (default: whether `human` is).

    Fitted attributes: `rejector_` (the learned `Rejector`), and those documented on `DeferralPolicy`.

    >>> import numpy as np
    >>> from teaming.policy import RejectorPolicy
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 2, 600)
    >>> hard = rng.random(600) < 0.3                      # the model errs on these, and a feature shows it
    >>> pred = np.where(hard & (rng.random(600) < 0.6), 1 - y, y)
    >>> probs = np.stack([np.where(pred == 0, 0.8, 0.2), np.where(pred == 1, 0.8, 0.2)], 1)  # equally confident
    >>> features = np.stack([hard + rng.normal(0, 0.3, 600), rng.normal(size=600)], 1)
    >>> human = np.where(rng.random(600) < 0.95, y, 1 - y)
    >>> policy = RejectorPolicy(n_resamples=5).fit(probs, y, human, features=features)
    >>> policy.decide(probs[:2], features=np.array([[1.0, 0.0], [0.0, 0.0]])).tolist()  # hard, then easy
    [True, False]
    """

    kind = "rejector"

    def __init__(
        self,
        *,
        alpha: float = 0.05,
        resample: Resample = "folds",
        n_resamples: int = 10,
        max_deferral: float | None = None,
        min_accuracy: float | None = None,
        candidates: int | Sequence[float] = 101,
        C: float = 0.05,
        cv: int = 5,
        random_state: int = 0,
        unfamiliar_quantile: float = UNFAMILIAR_QUANTILE,
    ) -> None:
        super().__init__(
            alpha=alpha,
            resample=resample,
            n_resamples=n_resamples,
            max_deferral=max_deferral,
            min_accuracy=min_accuracy,
            candidates=candidates,
            random_state=random_state,
            unfamiliar_quantile=unfamiliar_quantile,
        )
        self.C = C
        self.cv = cv

    def check_params(self) -> None:
        super().check_params()
        if self.cv < 2:
            raise PolicyError(f"cross-fitting the rejector needs cv >= 2, got {self.cv}")

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
    ) -> "RejectorPolicy":
        if features is None:
            raise PolicyError("a rejector policy learns from the model's features: pass them (Artifact.outputs)")
        if np.ndim(probs) != 2:
            raise PolicyError(f"a rejector policy takes N x C probabilities, got shape {np.shape(probs)}")
        self._fit_data = (np.asarray(features, dtype=np.float64), human_accuracy)
        try:
            super().fit(probs, y, human, classes, unfamiliarity=unfamiliarity)
        finally:
            del self._fit_data
        self.report_.score = "rejector"
        self.report_.rule = "learned rejector, " + self.report_.rule
        return self

    logged_scores = True  # it decides on features the log does not keep: retune reads the scores it logged

    def refit(
        self, probs: np.ndarray, y: np.ndarray, human: np.ndarray, *, scores: np.ndarray | None = None, **params
    ) -> "RejectorPolicy":
        """A copy with this rejector and guard, its threshold chosen again (with `params` changed) on items scored
        by this very rejector: the scores the decision log keeps."""
        if scores is None:
            raise PolicyError("a rejector's threshold is refitted on its logged scores: pass them")
        new = RejectorPolicy(**{**self.get_params(), **params})
        new._fixed = (self.rejector_, np.asarray(scores, dtype=np.float64))
        try:
            ThresholdPolicy.fit(new, probs, y, human, self.classes_)
        finally:
            del new._fixed
        new.kept_from(self)
        new.report_.score = "rejector"
        new.report_.rule = "learned rejector, " + new.report_.rule
        return new

    def decide_logged(
        self, probs: np.ndarray, unfamiliarity: np.ndarray, scores: np.ndarray | None = None
    ) -> np.ndarray:
        return (scores < self.threshold_) | self._beyond_logged(unfamiliarity)

    def _fit_confidence(self, models: np.ndarray, y: np.ndarray, h: np.ndarray) -> np.ndarray:
        if hasattr(self, "_fixed"):
            self.rejector_, scores = self._fixed
            if scores.shape != (len(y),) or not np.all(np.isfinite(scores)):
                raise PolicyError(f"need one logged policy score per item ({len(y)}), got shape {scores.shape}")
            return scores[None]
        features, hacc = self._fit_data
        p = models[0]
        hacc = (h == y).astype(np.float64) if hacc is None else np.asarray(hacc, dtype=np.float64)
        params = {"C": self.C, "random_state": self.random_state}
        oof = np.empty(len(y))
        for a, b in KFold(self.cv, shuffle=True, random_state=self.random_state).split(p):
            oof[b] = Rejector(**params).fit(p[a], features[a], y[a], hacc[a]).defer_score(p[b], features[b])
        self.rejector_ = Rejector(**params).fit(p, features, y, hacc)
        return ((1 - oof) / 2)[None]

    def confidence(self, probs: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        if features is None:
            raise PolicyError("a rejector policy decides on the model's features: pass them with the probabilities")
        return (1 - self.rejector_.defer_score(probs, features)) / 2

    def extra_body(self) -> dict:
        return {"rejector": self.rejector_.to_dict()}

    def load_extra(self, d: dict) -> None:
        super().load_extra(d)
        self.rejector_ = Rejector.from_dict(d["rejector"], C=self.C, random_state=self.random_state)
