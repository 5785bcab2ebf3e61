"""How well a model and its policy send unfamiliar images to people: per probe set, the AUROC of each score
against held-out CIFAR-10 test images, and the share the policy defers with and without its familiarity guard.

Usage: python experiments/unfamiliar.py [--model models/cifar10h-default] [--policy .../policy.json]
           [--items 8500:10000] [--n 300] [--quantiles 0.95,0.9,0.85 --fit-items 7000:8500]
The in-distribution items must be ones the policy was not fitted on (the shipped policy: 7000..8499).
`--quantiles` also refits the policy's guard limit at each quantile of the fitting items' unfamiliarity and
prints what each limit adds to the deferral there (what a user chooses by) and on the other items and sets.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from teaming.datasets import load_default_test
from teaming.items import parse_items
from teaming.model import load_artifact
from teaming.model.calibration import softmax
from teaming.model.predict import predict_outputs
from teaming.policy import load_policy
from teaming.preprocess import resize
from teaming.probes import shifted, unfamiliar_sets


def scores(art, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Unfamiliarity by each score (higher = less familiar) and the calibrated probabilities."""
    logits, feats = predict_outputs(art.net, resize(images, art.meta.input_size), tta=art.meta.tta)
    t = art.meta.temperature
    probs = softmax(logits, t)
    raw = art.guard.raw_scores(feats)
    return {
        "max_prob": -probs.max(1),
        "energy": (-t * torch.logsumexp(logits / t, 1)).numpy(),
        "mahalanobis": raw[0],
        "low_norm": raw[1],
        **({"outlier": raw[2]} if len(raw) == 3 else {}),
        "guard": art.guard.combine(raw),
        "probs": probs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/cifar10h-default")
    ap.add_argument("--policy", default=None, help="default: the model folder's policy.json")
    ap.add_argument("--items", default="8500:10000", help="in-distribution items the policy was not fitted on")
    ap.add_argument("--n", type=int, default=300, help="images per probe set")
    ap.add_argument("--quantiles", default=None, help="guard limits to compare, e.g. 0.95,0.9,0.85")
    ap.add_argument("--fit-items", default="7000:8500", help="the items the policy is refitted on for --quantiles")
    args = ap.parse_args()
    art = load_artifact(args.model)
    if art.guard is None:
        raise SystemExit(f"{args.model} has no familiarity guard (trained before it existed)")
    policy = load_policy(args.policy or f"{args.model}/policy.json")
    test = load_default_test()
    idx = torch.from_numpy(parse_items(args.items, len(test)))
    familiar = test.images[idx]
    ref = scores(art, familiar)

    def deferred(s: dict) -> tuple[float, float]:
        u = s["guard"]
        return float(policy.decide(s["probs"]).mean()), float(policy.decide(s["probs"], unfamiliarity=u).mean())

    base, guarded = deferred(ref)
    print(f"policy {policy.version}, unfamiliar limit {policy.unfamiliar_limit_}")
    print(f"in-distribution ({args.items}): deferred {base:.1%} by confidence alone, {guarded:.1%} with the guard")
    keys = [k for k in ("max_prob", "energy", "mahalanobis", "low_norm", "outlier", "guard") if k in ref]
    titles = {"max_prob": "max-prob", "low_norm": "low feature norm", "outlier": "outlier regression"}
    head = " | ".join(f"AUROC {titles.get(k, k)}" for k in keys)
    print(f"| set | {head} | deferred, confidence only | deferred, with guard |")
    print("|---" * (len(keys) + 3) + "|")
    probes = unfamiliar_sets(test.images[:7000], args.n)  # shuffled pixels of training images, not held-out ones
    sets = {name: scores(art, images) for name, images in probes.items()}
    shifts = {k: scores(art, v) for k, v in shifted(familiar).items() if k != "clean"}
    for name, s in {**sets, **shifts}.items():
        auroc = [roc_auc_score(np.r_[np.zeros(len(ref[k])), np.ones(len(s[k]))], np.r_[ref[k], s[k]]) for k in keys]
        a, b = deferred(s)
        shift = " (shift of the held-out images)" if name in ("jpeg_q50", "grayscale", "resize_32_64_32") else ""
        print(f"| {name}{shift} | " + " | ".join(f"{x:.3f}" for x in auroc) + f" | {a:.1%} | {b:.1%} |", flush=True)
    if args.quantiles:
        compare_limits(art, policy, args, ref, sets)


def compare_limits(art, policy, args, ref: dict, sets: dict[str, dict]) -> None:
    """The policy refitted at each guard quantile: deferral added on its fitting items and on the other items,
    and the share of each probe set (its `scores`) deferred."""
    from sklearn.base import clone

    from teaming.team import load_team

    _, fit = load_team(args.model, "default", "cifar10h", args.fit_items, 1, "hard", 0, "cpu")
    print(
        f"\n| guard quantile | added deferral, fitting items {args.fit_items} | added deferral, {args.items} | "
        + " | ".join(sets)
        + " |"
    )
    print("|---" * (len(sets) + 3) + "|")
    for q in (float(x) for x in args.quantiles.split(",")):
        refit = clone(policy).set_params(unfamiliar_quantile=q)
        refit.fit(fit.probs, fit.y, fit.human, art.classes, unfamiliarity=fit.unfamiliarity)
        added = refit.decide(ref["probs"], unfamiliarity=ref["guard"]).mean() - refit.decide(ref["probs"]).mean()
        shares = " | ".join(f"{refit.decide(s['probs'], unfamiliarity=s['guard']).mean():.1%}" for s in sets.values())
        print(f"| {q:g} | +{refit.report_.unfamiliar_rate:.1%} | +{added:.1%} | {shares} |", flush=True)


if __name__ == "__main__":
    main()
