"""CIFAR-10H deferral with a model artifact on held-out test images: fitted on one half, measured on the other.

The human is one CIFAR-10H annotator sampled per image, drawn 20 times (seeds 0..19). For each draw, over 20
random half splits a policy is fitted (paired t-tests; optionally a deferral cap) and scored; printed as means
over the draws with 95% intervals, next to the best threshold in hindsight.
Usage: python experiments/cifar10h_deferral.py [--model models/cifar10h-default] [--items 7000:10000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from teaming._validation import PolicyError
from teaming.analysis import best_in_hindsight, cross_fitted_team, mean_interval, oracle_accuracy
from teaming.datasets import load_cifar10h, load_default_test
from teaming.items import parse_items
from teaming.model import load_artifact
from teaming.policy import CertifiedPolicy, ThresholdPolicy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/cifar10h-default")
    p.add_argument("--items", default="7000:10000")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="first seed of the sampled annotators")
    p.add_argument("--draws", type=int, default=20, help="sampled-annotator draws to average over")
    args = p.parse_args()
    art = load_artifact(args.model)
    test = load_default_test()
    idx = parse_items(args.items, len(test))
    probs = art.predict_proba(test.images[torch.from_numpy(idx)])
    y = test.labels[idx]
    votes = load_cifar10h().subset(idx)
    pred = probs.argmax(1)
    seeds = range(args.seed, args.seed + args.draws)
    humans = [votes.sample(s) for s in seeds]
    print(
        f"{art.meta.name} on {len(idx)} items {args.items}; human = one sampled CIFAR-10H annotator per image, "
        f"{args.draws} draws (seeds {seeds.start}..{seeds.stop - 1}); means with 95% intervals over the draws"
    )
    print(f"machine alone {(pred == y).mean():.4f}")
    print(f"human alone {mean_interval([(h == y).mean() for h in humans])}")
    print(f"oracle bound {mean_interval([oracle_accuracy(pred, h, y) for h in humans])}")
    failures = []

    def certified(target: float):
        """Learn then Test at `target`; where no threshold certifies it on a half, that half defers everything."""

        def fit(p, y, h):
            try:
                return CertifiedPolicy(target_accuracy=target, delta=0.05).fit(p, y, h)
            except PolicyError:
                failures.append(target)
                return DeferAll()

        return fit

    variants = {
        "t-test rule": ThresholdPolicy().fit,
        "t-test rule, max 10% deferred": ThresholdPolicy(max_deferral=0.10).fit,
        "certified 98% on auto items": certified(0.98),
        "certified 97% on auto items": certified(0.97),
    }
    for name, fit in variants.items():
        failures.clear()
        teams = [cross_fitted_team(fit, probs, h, y, repeats=args.repeats, seed=s)[0] for h, s in zip(humans, seeds)]
        note = f" (not certifiable on {len(failures)} of {args.repeats * args.draws} halves: all deferred)"
        print(
            f"team, {name}: accuracy {mean_interval([t.accuracy for t in teams])} at "
            f"{np.mean([t.deferral_rate for t in teams]):.1%} deferred, over {args.repeats} splits per draw"
            + (note if failures else "")
        )
    for cap in (None, 0.10):
        best = [best_in_hindsight(probs, h, y, max_deferral=cap) for h in humans]
        label = "any deferral" if cap is None else f"at most {cap:.0%} deferred"
        print(
            f"best threshold in hindsight, {label}: accuracy {mean_interval([b.accuracy for b in best])} at "
            f"{np.mean([b.deferral_rate for b in best]):.1%} deferred"
        )


class DeferAll:
    """What a team does when no threshold certifies its target: every item goes to a person."""

    threshold_ = float("nan")

    def decide(self, probs: np.ndarray) -> np.ndarray:
        return np.ones(len(probs), dtype=bool)


if __name__ == "__main__":
    main()
