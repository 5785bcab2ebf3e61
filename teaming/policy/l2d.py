"""Learning to defer (Mozannar & Sontag, 2020) on frozen features: a head over the model's log-probabilities that
also learns when to defer; compared with the threshold rules in EXPERIMENTS.md. The one policy that needs torch,
in a module of its own so that the others import without it."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator

from teaming._validation import check_probs
from teaming.policy.learned import check_rate, design


class L2D(BaseEstimator):
    """Mozannar & Sontag's cross-entropy surrogate on frozen features: C + 1 outputs (the model's log-probabilities
    plus a linear correction, and a linear defer output) trained on -log p(y) - a(x) log p(defer), where a(x) is
    the human's chance of being right; it answers with its own class outputs and defers where the defer output
    beats the best class."""

    mean_: np.ndarray
    """Fitted: the design's mean per column (standardisation)."""
    scale_: np.ndarray
    """Fitted: the design's standard deviation per column (standardisation)."""
    head_: torch.nn.Module
    """Fitted: the linear C + 1 output head on the standardised design."""

    def __init__(self, *, epochs: int = 100, lr: float = 0.01, weight_decay: float = 0.1, random_state: int = 0):
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.random_state = random_state

    def _x(self, probs: np.ndarray, features: np.ndarray) -> torch.Tensor:
        x = design(probs, features)
        return torch.as_tensor((x - self.mean_) / self.scale_, dtype=torch.float32)

    def fit(self, probs: np.ndarray, features: np.ndarray, y: np.ndarray, human_accuracy: np.ndarray) -> "L2D":
        x = design(probs, features)
        c = check_probs(probs).shape[1]
        h = torch.as_tensor(check_rate("human_accuracy", human_accuracy, len(x)), dtype=torch.float32)
        self.mean_, self.scale_ = x.mean(0), x.std(0) + 1e-6
        xt, yt = self._x(probs, features), torch.as_tensor(np.asarray(y), dtype=torch.long)
        torch.manual_seed(self.random_state)
        head = torch.nn.Linear(xt.shape[1], c + 1)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        base = self._base(probs)
        opt = torch.optim.Adam(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.epochs):
            logp = F.log_softmax(head(xt) + base, 1)
            loss = -(logp.gather(1, yt[:, None])[:, 0] + h * logp[:, c]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.head_ = head.eval()
        return self

    @staticmethod
    def _base(probs: np.ndarray) -> torch.Tensor:
        """The model's log-probabilities, and 0 for the defer output."""
        logp = np.log(np.clip(check_probs(probs), 1e-12, 1))
        return torch.as_tensor(np.column_stack([logp, np.zeros(len(logp))]), dtype=torch.float32)

    @torch.no_grad()
    def _logits(self, probs: np.ndarray, features: np.ndarray) -> np.ndarray:
        return (self.head_(self._x(probs, features)) + self._base(probs)).numpy()

    def predict(self, probs: np.ndarray, features: np.ndarray) -> np.ndarray:
        """The head's own class answers (its classifier part)."""
        return self._logits(probs, features)[:, :-1].argmax(1)

    def defer_score(self, probs: np.ndarray, features: np.ndarray) -> np.ndarray:
        g = self._logits(probs, features)
        return g[:, -1] - g[:, :-1].max(1)
