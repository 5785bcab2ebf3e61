"""How unfamiliar an image looks to the model, from its penultimate features, in two ways that fail differently:
the Mahalanobis distance to the nearest class mean (Lee et al., 2018; shared shrunk covariance), which finds
noise-like images whose features are large and strange, and a feature norm below the usual, which finds the far
more common photos, textures and flat images the network barely responds to (Mahalanobis alone misses those).

Each is turned into its rank among the training items (a share in [0, 1], growing on past the largest) and the
rarer of the two counts. Fitted with the model on its training items and stored in the artifact; a policy turns
the score into a limit on its own held-out items and defers what lies beyond it with the reason "unfamiliar".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

LEVELS = np.linspace(0, 1, 1001)


def _rank(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Share of training items below each value (from their quantiles); past the largest it grows on, by the
    excess in units of the top half's spread, so the rarest items stay ordered."""
    top, mid = quantiles[-1], quantiles[len(quantiles) // 2]
    return np.interp(values, quantiles, LEVELS) + np.maximum(values - top, 0) / max(top - mid, 1e-12)


@dataclass
class FamiliarityGuard:
    """Class means (C x D), the shared precision matrix (D x D), and the training quantiles of each score
    (2 x 1001; rows: Mahalanobis distance, negative feature norm)."""

    means: np.ndarray
    precision: np.ndarray
    scales: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray | torch.Tensor, labels: np.ndarray, num_classes: int) -> "FamiliarityGuard":
        """Fit on N x D training features and their N class ids."""
        f = np.asarray(features, dtype=np.float64)
        labels = np.asarray(labels)
        present = [c for c in range(num_classes) if (labels == c).any()]
        if len(f) < 2 or not present:
            raise ValueError("the familiarity guard needs labelled training features")
        means = np.stack([f[labels == c].mean(0) for c in present])
        centred = f - means[np.searchsorted(present, labels)]
        precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        guard = cls(means.astype(np.float32), precision.astype(np.float32), np.zeros((2, len(LEVELS))))
        raw = guard.raw_scores(f)
        guard.scales = np.stack([np.quantile(r, LEVELS) for r in raw]).astype(np.float64)
        return guard

    def raw_scores(self, features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(squared Mahalanobis distance to the nearest class mean, negative feature norm) per item."""
        f = torch.as_tensor(np.asarray(features, dtype=np.float32))
        means, prec = torch.from_numpy(self.means), torch.from_numpy(self.precision)
        fp, mp = f @ prec, means @ prec
        d = (fp * f).sum(1, keepdim=True) - 2 * fp @ means.T + (mp * means).sum(1)
        maha = d.min(1).values.clamp_min(0).numpy().astype(np.float64)
        return maha, -f.norm(dim=1).numpy().astype(np.float64)

    def score(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Unfamiliarity per item: the larger rank of its two scores among the training items (0.99 = rarer than
        99% of them; above 1 past all of them). Higher = less familiar."""
        return self.combine(self.raw_scores(features))

    def combine(self, raw: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """`score` from `raw_scores` output: the larger of the two ranks."""
        return np.max([_rank(r, q) for r, q in zip(raw, self.scales.astype(np.float64))], axis=0)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(getattr(self, k))) for k in ("means", "precision", "scales")}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "FamiliarityGuard":
        return cls(t["means"].numpy(), t["precision"].numpy(), t["scales"].numpy())
