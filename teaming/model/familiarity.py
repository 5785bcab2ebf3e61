"""How unfamiliar an image looks to the model, from its penultimate features.

Two distances fail differently: the Mahalanobis distance to the nearest class mean (Lee et al., 2018; shared
shrunk covariance) finds noise-like images whose features are large and strange, and a feature norm below the
usual finds the photos, textures and flat images the network barely responds to. A logistic regression on the
features and both distances, fitted against synthetic outliers made from the training images
(`teaming.model.outliers`), weighs them together and learns what else sets unfamiliar images apart (outlier
exposure); guards fitted without outliers take the rarer of the two distance ranks instead.

A score is its rank among the training items (a share in [0, 1], growing on past the largest). Fitted with the
model on its training items and stored in the artifact; a policy turns the score into a limit on its own
held-out items and defers what lies beyond it with the reason "unfamiliar".

An imported graph that exposes no features gets a `LogitGuard` instead: the energy of its logits (Liu et al.,
2020) or its largest logit (Hendrycks et al., 2022), whichever tells its own images from synthetic outliers
better, ranked the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

LEVELS = np.linspace(0, 1, 1001)
GUARD_FILE = "familiarity.safetensors"


def _rank(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Share of training items below each value (from their quantiles); past the largest it grows on, by the
    excess in units of the top half's spread, so the rarest items stay ordered."""
    top, mid = quantiles[-1], quantiles[len(quantiles) // 2]
    return np.interp(values, quantiles, LEVELS) + np.maximum(values - top, 0) / max(top - mid, 1e-12)


@dataclass
class FamiliarityGuard:
    """Class means (C x D), the shared precision matrix (D x D), the training quantiles of each score (rows:
    Mahalanobis distance, negative feature norm, and the outlier logit where fitted), and the outlier logistic
    regression: its inputs' mean and scale (D + 2) and weights (D + 2, then the intercept)."""

    reads: ClassVar[str] = "features"
    kind: ClassVar[str] = "features"

    means: np.ndarray
    precision: np.ndarray
    scales: np.ndarray
    outlier_mean: np.ndarray | None = None
    outlier_scale: np.ndarray | None = None
    outlier_weights: np.ndarray | None = None

    @classmethod
    def fit(
        cls,
        features: np.ndarray | torch.Tensor,
        labels: np.ndarray,
        num_classes: int,
        outlier_features: np.ndarray | torch.Tensor | None = None,
        regularization: float = 0.1,
    ) -> "FamiliarityGuard":
        """Fit on N x D training features and their N class ids, and on M x D features of synthetic outliers
        where given (`regularization` is the logistic regression's inverse strength C)."""
        f = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        present = [c for c in range(num_classes) if (labels == c).any()]
        if len(f) < 2 or not present:
            raise ValueError("the familiarity guard needs labelled training features")
        means = np.stack([f[labels == c].mean(0) for c in present])
        centred = f - means[np.searchsorted(present, labels)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        guard = cls(means.astype(np.float32), precision.astype(np.float32), np.zeros((2, len(LEVELS))))
        if outlier_features is not None:
            x_in = guard._inputs(f, guard._distances(f))
            x_out = guard._inputs(outlier_features, guard._distances(outlier_features))
            x = np.concatenate([x_in, x_out])
            scaler = StandardScaler().fit(x)
            y = np.r_[np.zeros(len(x_in)), np.ones(len(x_out))]
            lr = LogisticRegression(C=regularization, max_iter=5000).fit(scaler.transform(x), y)
            guard.outlier_mean = scaler.mean_.astype(np.float64)
            guard.outlier_scale = scaler.scale_.astype(np.float64)
            guard.outlier_weights = np.r_[lr.coef_[0], lr.intercept_].astype(np.float64)
        raw = guard.raw_scores(f)
        guard.scales = np.stack([np.quantile(r, LEVELS) for r in raw]).astype(np.float64)
        return guard

    def _distances(self, features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        f = torch.as_tensor(np.asarray(features, dtype=np.float32))
        means, prec = torch.from_numpy(self.means), torch.from_numpy(self.precision)
        fp, mp = f @ prec, means @ prec
        d = (fp * f).sum(1, keepdim=True) - 2 * fp @ means.T + (mp * means).sum(1)
        maha = d.min(1).values.clamp_min(0).numpy().astype(np.float64)
        return maha, -f.norm(dim=1).numpy().astype(np.float64)

    def _inputs(self, features: np.ndarray | torch.Tensor, distances: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """What the outlier regression reads: the features, log(1 + Mahalanobis distance), the negative norm."""
        maha, neg_norm = distances
        return np.c_[np.asarray(features, dtype=np.float64), np.log1p(maha), neg_norm]

    def raw_scores(self, features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, ...]:
        """(squared Mahalanobis distance to the nearest class mean, negative feature norm, and the outlier logit
        where fitted) per item."""
        distances = self._distances(features)
        if self.outlier_weights is None:
            return distances
        x = (self._inputs(features, distances) - self.outlier_mean) / self.outlier_scale
        return *distances, x @ self.outlier_weights[:-1] + self.outlier_weights[-1]

    def score(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Unfamiliarity per item, as a rank among the training items (0.99 = rarer than 99% of them; above 1 past
        all of them). Higher = less familiar."""
        return self.combine(self.raw_scores(features))

    def combine(self, raw: tuple[np.ndarray, ...]) -> np.ndarray:
        """`score` from `raw_scores` output: the outlier logit's rank, or without one the larger distance rank."""
        ranks = [_rank(r, q) for r, q in zip(raw, self.scales.astype(np.float64))]
        return ranks[2] if len(ranks) == 3 else np.max(ranks, axis=0)

    def tensors(self) -> dict[str, torch.Tensor]:
        names = ("means", "precision", "scales", "outlier_mean", "outlier_scale", "outlier_weights")
        return {
            k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in names if getattr(self, k) is not None
        }

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "FamiliarityGuard":
        return cls(**{k: v.numpy() for k, v in t.items()})


LOGIT_SCORES = ("energy", "max-logit")


def logit_score(logits: np.ndarray | torch.Tensor, kind: str) -> np.ndarray:
    """Higher = less familiar: the energy -logsumexp(logits), or the negative largest logit."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    out = -torch.logsumexp(z, 1) if kind == "energy" else -z.max(1).values
    return out.numpy()


@dataclass
class LogitGuard:
    """Unfamiliarity from the logits alone (for graphs without a feature output): `kind`'s score as a rank
    among the fitting items, from their quantiles (`scales`, one row)."""

    reads: ClassVar[str] = "logits"

    kind: str
    scales: np.ndarray

    @classmethod
    def fit(cls, logits: np.ndarray | torch.Tensor, kind: str) -> "LogitGuard":
        if kind not in LOGIT_SCORES:
            raise ValueError(f"unknown logit score {kind!r}; choose from {LOGIT_SCORES}")
        return cls(kind, np.quantile(logit_score(logits, kind), LEVELS)[None])

    def score(self, logits: np.ndarray | torch.Tensor) -> np.ndarray:
        """Unfamiliarity per item, a rank among the fitting items as `FamiliarityGuard.score` gives it."""
        return _rank(logit_score(logits, self.kind), self.scales[0])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"scales": torch.from_numpy(np.ascontiguousarray(self.scales))}


Guard = FamiliarityGuard | LogitGuard


def auroc(familiar: np.ndarray, unfamiliar: np.ndarray) -> float:
    """How well a score (higher = less familiar) tells unfamiliar items from familiar ones: the chance a random
    unfamiliar item scores above a random familiar one (ties count half)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(familiar)), np.ones(len(unfamiliar))]
    return float(roc_auc_score(y, np.r_[familiar, unfamiliar]))


def choose_logit_guard(familiar: np.ndarray, outliers: np.ndarray) -> tuple[LogitGuard, dict[str, float]]:
    """The logit score that tells familiar logits from outliers' best (AUROC), fitted on the familiar ones;
    with every score's AUROC, for the card."""
    aucs = {kind: auroc(logit_score(familiar, kind), logit_score(outliers, kind)) for kind in LOGIT_SCORES}
    return LogitGuard.fit(familiar, max(aucs, key=aucs.get)), aucs


def save_guard(guard: Guard, path: Path) -> None:
    """The guard's arrays as safetensors, its kind in the metadata."""
    save_file(guard.tensors(), str(path), metadata={"kind": guard.kind})


def load_guard(path: Path) -> Guard:
    """A guard written by `save_guard` (files without a kind hold a FamiliarityGuard)."""
    with safe_open(str(path), "pt") as f:
        kind = (f.metadata() or {}).get("kind", "features")
        arrays = {k: f.get_tensor(k).numpy() for k in f.keys()}
    if kind == "features":
        return FamiliarityGuard(**arrays)
    return LogitGuard(kind, arrays["scales"])
