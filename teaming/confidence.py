"""How sure the model is of each item: the confidence scores that deferral thresholds are set on."""

from __future__ import annotations

from typing import Literal

import numpy as np

from teaming._validation import InputError

Score = Literal["max_prob", "margin", "entropy"]
SCORES = ("max_prob", "margin", "entropy")


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
    raise InputError(f"unknown score {score!r}; choose from {SCORES}")
