"""Does outlier exposure in training help the familiarity guard? The shipped net fine-tuned further on its own
training items, without and with a loss that pushes synthetic outliers (`teaming.model.outliers`) toward uniform
probabilities, each kept `--share` of the way (WiSE-FT) and given a new guard fitted on outliers of the same mix.
The items' targets are their human labels or, with `--targets init`, the shipped net's own probabilities
(self-distillation: does keeping its answers keep its accuracy?); `--ensemble` adds each variant averaged with the
shipped net (a two-net ensemble, mean logits, the guard on both nets' features) and each variant guarding the
shipped net (the shipped net's answers; the guard on both nets' features and the variant's energy).
One line per variant (weight x outlier mix x seed x targets): accuracy and CE to CIFAR-10H on the model's
calibration items (temperature cross-fitted in two halves); then, with the guard limit set to add `--budget`
deferral on 7000..8499 under the shipped policy's threshold, on 8500..9999 the deferral it adds, the team's
expected accuracy (one sampled annotator answers what is deferred) and its deferral, and the share of each probe
set deferred. The probe sets fit nothing. Mixes: `default` (`outliers.KINDS`), `objects` (without the texture-like
kinds).

    python experiments/outlier_exposure.py --weights 0,0.25 --mixes objects,default --seeds 0,1,2 --bf16
    python experiments/outlier_exposure.py --weights 0.25 --mixes default --targets human,init --ensemble
    python experiments/outlier_exposure.py --weights 0.25 --mixes default --seeds 0,1 --ensemble --bf16
    # 1.5 min a variant on 2 AMX cores in bf16, 3 to 6 in fp32 on AVX2
"""

from __future__ import annotations

import argparse
import copy
import itertools
import time
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from teaming.datasets import load_cifar10h, load_default_test
from teaming.model import load_artifact, outliers
from teaming.model.calibration import fit_temperature, softmax
from teaming.model.metrics import accuracy, cross_entropy
from teaming.model.predict import predict_outputs
from teaming.model.recipe import fit_guard, split_calibration
from teaming.model.train import TrainConfig, train
from teaming.model.weights import interpolate_weights
from teaming.policy import load_policy
from teaming.probes import unfamiliar_sets

MIXES = {"default": outliers.KINDS, "objects": {"close_ups": 2, "patch_shuffled": 2, "mosaics": 2, "noised": 1}}


@contextmanager
def outlier_mix(kinds: dict[str, int]):
    """Training and the guard draw their synthetic outliers in these proportions while inside."""
    saved, outliers.KINDS = outliers.KINDS, kinds
    try:
        yield
    finally:
        outliers.KINDS = saved


def crossfit_ce(logits: torch.Tensor, soft: np.ndarray) -> float:
    """CE to the human distributions, each half scored at the temperature fitted on the other half."""
    half = np.arange(len(soft)) % 2 == 0
    total = 0.0
    for a, b in ((half, ~half), (~half, half)):
        total += cross_entropy(softmax(logits[b], fit_temperature(logits[a], soft[a])), soft[b]) * b.sum()
    return total / len(soft)


class Pair(nn.Module):
    """Two nets as one: mean logits, both nets' features side by side (what `predict_outputs` needs)."""

    def __init__(self, a: nn.Module, b: nn.Module) -> None:
        super().__init__()
        self.a, self.b, self.width = a, b, a.head.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a.features(x), self.b.features(x)], 1)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.a.classify(f[:, : self.width]) + self.b.classify(f[:, self.width :]))


class Guarded(Pair):
    """The first net's answers; the guard reads both nets' features and the second net's energy (its logits'
    log-sum-exp, which outlier exposure trains low on outliers)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        fb = self.b.features(x)
        return torch.cat([self.a.features(x), fb, self.b.classify(fb).logsumexp(1, keepdim=True)], 1)

    def classify(self, f: torch.Tensor) -> torch.Tensor:
        return self.a.classify(f[:, : self.width])


def judge(net, temperature: float, guard, policy, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(deferred as unsure by the policy, unfamiliarity, predicted class) per image."""
    logits, feats = predict_outputs(net, images, tta=True)
    probs = softmax(logits, temperature)
    return policy.decide(probs), guard.score(feats), probs.argmax(1)


def score(net, images, targets, cal_images, cal_soft, probes, policy, test, human, budget: float) -> str:
    """One table row's figures (after the variant's name) for a net: fit its guard and temperature, then judge."""
    guard = fit_guard(net, images, targets, human.counts.shape[1], tta=True)
    cal_logits, _ = predict_outputs(net, cal_images, tta=True)
    t = fit_temperature(cal_logits, cal_soft)
    unsure, unfamiliar, _ = judge(net, t, guard, policy, test.images[7000:8500])
    limit = np.sort(unfamiliar[~unsure])[::-1][int(budget * (~unsure).sum())]
    unsure_e, unfamiliar_e, pred = judge(net, t, guard, policy, test.images[8500:10000])
    deferred = unsure_e | (unfamiliar_e > limit)
    y = test.labels[8500:10000]
    person_right = human.subset(slice(8500, 10000)).chance_right(y)
    team = np.where(deferred, person_right, pred == y).mean()
    shares = [np.mean(u | (f > limit)) for u, f, _ in (judge(net, t, guard, policy, x) for x in probes.values())]
    acc = accuracy(softmax(cal_logits, t), cal_soft.argmax(1))
    return (
        f"{acc:.4f} | {crossfit_ce(cal_logits, cal_soft):.4f} | +{deferred.mean() - unsure_e.mean():.1%} | "
        f"{team:.2%} at {deferred.mean():.1%} | " + " | ".join(f"{s:.1%}" for s in shares)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/cifar10h-default")
    ap.add_argument("--weights", default="0,0.25", help="outlier-exposure weights; 0 = the same fine-tune without")
    ap.add_argument("--mixes", default="objects,default", help=f"outlier mixes, of {', '.join(MIXES)}")
    ap.add_argument("--seeds", default="0", help="training seeds")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast in training (fast on AMX CPUs and GPUs)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--share", type=float, default=0.5, help="WiSE-FT share kept of each fine-tune")
    ap.add_argument("--budget", type=float, default=0.02, help="deferral the guard may add on 7000..8499")
    ap.add_argument("--targets", default="human", help="human (CIFAR-10H) and/or init (the shipped net's own)")
    ap.add_argument(
        "--ensemble", action="store_true", help="also each variant averaged with the shipped net, and guarding it"
    )
    args = ap.parse_args()
    art = load_artifact(args.model)
    policy = load_policy(f"{args.model}/policy.json")
    test, human = load_default_test(), load_cifar10h()
    recorded = art.meta.training["config"]
    fit_pos, cal_pos = split_calibration(7000, 0.1, recorded["seed"])
    images, targets = test.images[torch.from_numpy(fit_pos)], human.subset(fit_pos)
    cal_images, cal_soft = test.images[torch.from_numpy(cal_pos)], human.subset(cal_pos).soft()
    probes = unfamiliar_sets(test.images[:7000], 300)
    config = replace(
        TrainConfig(**{**recorded, "widths": tuple(recorded["widths"])}), epochs=args.epochs, bf16=args.bf16
    )
    print(f"start: {art.meta.name}, fine-tune {args.epochs:g} epochs at lr {config.lr:g}, share {args.share:g}")
    aims = args.targets.split(",")
    fits = {"human": targets}
    if "init" in aims:  # the shipped net's own probabilities on its training items
        fits["init"] = predict_outputs(art.net, images, tta=True)[0].double().softmax(1).numpy()
    judged = (cal_images, cal_soft, probes, policy, test, human, args.budget)
    head = " | ".join(probes)
    print(
        "| outlier weight | mix | seed | targets | cal accuracy | cal CE | added deferral | team, deferred | "
        f"{head} | seconds |"
    )
    print("|---" * (len(probes) + 9) + "|")
    print(f"| shipped net | | | | {score(art.net, images, targets, *judged)} | |", flush=True)
    variants = itertools.product(args.weights.split(","), args.mixes.split(","), args.seeds.split(","))
    for (weight, mix, seed), aim in itertools.product(((float(w), m, int(s)) for w, m, s in variants), aims):
        t0 = time.perf_counter()
        with outlier_mix(MIXES[mix]):
            cfg = replace(config, outlier_exposure=weight, seed=seed)
            tuned = train(images, fits[aim], cfg, init=copy.deepcopy(art.net), num_classes=len(art.classes)).net
            net = interpolate_weights(art.net, tuned, args.share, images)
            seconds = time.perf_counter() - t0
            name = f"{weight:g} | {mix} | {seed} | {aim}"
            print(f"| {name} | {score(net, images, targets, *judged)} | {seconds:.0f} |", flush=True)
            if args.ensemble:
                pair = Pair(art.net, net).eval()
                print(
                    f"| {name}, averaged with the shipped net | {score(pair, images, targets, *judged)} | |", flush=True
                )
                guarded = Guarded(art.net, net).eval()
                print(
                    f"| {name}, guarding the shipped net | {score(guarded, images, targets, *judged)} | |", flush=True
                )


if __name__ == "__main__":
    main()
