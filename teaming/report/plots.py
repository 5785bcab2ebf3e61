"""The teaming report's figures, rendered to PNG bytes: team accuracy against threshold, accuracy by bins,
error confusion matrices. (The reliability diagram is the model's own: teaming.model.figures.)"""

from __future__ import annotations

import numpy as np

from teaming._plotting import png, pyplot
from teaming.analysis import BinnedAccuracy
from teaming.policy import PolicyReport


def threshold_curve_png(report: PolicyReport, chosen: float | None = None, title: str = "") -> bytes:
    """Team accuracy (mean with its interval over resamples) and deferral rate against the threshold."""
    plt = pyplot()
    c = report.candidates
    t = np.array([x.threshold for x in c])
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.fill_between(t, [x.ci_low for x in c], [x.ci_high for x in c], alpha=0.25, label="95% interval")
    ax.plot(t, [x.mean_accuracy for x in c], label="team accuracy")
    ax.axhline(report.machine_accuracy, color="tab:red", linestyle=":", label="machine alone")
    ax.axhline(report.human_accuracy, color="tab:green", linestyle=":", label="human alone")
    ax.axvline(report.best_threshold, color="grey", linestyle="--", linewidth=1, label="best by mean")
    ax.axvline(chosen if chosen is not None else report.threshold, color="black", linewidth=1.5, label="chosen")
    lo = min(report.machine_accuracy, report.human_accuracy, min(x.ci_low for x in c))
    ax.set_ylim(max(0.0, lo - 0.02), min(1.0, max(x.ci_high for x in c) + 0.01))
    ax.set_xlabel(f"threshold on {report.score}")
    ax.set_ylabel("team accuracy")
    right = ax.twinx()
    right.plot(t, [x.deferral_rate for x in c], color="tab:orange", alpha=0.8)
    right.set_ylabel("deferral rate", color="tab:orange")
    right.set_ylim(0, 1)
    ax.legend(loc="lower left", fontsize=7)
    ax.set_title(title or "Team accuracy and deferral by threshold")
    return png(fig)


def binned_accuracy_png(series: dict[str, BinnedAccuracy], xlabel: str, title: str = "") -> bytes:
    """Accuracy per bin for several answerers (e.g. human and machine), with their OLS trend lines."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for i, (name, b) in enumerate(series.items()):
        color = f"C{i}"
        used = b.counts > 0
        ax.plot(b.centers[used], b.accuracy[used], marker="o", color=color, label=f"{name} (slope {b.slope:+.2f})")
        if np.isfinite(b.slope):
            ax.plot(b.centers, b.intercept + b.slope * b.centers, color=color, linestyle="--", linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(title)
    return png(fig)


def confusion_png(matrices: dict[str, np.ndarray], classes: list[str], xlabel: str, ylabel: str) -> bytes:
    """Side-by-side heat maps of C x C matrices (shares), one per name."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(4.6 * len(matrices), 4.4), constrained_layout=True)
    axes = np.atleast_1d(axes)
    for ax, (name, m) in zip(axes, matrices.items()):
        im = ax.imshow(m, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(len(classes)), classes, fontsize=7)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.7)
    return png(fig)
