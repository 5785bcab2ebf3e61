"""Learned deferral: scores that rank items by how much a person would gain over the model on them.

`Rejector` is fitted on held-aside items: one logistic regression predicts whether the model is right, another
the human's chance of being right (from what people said: the share of annotators who were right), both on the
model's penultimate features and its confidence scores; it defers where the second most exceeds the first.
`L2D` is Mozannar & Sontag's (2020) cross-entropy surrogate: a head with C + 1 outputs, classifier and rejector
trained together, the extra output rewarded where the human is right; its class outputs start from the model's
log-probabilities and learn a linear correction, so 1,500 items refine the model rather than replace it.
Both give `defer_score` (higher = defer first) and are compared with the threshold rules in EXPERIMENTS.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from teaming._validation import PolicyError, check_probs
from teaming.confidence import confidence


def design(probs: np.ndarray, features: np.ndarray) -> np.ndarray:
    """The rejector's inputs: the features with the three confidence scores and the log top probability."""
    p = check_probs(probs)
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) != len(p):
        raise PolicyError(f"features must be N x D with N = {len(p)}, got shape {f.shape}")
    scores = [confidence(p, s) for s in ("max_prob", "margin", "entropy")]
    return np.column_stack([f, *scores, np.log(np.clip(p.max(1), 1e-12, 1))])


def check_rate(name: str, a: np.ndarray, n: int) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.shape != (n,) or not np.all((a >= 0) & (a <= 1)):
        raise PolicyError(f"{name} must be {n} rates in [0, 1], got shape {a.shape}")
    return a


@dataclass
class Logistic:
    """A fitted logistic regression on standardised inputs, as plain arrays (stored in the policy's JSON)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(((x - self.mean) / self.scale) @ self.coef + self.intercept)))

    def to_dict(self) -> dict:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Logistic":
        return cls(*(np.asarray(d[k], dtype=np.float64) for k in ("mean", "scale", "coef")), float(d["intercept"]))


def fractional_logistic(x: np.ndarray, target: np.ndarray, C: float, seed: int) -> Logistic:
    """Logistic regression on targets in [0, 1]: each item once as a 1 weighted by its target, once as a 0.
    Where every target is 0 or every one is 1, a constant is all there is to learn."""
    scaler = StandardScaler().fit(x)
    mean, scale = scaler.mean_, scaler.scale_
    t = np.clip(target.mean(), 1e-4, 1 - 1e-4)
    if np.all(target == target[0]):
        return Logistic(mean, scale, np.zeros(x.shape[1]), float(np.log(t / (1 - t))))
    z = scaler.transform(x)
    w = np.r_[target, 1 - target]
    keep = w > 0
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    model.fit(np.vstack([z, z])[keep], np.r_[np.ones(len(z)), np.zeros(len(z))][keep], sample_weight=w[keep])
    return Logistic(mean, scale, model.coef_[0], float(model.intercept_[0]))


class Rejector(BaseEstimator):
    """Defer where the estimated chance that the human is right most exceeds the chance that the model is."""

    machine_: Logistic
    """Fitted: the chance that the model is right, as a logistic function of the design (probabilities, features)."""
    human_: Logistic
    """Fitted: the chance that the human is right, on the same design."""

    def __init__(self, *, C: float = 0.05, random_state: int = 0) -> None:
        self.C = C
        self.random_state = random_state

    def fit(self, probs: np.ndarray, features: np.ndarray, y: np.ndarray, human_accuracy: np.ndarray) -> "Rejector":
        x = design(probs, features)
        machine_ok = (check_probs(probs).argmax(1) == np.asarray(y)).astype(np.float64)
        h = check_rate("human_accuracy", human_accuracy, len(x))
        self.machine_ = fractional_logistic(x, machine_ok, self.C, self.random_state)
        self.human_ = fractional_logistic(x, h, self.C, self.random_state)
        return self

    def defer_score(self, probs: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Estimated human minus machine chance of being right, in [-1, 1]: defer the highest first."""
        x = design(probs, features)
        return self.human_.predict(x) - self.machine_.predict(x)

    def to_dict(self) -> dict:
        return {"machine": self.machine_.to_dict(), "human": self.human_.to_dict()}

    @classmethod
    def from_dict(cls, d: dict, **params) -> "Rejector":
        r = cls(**params)
        r.machine_, r.human_ = Logistic.from_dict(d["machine"]), Logistic.from_dict(d["human"])
        return r
