"""Prediction sets shown to the reviewers of deferred items: accuracy with and without them, strict and lenient, at
two coverages (EXPERIMENTS.md section 9).

Per seed, a threshold policy is fitted on held-out items 7000..8499 (one sampled CIFAR-10H annotator as the
person) with its conformal sets (teaming.policy.sets, calibrated on the items it defers there); it serves
8500..9999. On each deferred live item a person answers, on the image alone or with the item's set in view:
- blind: a draw from the item's CIFAR-10H votes;
- strict (Straitouri et al.'s model of choosing within a set): a draw from the votes restricted to the set; where
  no vote falls in the set the person says "none of these", and the loop asks another person, blind;
- lenient (an assumption: no study gives its form): a blind draw, which the person replaces, with probability
  `--adherence`, by a draw within the set when it falls outside it.
Accuracies are exact expectations over those draws, item by item: the seeds vary only the policy's fit, so the
intervals are over the deferred items (95% t, mean over seeds) and each comparison is a paired t-test over them
(the largest p of the seeds).

    python experiments/prediction_sets.py --seeds 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from teaming.datasets import load_cifar10h, load_default_test
from teaming.model import load_artifact
from teaming.policy import ThresholdPolicy

FIT, LIVE = np.arange(7000, 8500), np.arange(8500, 10000)


def right_chance(counts: np.ndarray, y: np.ndarray, members: np.ndarray, form: str, adherence: float):
    """Per item: (the chance the person's answer is right, the answers it takes) under `form`."""
    share = counts / counts.sum(1, keepdims=True)
    blind = share[np.arange(len(y)), y]
    if form == "blind":
        return blind, np.ones(len(y))
    in_set = (share * members).sum(1)
    truth_in = members[np.arange(len(y)), y]
    within = np.where(in_set > 0, blind * truth_in / np.maximum(in_set, 1e-12), 0.0)
    if form == "strict":  # nothing of the votes in the set: "none of these", and a blind person after
        return np.where(in_set > 0, within, blind), np.where(in_set > 0, 1.0, 2.0)
    kept = np.where(truth_in, blind, (1 - adherence) * blind)  # the own vote, kept where it is in the set
    return kept + adherence * (1 - in_set) * within, np.ones(len(y))


def half_width(x: np.ndarray) -> float:
    """The 95% t-interval's half-width of a mean over items."""
    return float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--coverages", type=float, nargs="+", default=[0.9, 0.95])
    ap.add_argument("--adherence", type=float, default=0.5, help="lenient: chance to move into the set")
    args = ap.parse_args()
    started = time.time()
    images, human = load_default_test(), load_cifar10h()
    idx = np.concatenate([FIT, LIVE])
    probs = load_artifact("models/cifar10h-default").predict_proba(images.images[torch.from_numpy(idx)])
    y, counts = images.labels[idx], human.counts[idx]
    fit, live = slice(0, len(FIT)), slice(len(FIT), None)
    rows: dict[tuple, list] = {}
    for seed in tqdm(range(args.seeds), desc="seeds"):
        sampled = human.subset(idx).sample(np.random.default_rng(seed))
        policy = ThresholdPolicy(random_state=seed).fit(probs[fit], y[fit], sampled[fit])
        defer = policy.decide(probs[live])
        p, yy, cc = probs[live][defer], y[live][defer], counts[live][defer]
        for coverage in args.coverages:
            sets = policy.fit_sets(probs[fit], y[fit], coverage).prediction_sets_
            members = np.zeros_like(p, dtype=bool)
            for k, s in enumerate(sets.members(p)):
                members[k, s] = True
            held = members[np.arange(len(yy)), yy]
            blind = right_chance(cc, yy, members, "blind", args.adherence)[0]
            for form in ("blind", "lenient", "strict"):
                right, asked = right_chance(cc, yy, members, form, args.adherence)
                p_value = stats.ttest_rel(right, blind).pvalue if form != "blind" else np.nan
                figures = (right.mean(), half_width(right), asked.mean(), held.mean(), members.sum(1).mean())
                rows.setdefault((coverage, form), []).append((*figures, defer.mean(), (right - blind).mean(), p_value))
    print(f"{args.seeds} seeds, {time.time() - started:.0f} s; means over seeds, intervals over deferred items\n")
    print("| coverage stated | view | accuracy on deferred items | answers per deferred item | set holds the label "
          "| set size | deferral |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for (coverage, form), runs in rows.items():
        r = np.array(runs, dtype=np.float64)
        mean = r.mean(0)
        print(
            f"| {coverage:.0%} | {form} | {mean[0]:.4f} ± {mean[1]:.4f} | "
            + " | ".join(f"{v:.3f}" for v in mean[2:6])
            + " |"
        )
    for (coverage, form), runs in rows.items():
        if form != "blind":
            r = np.array(runs, dtype=np.float64)
            gain, worst = 100 * r[:, 6].mean(), r[:, 7].max()
            said = f"{gain:+.2f} points on deferred items (paired t over items, p <= {worst:.2g})"
            print(f"{coverage:.0%} {form} against blind: {said}")


if __name__ == "__main__":
    main()
