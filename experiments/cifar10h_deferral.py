"""CIFAR-10H deferral with a model artifact on held-out test images: fitted on one half, measured on the other.

The human is one CIFAR-10H annotator sampled per image (seeded). Over 20 random half splits a policy is fitted
(paired t-tests; optionally a deferral cap) and scored; printed next to the best threshold in hindsight.
Usage: python experiments/cifar10h_deferral.py [--model models/cifar10h-default] [--items 7000:10000]
"""

from __future__ import annotations

import argparse

import torch

from teaming.analysis import best_in_hindsight, cross_fitted_team, oracle_accuracy
from teaming.data import parse_items
from teaming.datasets import load_cifar10h, load_default_test
from teaming.model import load_artifact
from teaming.policy import CertifiedPolicy, ThresholdPolicy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="models/cifar10h-default")
    p.add_argument("--items", default="7000:10000")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    art = load_artifact(args.model)
    test = load_default_test()
    idx = parse_items(args.items, len(test))
    probs = art.predict_proba(test.images[torch.from_numpy(idx)])
    y = test.labels[idx]
    human = load_cifar10h().subset(idx).sample(args.seed)
    pred = probs.argmax(1)
    print(
        f"{art.meta.name} on {len(idx)} items {args.items}; human = one sampled CIFAR-10H annotator (seed {args.seed})"
    )
    print(f"machine alone {(pred == y).mean():.4f}")
    print(f"human alone {(human == y).mean():.4f}")
    print(f"oracle bound {oracle_accuracy(pred, human, y):.4f}")
    variants = {
        "t-test rule": ThresholdPolicy().fit,
        "t-test rule, max 10% deferred": ThresholdPolicy(max_deferral=0.10).fit,
        "certified 98% on auto items": CertifiedPolicy(0.98, 0.05).fit,
    }
    for name, fit in variants.items():
        team, rows = cross_fitted_team(fit, probs, human, y, repeats=args.repeats, seed=args.seed)
        print(
            f"team, {name}: accuracy {team.accuracy:.4f} (sd {rows[:, 1].std():.4f}) at "
            f"{team.deferral_rate:.1%} deferred, threshold {team.threshold:.3f} over {args.repeats} splits"
        )
    for cap in (None, 0.10):
        best = best_in_hindsight(probs, human, y, max_deferral=cap)
        label = "any deferral" if cap is None else f"at most {cap:.0%} deferred"
        print(
            f"best threshold in hindsight, {label}: accuracy {best.accuracy:.4f} at {best.deferral_rate:.1%} "
            f"deferred (threshold {best.threshold:.2f})"
        )


if __name__ == "__main__":
    main()
