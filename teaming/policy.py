"""Deferral policies: answer when the model is confident, hand the rest to a person.

`ThresholdPolicy` picks its threshold as Liu et al. do: team accuracy for every candidate on K paired
resamples, the best by mean, then the lowest-deferral candidate a paired t-test cannot tell apart from it.
`CertifiedPolicy` instead certifies accuracy on the auto-answered items (Learn then Test).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
from scipy import stats

from teaming import __version__
from teaming.labels import HumanLabels

Score = Literal["max_prob", "margin", "entropy"]
Resample = Literal["folds", "bootstrap", "models"]
SCORES = ("max_prob", "margin", "entropy")
FORMAT = "teaming.policy"
FORMAT_VERSION = 1


class PolicyError(ValueError):
    """Input a policy cannot be fitted or applied to; the message says what to change."""


def check_probs(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    """Validate class probabilities (N x C or K x N x C): finite, in [0, 1], rows summing to 1."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim not in (2, 3) or p.shape[-1] < 2 or p.shape[-2] == 0:
        raise PolicyError(f"{name} must be N x C (or K models x N x C) with C >= 2 and N >= 1, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise PolicyError(f"{name} contain NaN or infinite values")
    if p.min() < 0 or p.max() > 1 + 1e-6:
        raise PolicyError(f"{name} must lie in [0, 1]; got values from {p.min():.3g} to {p.max():.3g}")
    sums = p.sum(-1)
    bad = np.abs(sums - 1) > 1e-3
    if bad.any():
        raise PolicyError(
            f"{name} rows must sum to 1 (softmax outputs); {int(bad.sum())} rows sum to e.g. {sums[bad].flat[0]:.4f}"
        )
    return p


def check_labels(labels: np.ndarray, n: int, num_classes: int, name: str) -> np.ndarray:
    """Validate integer class ids: one per item (or N x k reviewers), each in 0..C-1."""
    a = np.asarray(labels)
    if a.ndim not in (1, 2) or len(a) != n:
        raise PolicyError(f"{name} must have one entry per item ({n}), got shape {a.shape}")
    if a.size == 0:
        raise PolicyError(f"{name} is empty")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise PolicyError(f"{name} must be integer class ids (found NaN or fractions)")
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise PolicyError(f"{name} must be integer class ids, got {a.dtype}")
    bad = (a < 0) | (a >= num_classes)
    if bad.any():
        raise PolicyError(f"{name} holds label {int(a[bad].flat[0])}, outside the classes 0..{num_classes - 1}")
    return a.astype(np.int64)


def human_answers(human: np.ndarray, num_classes: int) -> np.ndarray:
    """One answer per item: a single reviewer's (N,), or the majority of k reviewers (N x k).

    Ties go to the tied class named first by the reviewers, so one reviewer's order breaks them.
    """
    h = np.asarray(human)
    if h.ndim == 1:
        return h
    votes = HumanLabels.from_annotators(list(h.T), [str(c) for c in range(num_classes)]).counts
    top = votes == votes.max(1, keepdims=True)
    first_tied = np.argmax(top[np.arange(len(h))[:, None], h], axis=1)
    return h[np.arange(len(h)), first_tied]


def confidence(probs: np.ndarray, score: Score = "max_prob") -> np.ndarray:
    """Confidence in [0, 1] per item (higher = surer): top probability, top-two margin, or 1 - H/log C."""
    p = np.asarray(probs, dtype=np.float64)
    if score == "max_prob":
        return p.max(-1)
    if score == "margin":
        top2 = np.sort(p, axis=-1)[..., -2:]
        return top2[..., 1] - top2[..., 0]
    if score == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            h = -np.where(p > 0, p * np.log(p), 0.0).sum(-1)
        return np.clip(1 - h / np.log(p.shape[-1]), 0.0, 1.0)
    raise PolicyError(f"unknown score {score!r}; choose from {SCORES}")


@dataclass
class Candidate:
    """One threshold's team accuracy over the resamples, and its paired t-test against the best."""

    threshold: float
    deferral_rate: float
    mean_accuracy: float
    ci_low: float
    ci_high: float
    t: float
    p: float
    feasible: bool
    eligible: bool


@dataclass
class PolicyReport:
    """Why the policy chose its threshold: every candidate, the best one, and the team it makes."""

    score: str
    resample: str
    n_resamples: int
    n_items: int
    alpha: float
    max_deferral: float | None
    min_accuracy: float | None
    best_threshold: float
    threshold: float
    machine_accuracy: float
    human_accuracy: float
    team_accuracy: float
    deferral_rate: float
    candidates: list[Candidate] = field(default_factory=list)
    class_thresholds: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PolicyReport":
        return cls(**{**d, "candidates": [Candidate(**c) for c in d.get("candidates", [])]})

    def candidate(self, threshold: float) -> Candidate:
        return min(self.candidates, key=lambda c: abs(c.threshold - threshold))


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
        lo, hi = mean - half, mean + half
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
            float(thresholds[j]),
            float(deferral[j]),
            float(mean[j]),
            float(lo[j]),
            float(hi[j]),
            float(t[j]),
            float(p[j]),
            bool(feasible[j]),
            bool(eligible[j]),
        )
        for j in range(len(thresholds))
    ]
    return chosen, best, cands


class _Policy(ABC):
    """What both policies share: score, decide, JSON persistence with a content-derived version id."""

    kind = ""
    score: Score
    threshold_: float
    class_thresholds_: np.ndarray | None = None
    classes_: list[str] | None = None
    model_: dict | None = None
    report_: PolicyReport | dict

    def check_params(self) -> None:
        """Raise PolicyError on settings no data could fix."""
        if self.score not in SCORES:
            raise PolicyError(f"unknown score {self.score!r}; choose from {SCORES}")

    def _grid(self, candidates: int | Sequence[float]) -> np.ndarray:
        grid = np.linspace(0, 1, candidates) if isinstance(candidates, int) else np.asarray(candidates, float)
        if grid.ndim != 1 or len(grid) < 2 or not np.all(np.isfinite(grid)):
            raise PolicyError("candidates must be an int >= 2 or a list of at least two finite thresholds")
        return np.unique(grid)

    def confidence(self, probs: np.ndarray) -> np.ndarray:
        return confidence(check_probs(probs), self.score)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Boolean mask over items: True = defer to a person."""
        if not hasattr(self, "threshold_"):
            raise PolicyError("this policy is not fitted; call fit() or load one")
        p = check_probs(probs)
        if p.ndim != 2:
            raise PolicyError(f"decide takes N x C probabilities, got {p.shape}")
        conf = confidence(p, self.score)
        if self.class_thresholds_ is not None:
            if p.shape[1] != len(self.class_thresholds_):
                raise PolicyError(f"policy has {len(self.class_thresholds_)} class thresholds, probs {p.shape[1]}")
            return conf < self.class_thresholds_[p.argmax(1)]
        return conf < self.threshold_

    @abstractmethod
    def params(self) -> dict:
        """The constructor arguments, as JSON (what `policy_from_dict` rebuilds the policy from)."""

    def to_dict(self) -> dict:
        report = self.report_.to_dict() if isinstance(self.report_, PolicyReport) else self.report_
        body = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "params": self.params(),
            "threshold": self.threshold_,
            "class_thresholds": None if self.class_thresholds_ is None else self.class_thresholds_.tolist(),
            "classes": self.classes_,
            "model": self.model_,
            "report": report,
        }
        digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=float).encode()).hexdigest()[:12]
        return {
            **body,
            "version": f"{self.kind}-{digest}",
            "library_version": __version__,
            "created": getattr(self, "created_", None) or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    @property
    def version(self) -> str:
        return self.to_dict()["version"]

    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2, default=float)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        return path


class ThresholdPolicy(_Policy):
    """Defer items whose confidence is below a threshold chosen by paired t-tests (Liu et al.).

    fit(probs, human, y): probs N x C calibrated probabilities (or K x N x C from K models, which then are the
    paired resamples), human the reviewer answers (N, or N x k reviewers -> majority), y the reference labels.
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

    def params(self) -> dict:
        c = self.candidates if isinstance(self.candidates, int) else [float(x) for x in self.candidates]
        return dict(
            score=self.score,
            alpha=self.alpha,
            resample=self.resample,
            n_resamples=self.n_resamples,
            max_deferral=self.max_deferral,
            min_accuracy=self.min_accuracy,
            per_class=self.per_class,
            min_class_items=self.min_class_items,
            candidates=c,
            random_state=self.random_state,
        )

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

    def fit(
        self, probs: np.ndarray, human: np.ndarray, y: np.ndarray, classes: Sequence[str] | None = None
    ) -> "ThresholdPolicy":
        self.check_params()
        p = check_probs(probs)
        n, c = p.shape[-2], p.shape[-1]
        y = check_labels(y, n, c, "y (reference labels)")
        if y.ndim != 1:
            raise PolicyError(f"y must hold one reference label per item, got shape {y.shape}")
        h = human_answers(check_labels(human, n, c, "human answers"), c)
        if classes is not None and len(classes) != c:
            raise PolicyError(f"{len(classes)} class names for {c} probability columns")
        grid = self._grid(self.candidates)
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
        conf = confidence(models, self.score)  # M x N
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

        everything = np.arange(n)
        acc, deferral = curves(everything)
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
        self.classes_ = list(classes) if classes is not None else None
        self.resample_ = resample
        self.created_ = datetime.now(timezone.utc).isoformat(timespec="seconds")
        defer = conf < (self.class_thresholds_[pred] if self.class_thresholds_ is not None else self.threshold_)
        team = np.where(defer, human_ok, machine_ok)
        if self.per_class and self.min_accuracy is not None and team.mean() < self.min_accuracy:
            raise PolicyError(
                f"per-class thresholds give team accuracy {team.mean():.2%}, below min_accuracy {self.min_accuracy:.2%}"
            )
        names = self.classes_ or [str(i) for i in range(c)]
        self.report_ = PolicyReport(
            score=self.score,
            resample=resample,
            n_resamples=k,
            n_items=n,
            alpha=self.alpha,
            max_deferral=self.max_deferral,
            min_accuracy=self.min_accuracy,
            best_threshold=float(grid[best]),
            threshold=self.threshold_,
            machine_accuracy=float(machine_ok.mean()),
            human_accuracy=float(human_ok.mean()),
            team_accuracy=float(team.mean()),
            deferral_rate=float(defer.mean()),
            candidates=cands,
            class_thresholds=None
            if self.class_thresholds_ is None
            else {names[i]: float(t) for i, t in enumerate(self.class_thresholds_)},
        )
        return self


class CertifiedPolicy(_Policy):
    """The lowest threshold whose auto-answered items are at least `target_accuracy` correct with
    probability 1 - delta (Learn then Test: exact binomial p-values, fixed-sequence testing from the highest
    threshold that auto-answers at least `min_accepted` items downwards; the order depends on scores only).
    """

    kind = "certified"

    def __init__(
        self,
        target_accuracy: float = 0.97,
        delta: float = 0.05,
        score: Score = "max_prob",
        candidates: int | Sequence[float] = 101,
        min_accepted: int = 50,
    ) -> None:
        self.target_accuracy = target_accuracy
        self.delta = delta
        self.score = score
        self.candidates = candidates
        self.min_accepted = min_accepted

    def params(self) -> dict:
        c = self.candidates if isinstance(self.candidates, int) else [float(x) for x in self.candidates]
        return dict(
            target_accuracy=self.target_accuracy,
            delta=self.delta,
            score=self.score,
            candidates=c,
            min_accepted=self.min_accepted,
        )

    def check_params(self) -> None:
        super().check_params()
        if not 0 < self.target_accuracy < 1:
            raise PolicyError(f"target_accuracy must lie strictly between 0 and 1, got {self.target_accuracy}")
        if not 0 < self.delta < 1:
            raise PolicyError(f"delta must lie strictly between 0 and 1, got {self.delta}")

    def fit(
        self,
        probs: np.ndarray,
        y: np.ndarray,
        human: np.ndarray | None = None,
        classes: Sequence[str] | None = None,
    ) -> "CertifiedPolicy":
        """Certify on labelled items (y); human answers, when given, only feed the report's team accuracy."""
        self.check_params()
        p = check_probs(probs)
        if p.ndim != 2:
            raise PolicyError(f"CertifiedPolicy takes N x C probabilities, got {p.shape}")
        n, c = p.shape
        y = check_labels(y, n, c, "y (reference labels)")
        grid = self._grid(self.candidates)
        conf = confidence(p, self.score)
        wrong = p.argmax(1) != y
        accepted = conf[:, None] >= grid
        n_acc = accepted.sum(0)
        errors = (accepted & wrong[:, None]).sum(0)
        # H0: error rate on accepted items > 1 - target; a small binomial tail rejects it (certifies).
        pvals = np.where(n_acc > 0, stats.binom.cdf(errors, np.maximum(n_acc, 1), 1 - self.target_accuracy), 1.0)
        certified = np.zeros(len(grid), bool)
        start = np.flatnonzero(n_acc >= self.min_accepted)
        if start.size == 0:
            raise PolicyError(f"no threshold auto-answers {self.min_accepted} items; lower min_accepted")
        for j in range(int(start.max()), -1, -1):
            if pvals[j] > self.delta:
                break
            certified[j] = True
        if not certified.any():
            raise PolicyError(
                f"no threshold certifies {self.target_accuracy:.2%} accuracy on auto-answered items "
                f"at delta {self.delta}: lower the target or add calibration items"
            )
        chosen = int(np.flatnonzero(certified).min())
        self.threshold_ = float(grid[chosen])
        self.class_thresholds_ = None
        self.classes_ = list(classes) if classes is not None else None
        self.created_ = datetime.now(timezone.utc).isoformat(timespec="seconds")
        defer = conf < self.threshold_
        report = {
            "score": self.score,
            "target_accuracy": self.target_accuracy,
            "delta": self.delta,
            "n_items": n,
            "threshold": self.threshold_,
            "deferral_rate": float(defer.mean()),
            "accepted_accuracy": float(1 - wrong[~defer].mean()) if (~defer).any() else None,
            "machine_accuracy": float(1 - wrong.mean()),
            "candidates": [
                {"threshold": float(g), "accepted": int(a), "errors": int(e), "p": float(q), "certified": bool(ok)}
                for g, a, e, q, ok in zip(grid, n_acc, errors, pvals, certified)
            ],
        }
        if human is not None:
            h = human_answers(check_labels(human, n, c, "human answers"), c)
            report["human_accuracy"] = float((h == y).mean())
            report["team_accuracy"] = float(np.where(defer, h == y, ~wrong).mean())
        self.report_ = report
        return self


def policy_from_dict(d: dict) -> ThresholdPolicy | CertifiedPolicy:
    """Rebuild a fitted policy from its JSON form, checking format and version."""
    if d.get("format") != FORMAT:
        raise PolicyError(f"not a teaming policy (format {d.get('format')!r})")
    if d.get("format_version") != FORMAT_VERSION:
        raise PolicyError(f"policy format version {d.get('format_version')} is not supported ({FORMAT_VERSION})")
    kinds = {"threshold": ThresholdPolicy, "certified": CertifiedPolicy}
    if d.get("kind") not in kinds:
        raise PolicyError(f"unknown policy kind {d.get('kind')!r}")
    policy = kinds[d["kind"]](**d["params"])
    policy.threshold_ = float(d["threshold"])
    ct = d.get("class_thresholds")
    policy.class_thresholds_ = None if ct is None else np.asarray(ct, dtype=np.float64)
    policy.classes_ = d.get("classes")
    policy.model_ = d.get("model")
    policy.created_ = d.get("created")
    policy.report_ = PolicyReport.from_dict(d["report"]) if d["kind"] == "threshold" else d["report"]
    if isinstance(policy, ThresholdPolicy):
        policy.resample_ = policy.report_.resample
    if policy.version != d.get("version"):
        raise PolicyError(f"policy content does not match its version id {d.get('version')!r} (edited by hand?)")
    return policy


def load_policy(path: str | Path) -> ThresholdPolicy | CertifiedPolicy:
    path = Path(path)
    if not path.exists():
        raise PolicyError(f"no policy file at {path}")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise PolicyError(f"{path} is not valid JSON: {err}") from None
    return policy_from_dict(d)
