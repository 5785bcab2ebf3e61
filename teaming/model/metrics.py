"""Evaluation metrics for probabilistic classifiers judged against hard labels and human vote distributions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from teaming.model.predict import net_device, to_float

EPS = 1e-12


def _check(probs: np.ndarray, n: int | None = None) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) == 0:
        raise ValueError(f"probabilities must be a non-empty N x C array, got shape {p.shape}")
    if n is not None and len(p) != n:
        raise ValueError(f"{len(p)} rows of probabilities but {n} labels")
    return p


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of items whose top class is the label."""
    p = _check(probs, len(labels))
    return float((p.argmax(1) == np.asarray(labels)).mean())


def cross_entropy(probs: np.ndarray, target: np.ndarray) -> float:
    """Mean cross-entropy (nats) of probs against label ids or target distributions (human vote shares)."""
    p = _check(probs, len(target))
    t = np.asarray(target)
    if t.ndim == 1:
        return float(-np.log(p[np.arange(len(p)), t] + EPS).mean())
    return float(-(t * np.log(p + EPS)).sum(1).mean())


@dataclass
class ReliabilityBins:
    """Equal-width confidence bins: edges, item counts, mean confidence and accuracy per bin."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> ReliabilityBins:
    p = _check(probs, len(labels))
    conf, correct = p.max(1), (p.argmax(1) == np.asarray(labels)).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(which, conf, bins) / counts
        mean_acc = np.bincount(which, correct, bins) / counts
    return ReliabilityBins(edges, counts, mean_conf, mean_acc)


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: count-weighted |accuracy - confidence| over equal-width bins."""
    r = reliability(probs, labels, bins)
    used = r.counts > 0
    return float((r.counts[used] * np.abs(r.accuracy[used] - r.confidence[used])).sum() / r.counts.sum())


def second_best_accuracy(probs: np.ndarray, counts: np.ndarray) -> float:
    """Peterson et al.'s SBA: how often the model's second choice is the humans' second most chosen class.

    Scored over items where people chose at least two classes; ties go to the lower class id.
    """
    p = _check(probs, len(counts))
    c = np.asarray(counts, dtype=np.float64)
    has_second = (c > 0).sum(1) >= 2
    if not has_second.any():
        raise ValueError("no item has a human second choice")
    model_second = np.argsort(-p, axis=1, kind="stable")[:, 1]
    human_second = np.argsort(-c, axis=1, kind="stable")[:, 1]
    return float((model_second == human_second)[has_second].mean())


def multilabel_accuracy(probs: np.ndarray, counts: np.ndarray, min_share: float = 0.0) -> float:
    """Shankar et al.: the top class is right if it is among the acceptable labels, the classes people chose.

    A class is acceptable when its vote share exceeds `min_share` (0: any vote).
    """
    p = _check(probs, len(counts))
    c = np.asarray(counts, dtype=np.float64)
    shares = c / c.sum(1, keepdims=True)
    top = p.argmax(1)
    return float((shares[np.arange(len(p)), top] > min_share).mean())


def fgsm(net: nn.Module, images: torch.Tensor, labels: np.ndarray, eps: float = 4 / 255, batch_size: int = 500) -> dict:
    """Loss and accuracy under a one-step FGSM attack in [0, 1] pixel space, l_inf radius eps."""
    was_training = net.training
    net.eval()
    device = net_device(net)
    y_all = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    loss_sum, correct = 0.0, 0
    for x8, y in zip(images.split(batch_size), y_all.split(batch_size)):
        x = to_float(x8.to(device)).requires_grad_(True)
        y = y.to(device)
        loss = F.cross_entropy(net(x).float(), y)
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            adv = (x + eps * grad.sign()).clamp(0, 1)
            logits = net(adv).float()
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
    net.train(was_training)
    return {"fgsm_loss": loss_sum / len(y_all), "fgsm_accuracy": correct / len(y_all)}


def evaluate_probs(
    probs: np.ndarray, labels: np.ndarray | None = None, counts: np.ndarray | None = None, bins: int = 15
) -> dict:
    """Every metric the inputs allow: hard-label ones with labels, human-label ones with vote counts."""
    out: dict = {"n": int(len(probs))}
    if labels is not None:
        out.update(accuracy=accuracy(probs, labels), nll=cross_entropy(probs, labels), ece=ece(probs, labels, bins))
    if counts is not None:
        soft = np.asarray(counts) / np.asarray(counts).sum(1, keepdims=True)
        out.update(
            human_ce=cross_entropy(probs, soft),
            accuracy_vs_majority=accuracy(probs, np.asarray(counts).argmax(1)),
            second_best_accuracy=second_best_accuracy(probs, counts),
            multilabel_accuracy=multilabel_accuracy(probs, counts),
        )
    return out
