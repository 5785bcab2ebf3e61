"""The figure a model artifact carries: its reliability diagram on held-out items, as PNG bytes."""

from __future__ import annotations

import numpy as np

from teaming._plotting import png, pyplot
from teaming.model.metrics import ece, reliability


def reliability_png(curves: dict[str, np.ndarray], labels: np.ndarray, title: str = "", bins: int = 15) -> bytes:
    """Accuracy against confidence per bin, one line per named set of probabilities, with item counts below."""
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True, constrained_layout=True)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for i, (name, probs) in enumerate(curves.items()):
        r = reliability(probs, labels, bins)
        used = r.counts > 0
        ax.plot(r.confidence[used], r.accuracy[used], marker="o", label=f"{name} (ECE {ece(probs, labels, bins):.3f})")
        centers = (r.edges[:-1] + r.edges[1:]) / 2
        width = (r.edges[1] - r.edges[0]) / (len(curves) + 1)
        hist.bar(centers + (i - (len(curves) - 1) / 2) * width, r.counts, width=width, label=name)
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "Reliability diagram")
    hist.set_yscale("log")
    hist.set_xlabel("confidence (max probability)")
    hist.set_ylabel("items")
    return png(fig)
