"""A certified threshold: the model answers only where it is at least `target_accuracy` right, with probability
1 - delta (Learn then Test, exact binomial tests in fixed sequence)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from teaming._validation import PolicyError
from teaming.confidence import Score, confidence
from teaming.policy.base import UNFAMILIAR_QUANTILE, Candidate, DeferralPolicy, PolicyReport, team_figures
from teaming.policy.stats import certify_sequence
from teaming.policy.threshold import ThresholdPolicy


class CertifiedPolicy(DeferralPolicy):
    """The lowest threshold whose auto-answered items are at least `target_accuracy` correct with probability
    1 - delta. Certified on reference labels y alone; human answers, when given, only feed the team figures.

    Fitted attributes are documented on `DeferralPolicy` (`threshold_`, `report_`, ...).

    >>> import numpy as np
    >>> from teaming.policy import CertifiedPolicy
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(0.5, 1.0, 2000)
    >>> y = np.zeros(2000, dtype=int)
    >>> pred = np.where(rng.random(2000) < conf, 0, 1)     # right as often as it is confident: calibrated
    >>> probs = np.stack([np.where(pred == 0, conf, 1 - conf), np.where(pred == 1, conf, 1 - conf)], 1)
    >>> policy = CertifiedPolicy(target_accuracy=0.9, delta=0.05).fit(probs, y)
    >>> 0.8 < policy.threshold_ < 0.95                   # answers only where it is surely 90% right
    True
    >>> policy.report_.accepted_accuracy >= 0.9
    True
    """

    kind = "certified"

    def __init__(
        self,
        *,
        target_accuracy: float = 0.97,
        delta: float = 0.05,
        score: Score = "max_prob",
        candidates: int | Sequence[float] = 101,
        min_accepted: int = 50,
        unfamiliar_quantile: float = UNFAMILIAR_QUANTILE,
    ) -> None:
        self.target_accuracy = target_accuracy
        self.delta = delta
        self.score = score
        self.candidates = candidates
        self.min_accepted = min_accepted
        self.unfamiliar_quantile = unfamiliar_quantile

    def check_params(self) -> None:
        super().check_params()
        if not 0 < self.target_accuracy < 1:
            raise PolicyError(f"target_accuracy must lie strictly between 0 and 1, got {self.target_accuracy}")
        if not 0 < self.delta < 1:
            raise PolicyError(f"delta must lie strictly between 0 and 1, got {self.delta}")

    def refit(
        self, probs: np.ndarray, y: np.ndarray, human: np.ndarray, *, scores: np.ndarray | None = None, **params
    ) -> ThresholdPolicy:
        """The audits hold people's answers, so the log is retuned with the threshold rule (t-tests), its
        settings `params`, keeping this policy's classes, guard and sets."""
        return ThresholdPolicy(**params).fit(probs, y, human, self.classes_).kept_from(self)

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
    ) -> "CertifiedPolicy":
        p, y, h = self._inputs(probs, y, human, classes, unfamiliarity)
        if p.ndim != 2:
            raise PolicyError(f"CertifiedPolicy takes N x C probabilities, got {p.shape}")
        grid = self._grid()
        conf = confidence(p, self.score)
        machine_ok = p.argmax(1) == y
        accepted = conf[:, None] >= grid
        n_acc = accepted.sum(0)
        errors = (accepted & ~machine_ok[:, None]).sum(0)
        pvals, certified = certify_sequence(n_acc, errors, self.target_accuracy, self.delta, self.min_accepted)
        if not certified.any():
            raise PolicyError(
                f"no threshold certifies {self.target_accuracy:.2%} accuracy on auto-answered items "
                f"at delta {self.delta}: lower the target or add calibration items"
            )
        chosen = int(np.flatnonzero(certified).min())
        self.threshold_ = float(grid[chosen])
        self.class_thresholds_ = None
        human_ok = None if h is None else h == y
        unsure = conf < self.threshold_
        defer = unsure | self.unfamiliar(unfamiliarity, len(y))
        rate, acc_auto, human_acc, team_acc = team_figures(defer, machine_ok, human_ok)
        self.report_ = PolicyReport(
            kind=self.kind,
            score=self.score,
            n_items=len(y),
            threshold=self.threshold_,
            deferral_rate=rate,
            machine_accuracy=float(machine_ok.mean()),
            accepted_accuracy=acc_auto,
            human_accuracy=human_acc,
            team_accuracy=team_acc,
            rule=f"lowest threshold certified {self.target_accuracy:.2%} accurate on auto-answered items",
            alpha=self.delta,
            candidates=[
                Candidate(
                    threshold=float(g),
                    deferral_rate=float(1 - a / len(y)),
                    p=float(q),
                    eligible=bool(ok),
                    accepted=int(a),
                    errors=int(e),
                )
                for g, a, e, q, ok in zip(grid, n_acc, errors, pvals, certified)
            ],
            **self._guard_report(unsure, unfamiliarity),
        )
        return self
