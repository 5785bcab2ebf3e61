"""What every deferral policy shares: the estimator shape (scikit-learn's), `decide`, and one report type.

A policy is fitted as `fit(probs, y, human=None, classes=None)` on held-out items and answers `decide(probs)`
with a mask (True = defer to a person). Fitted attributes end in an underscore: `threshold_`,
`class_thresholds_`, `classes_`, `report_`; `model_` records what the policy was fitted for. Given the model's
unfamiliarity scores at fit time, a policy also fits `unfamiliar_limit_` (a high quantile of them) and defers
every item beyond it with the reason "unfamiliar", however confident the model is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import ClassVar, Sequence

import numpy as np
from sklearn.base import BaseEstimator

from teaming import __version__
from teaming._validation import PolicyError, check_labels, check_probs
from teaming.confidence import SCORES, Score, confidence
from teaming.items import run_positions
from teaming.labels import vote
from teaming.policy.file import FILES
from teaming.policy.sets import PredictionSets, fit_prediction_sets

UNSURE, UNFAMILIAR = "unsure", "unfamiliar"
UNFAMILIAR_QUANTILE = 0.9  # the guard's limit: this quantile of the fitting items' unfamiliarity


@dataclass
class Candidate:
    """One candidate threshold, the statistics the rule judged it by, and whether the rule may choose it.

    `p` is the paired t-test against the best threshold (threshold rule) or the binomial test of the accuracy
    target (certified rule); team figures are present where human answers were given.
    """

    threshold: float
    deferral_rate: float
    p: float
    eligible: bool
    mean_accuracy: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    t: float | None = None
    feasible: bool = True
    accepted: int | None = None
    errors: int | None = None


@dataclass
class PolicyReport:
    """Why a policy chose its threshold: every candidate, the team it makes on the fitting items, and the rule."""

    kind: str
    score: str
    n_items: int
    threshold: float
    deferral_rate: float
    machine_accuracy: float
    accepted_accuracy: float | None
    human_accuracy: float | None
    team_accuracy: float | None
    rule: str
    alpha: float
    best_threshold: float | None = None
    resample: str | None = None
    n_resamples: int | None = None
    candidates: list[Candidate] = field(default_factory=list)
    class_thresholds: dict[str, float] | None = None
    unfamiliar_limit: float | None = None
    unfamiliar_rate: float | None = None  # share of the fitting items beyond the limit that confidence kept

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyReport":
        return cls(**{**d, "candidates": [Candidate(**c) for c in d.get("candidates", [])]})

    def candidate(self, threshold: float) -> Candidate:
        return min(self.candidates, key=lambda c: abs(c.threshold - threshold))


def team_figures(
    defer: np.ndarray, machine_ok: np.ndarray, human_ok: np.ndarray | None
) -> tuple[float, float | None, float | None, float | None]:
    """(deferral rate, machine accuracy on the items it answers, human accuracy, team accuracy)."""
    accepted = float(machine_ok[~defer].mean()) if (~defer).any() else None
    if human_ok is None:
        return float(defer.mean()), accepted, None, None
    team = np.where(defer, human_ok, machine_ok)
    return float(defer.mean()), accepted, float(human_ok.mean()), float(team.mean())


class DeferralPolicy(BaseEstimator, ABC):
    """Defer an item when its confidence score is below the fitted threshold (of its predicted class, if any)."""

    kind: ClassVar[str] = ""
    logged_scores: ClassVar[bool] = False
    """Whether it decides on features the decision log does not keep, so that retune reads its logged scores."""
    score: Score
    candidates: int | Sequence[float]
    unfamiliar_quantile: float

    threshold_: float
    """Fitted: items whose confidence score lies below it are deferred."""
    class_thresholds_: np.ndarray | None = None
    """Fitted: one threshold per predicted class (C), used instead of `threshold_`; None for one threshold."""
    unfamiliar_limit_: float | None = None
    """Fitted: items whose unfamiliarity exceeds it are deferred whatever their confidence; None without a guard."""
    classes_: list[str] | None = None
    """Fitted: the class names, in the order of the probabilities' columns."""
    prediction_sets_: PredictionSets | None = None
    """Fitted by `fit_sets`: the conformal sets a reviewer of a deferred item may be shown; None without."""
    report_: PolicyReport | None = None
    """Fitted: every candidate threshold with its figures and test, and why the chosen one was chosen."""
    model_: dict | None = None
    """Provenance: the model and items the policy was fitted on (set by the caller that fitted it)."""
    created_: str | None = None
    """Provenance: when the policy was fitted (ISO time, set when it is saved)."""

    @abstractmethod
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
    ) -> "DeferralPolicy":
        """Fit on held-out items: probs N x C, reference labels y, the reviewers' answers (N, or N x k), and the
        model's unfamiliarity per item (fits the guard's limit). `features` and `human_accuracy` (the share of
        annotators right per item) feed a learned rejector; the other policies ignore them."""

    @abstractmethod
    def refit(
        self, probs: np.ndarray, y: np.ndarray, human: np.ndarray, *, scores: np.ndarray | None = None, **params
    ) -> "DeferralPolicy":
        """A new policy fitted on audited items with `params` changed, keeping this one's classes and guard (what
        `teaming retune` does). `scores` are the logged confidence scores, for a policy that needs them."""

    def fit_sets(
        self, probs: np.ndarray, y: np.ndarray, coverage: float, *, unfamiliarity=None, features=None
    ) -> "DeferralPolicy":
        """Calibrate prediction sets of `coverage` on the items (of those given) this fitted policy defers as
        unsure: the items they are shown on (an unfamiliar image is unlike any it was calibrated on)."""
        unsure = self.reasons(probs, unfamiliarity=unfamiliarity, features=features) == UNSURE
        self.prediction_sets_ = fit_prediction_sets(probs, y, coverage, unsure)
        return self

    def kept_from(self, fitted: "DeferralPolicy") -> "DeferralPolicy":
        """This refitted policy, with what a refit keeps of the one it came from: its guard and its sets."""
        self.unfamiliar_limit_ = fitted.unfamiliar_limit_
        self.prediction_sets_ = fitted.prediction_sets_
        return self

    def decide_logged(
        self, probs: np.ndarray, unfamiliarity: np.ndarray, scores: np.ndarray | None = None
    ) -> np.ndarray:
        """Deferrals from what the decision log keeps: probabilities and the guard's scores (NaN where none)."""
        return self.decide(probs) | self._beyond_logged(unfamiliarity)

    def _beyond_logged(self, unfamiliarity: np.ndarray) -> np.ndarray:
        return unfamiliarity > (np.inf if self.unfamiliar_limit_ is None else self.unfamiliar_limit_)

    def check_params(self) -> None:
        """Raise PolicyError on settings no data could fix (called by fit, and by the CLI before loading data)."""
        if self.score not in SCORES:
            raise PolicyError(f"unknown score {self.score!r}; choose from {SCORES}")
        if not 0.5 <= self.unfamiliar_quantile <= 1:
            raise PolicyError(f"unfamiliar_quantile must lie in [0.5, 1], got {self.unfamiliar_quantile}")

    def _inputs(
        self,
        probs: np.ndarray,
        y: np.ndarray,
        human: np.ndarray | None,
        classes: Sequence[str] | None,
        unfamiliarity: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Checked (probs, y, one human answer per item or None); records the class names and fits the guard."""
        self.check_params()
        p = check_probs(probs)
        n, c = p.shape[-2], p.shape[-1]
        y = check_labels(y, n, c, "y (reference labels)")
        if y.ndim != 1:
            raise PolicyError(f"y must hold one reference label per item, got shape {y.shape}")
        h = None if human is None else vote(check_labels(human, n, c, "human answers"), c)
        if classes is not None and len(classes) != c:
            raise PolicyError(f"{len(classes)} class names for {c} probability columns")
        self.classes_ = list(classes) if classes is not None else None
        self.unfamiliar_limit_ = None
        if unfamiliarity is not None:
            u = self._unfamiliarity(unfamiliarity, n)
            self.unfamiliar_limit_ = float(np.quantile(u, self.unfamiliar_quantile))
        self.created_ = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return p, y, h

    def _grid(self) -> np.ndarray:
        c = self.candidates
        grid = np.linspace(0, 1, c) if isinstance(c, int) else np.asarray(c, float)
        if grid.ndim != 1 or len(grid) < 2 or not np.all(np.isfinite(grid)):
            raise PolicyError("candidates must be an int >= 2 or a list of at least two finite thresholds")
        return np.unique(grid)

    def confidence(self, probs: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        """The score compared with the threshold, per item (higher = let the model answer)."""
        return confidence(check_probs(probs), self.score)

    @staticmethod
    def _unfamiliarity(values: np.ndarray, n: int) -> np.ndarray:
        u = np.asarray(values, dtype=np.float64)
        if u.shape != (n,) or not np.all(np.isfinite(u)):
            raise PolicyError(f"unfamiliarity must be {n} finite scores, one per item, got shape {u.shape}")
        return u

    def unfamiliar(self, unfamiliarity: np.ndarray | None, n: int) -> np.ndarray:
        """True where an item lies beyond the fitted limit (all False without a limit or without scores)."""
        if unfamiliarity is None or self.unfamiliar_limit_ is None:
            return np.zeros(n, dtype=bool)
        return self._unfamiliarity(unfamiliarity, n) > self.unfamiliar_limit_

    def decide(
        self, probs: np.ndarray, *, unfamiliarity: np.ndarray | None = None, features: np.ndarray | None = None
    ) -> np.ndarray:
        """Boolean mask over items: True = defer to a person (unsure, or unfamiliar when scores are given)."""
        return self.reasons(probs, unfamiliarity=unfamiliarity, features=features) != ""

    def reasons(
        self, probs: np.ndarray, *, unfamiliarity: np.ndarray | None = None, features: np.ndarray | None = None
    ) -> np.ndarray:
        """Why each item is deferred: "unfamiliar", "unsure" (confidence below the threshold) or "" (answered)."""
        return self.judge(probs, unfamiliarity=unfamiliarity, features=features)[0]

    def judge(
        self, probs: np.ndarray, *, unfamiliarity: np.ndarray | None = None, features: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(`reasons`, the score each item's confidence was compared with the threshold on), in one pass."""
        if not hasattr(self, "threshold_"):
            raise PolicyError("this policy is not fitted; call fit() or load one")
        p = check_probs(probs)
        if p.ndim != 2:
            raise PolicyError(f"decide takes N x C probabilities, got {p.shape}")
        conf = self.confidence(p, features)
        if self.class_thresholds_ is not None:
            if p.shape[1] != len(self.class_thresholds_):
                raise PolicyError(f"policy has {len(self.class_thresholds_)} class thresholds, probs {p.shape[1]}")
            unsure = conf < self.class_thresholds_[p.argmax(1)]
        else:
            unsure = conf < self.threshold_
        out = np.where(unsure, UNSURE, "").astype(object)
        out[self.unfamiliar(unfamiliarity, len(p))] = UNFAMILIAR
        return out, conf

    def _guard_report(self, unsure: np.ndarray, unfamiliarity: np.ndarray | None) -> dict:
        """The guard's report fields: its limit and the share of items it defers beyond the confidence rule."""
        if self.unfamiliar_limit_ is None:
            return {}
        extra = self.unfamiliar(unfamiliarity, len(unsure)) & ~unsure
        return {"unfamiliar_limit": self.unfamiliar_limit_, "unfamiliar_rate": float(extra.mean())}

    def json_params(self) -> dict:
        """get_params() as JSON (what the policy is rebuilt from)."""
        params = self.get_params()
        if not isinstance(params.get("candidates"), int):
            params["candidates"] = [float(x) for x in params["candidates"]]
        return params

    def to_dict(self) -> dict:
        """The fitted policy as JSON, with a version id derived from its content (a hand edit changes it)."""
        file = FILES[self.kind](
            params=self.json_params(),
            threshold=self.threshold_,
            class_thresholds=None if self.class_thresholds_ is None else self.class_thresholds_.tolist(),
            classes=self.classes_,
            model=self.model_,
            report=self.report_.to_dict(),
            unfamiliar_limit=self.unfamiliar_limit_,
            prediction_sets=None if self.prediction_sets_ is None else self.prediction_sets_.to_dict(),
            library_version=__version__,
            created=self.created_ or datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **self.extra_body(),
        )
        return file.to_json()

    def extra_body(self) -> dict:
        """What a kind stores beyond the shared fields (a learned rejector's weights); part of the version id."""
        return {}

    def load_extra(self, d: dict) -> None:
        """Read back what `extra_body` stored (the report is already read)."""

    @property
    def version(self) -> str:
        return self.to_dict()["version"]


def fitted_positions(policy: DeferralPolicy, images: str) -> np.ndarray:
    """Positions of `images` the policy was fitted on, as fit-policy records them (none for other image sets)."""
    m = policy.model_ or {}
    return run_positions(m.get("fitted_items") if m.get("images", images) == images else None)


def fitted_for(policy: DeferralPolicy) -> str | None:
    """The model version ('name@created') a policy was fitted for, when it records one (fit-policy does)."""
    m = policy.model_ or {}
    return f"{m['name']}@{m['created']}" if m.get("name") and m.get("created") else None
