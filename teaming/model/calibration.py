"""Temperature scaling: one scalar that makes softmax confidences honest, fitted on held-out data."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def fit_temperature(logits: np.ndarray | torch.Tensor, targets: np.ndarray) -> float:
    """The temperature T > 0 minimising cross-entropy of softmax(logits / T) against targets.

    Targets are label ids (N,) or distributions (N x C), e.g. human vote shares.
    """
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    t = np.asarray(targets)
    if len(z) == 0 or len(z) != len(t):
        raise ValueError(f"need matching, non-empty logits and targets, got {len(z)} and {len(t)}")
    target = torch.as_tensor(np.eye(z.shape[1])[t] if t.ndim == 1 else t, dtype=torch.float64)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -(target * F.log_softmax(z / log_t.exp(), dim=1)).sum(1).mean()
        loss.backward()
        return loss

    opt.step(closure)
    temperature = float(log_t.detach().exp())
    if not np.isfinite(temperature):
        raise ValueError("temperature fit diverged")
    return temperature


def softmax(logits: np.ndarray | torch.Tensor, temperature: float = 1.0) -> np.ndarray:
    """Calibrated probabilities softmax(logits / T) as float64 numpy."""
    z = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    return F.softmax(z / temperature, dim=1).numpy()
