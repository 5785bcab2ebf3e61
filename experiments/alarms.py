"""The live loop's alarms on simulated streams (no service): false alarms when nothing changes, next to a
rolling-window t-test checked as often; and, for JPEG-50 and grayscale shifts part-way through, the delay to
each alarm and what the team's accuracy was before it fired and after the fallback, against no fallback.

The world: the shipped default model and policy on held-out items 8500..9999 (the policy was fitted on
7000..8499), drawn with replacement into streams; every item is audited with probability `--audit-rate` by 3
people, each a CIFAR-10H annotator drawn from the item's votes; the audit reference is their majority. A deferred
item is answered by one such person. After `--shift-at` items the images are re-encoded (JPEG quality 50) or
made grayscale, blurred (a Gaussian of 1 pixel) or turned upside down.

    python experiments/alarms.py --runs 100 --items 20000 --shift-at 5000
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm

from teaming.datasets import load_cifar10h, load_default_test
from teaming.labels import earliest_majority
from teaming.model import load_artifact
from teaming.ops.monitors import drift, harm, interval
from teaming.policy import load_policy
from teaming.probes import blur, grayscale, jpeg, upside_down

MODEL = "models/cifar10h-default"
HELD_OUT = np.arange(8500, 10000)
WINDOW = 100  # the rolling t-test's window of audited auto-answers


@dataclass
class World:
    """Per held-out item, under one kind of image: the model's answer, whether the policy defers it (and as
    unfamiliar), and the true label and the people's votes."""

    pred: np.ndarray
    defer: np.ndarray
    unfamiliar: np.ndarray
    y: np.ndarray
    votes: np.ndarray


def worlds() -> tuple[dict[str, World], object]:
    """The held-out items as they are, re-encoded at JPEG 50, and in grayscale."""
    art, policy = load_artifact(MODEL), load_policy(f"{MODEL}/policy.json")
    test, human = load_default_test(), load_cifar10h()
    images = test.images[torch.from_numpy(HELD_OUT)]
    out = {}
    shifts = {"jpeg50": jpeg(images, 50), "grayscale": grayscale(images), "blur": blur(images, 1.0),
              "upside_down": upside_down(images)}  # fmt: skip
    for name, imgs in {"clean": images, **shifts}.items():
        o = art.outputs(imgs)
        reasons = policy.reasons(o.probs, unfamiliarity=o.unfamiliarity, features=o.features)
        out[name] = World(o.probs.argmax(1), reasons != "", reasons == "unfamiliar", test.labels[HELD_OUT],
                          human.counts[HELD_OUT])  # fmt: skip
    return out, policy


def people(votes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One person's answer to each item (rows of vote counts): a draw from its annotators' votes."""
    cdf = np.cumsum(votes / votes.sum(1, keepdims=True), 1)
    return np.minimum((cdf < rng.random((len(votes), 1))).sum(1), votes.shape[1] - 1)


def rolling_t(right: np.ndarray, bound: float, alpha: float) -> int | None:
    """The first audited auto-answer at which a one-sided t-test on the last WINDOW of them says their
    accuracy is below `bound` (checked after every audit, as the monitor is); None if never."""
    for t in range(WINDOW, len(right) + 1):
        w = right[t - WINDOW : t]
        if w.std() == 0:
            if w.mean() < bound:
                return t
            continue
        if stats.ttest_1samp(w, bound, alternative="less").pvalue < alpha:
            return t
    return None


def run(worlds_: dict[str, World], policy, shift: str | None, args, seed: int) -> dict:
    """One stream: which world each item comes from, the alarms, and the team's accuracy around them."""
    rng = np.random.default_rng(seed)
    n = args.items
    pick = rng.integers(0, len(HELD_OUT), n)
    after = np.arange(n) >= args.shift_at if shift else np.zeros(n, bool)
    w = {k: worlds_[k] for k in ("clean", shift or "clean")}
    pred = np.where(after, w[shift or "clean"].pred[pick], w["clean"].pred[pick])
    defer = np.where(after, w[shift or "clean"].defer[pick], w["clean"].defer[pick])
    unfamiliar = np.where(after, w[shift or "clean"].unfamiliar[pick], w["clean"].unfamiliar[pick])
    y, votes = w["clean"].y[pick], w["clean"].votes[pick]
    human = people(votes, rng)
    audited = rng.random(n) < args.audit_rate
    auto_audits = np.flatnonzero(audited & ~defer)
    three = np.stack([people(votes[auto_audits], rng) for _ in range(3)], 1)
    reference = np.array([earliest_majority(a.tolist()) for a in three])
    right = (pred[auto_audits] == reference).astype(float)
    r = policy.report_
    fitted_on = int(round(r.n_items * (1 - r.deferral_rate)))
    h = harm(right, r.accepted_accuracy, fitted_on, alpha=args.alpha)
    d = drift("deferral_rate", defer, r.deferral_rate, r.n_items, alpha=args.alpha)
    beyond = 1 - policy.unfamiliar_quantile  # the guard's limit is this quantile of the fitting items'
    u = drift("unfamiliar_rate", unfamiliar, beyond, r.n_items, alpha=args.alpha, both_ways=False)
    t = rolling_t(right, h.bound, args.alpha)
    harm_item = None if h.at is None else int(auto_audits[h.at - 1])
    warn_items = [a.at - 1 for a in (d, u) if a.raised]
    team = np.where(defer, human == y, pred == y)
    end = harm_item if harm_item is not None else n
    return {
        "harm_item": harm_item,
        "harm_audits": None if h.at is None else int(np.sum(auto_audits[: h.at] >= args.shift_at)) if shift else h.at,
        "t_item": None if t is None else int(auto_audits[t - 1]),
        "warn_item": min(warn_items) if warn_items else None,
        "before_alarm": float(team[args.shift_at : end].mean()) if shift and end > args.shift_at else None,
        "after_no_fallback": float(team[end:].mean()) if end < n else float(team.mean()) if not shift else None,
        "after_defer_all": float((human == y)[end:].mean()) if end < n else None,
    }


def rate(hits: list[bool]) -> str:
    k, n = int(sum(hits)), len(hits)
    low, high = interval(k / n, n)
    return f"{k / n:.3f} (95% {low:.3f} to {high:.3f}, {k} of {n})"


def median(values: list) -> str:
    v = [x for x in values if x is not None]
    return "-" if not v else f"{np.median(v):.0f} (quartiles {np.percentile(v, 25):.0f} to {np.percentile(v, 75):.0f})"


def mean(values: list) -> str:
    v = [x for x in values if x is not None]
    return "-" if not v else f"{np.mean(v):.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--items", type=int, default=20000, help="classified items per stream")
    ap.add_argument("--shift-at", type=int, default=5000)
    ap.add_argument("--audit-rate", type=float, default=0.05)
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args()
    began = time.perf_counter()
    ws, policy = worlds()
    for name, w in ws.items():
        auto = ~w.defer
        right = np.mean(w.pred[auto] == w.y[auto])
        print(f"world {name:10s} machine accuracy {np.mean(w.pred == w.y):.4f}  auto-answered {auto.mean():.3f} "
              f"right {right:.4f}  deferred as unfamiliar {w.unfamiliar.mean():.3f}")  # fmt: skip
    print(f"# {args.runs} runs of {args.items} items, audit rate {args.audit_rate}, alpha {args.alpha}")
    for shift in (None, "jpeg50", "grayscale", "blur", "upside_down"):
        res = [run(ws, policy, shift, args, seed) for seed in tqdm(range(args.runs), desc=shift or "stationary")]
        if shift is None:
            print(f"stationary  harm alarm false-alarm rate      {rate([r['harm_item'] is not None for r in res])}")
            print(f"stationary  rolling t-test false-alarm rate  {rate([r['t_item'] is not None for r in res])}")
            print(f"stationary  early-warning false-alarm rate   {rate([r['warn_item'] is not None for r in res])}")
            print(f"stationary  team accuracy                    {mean([r['after_no_fallback'] for r in res])}")
            continue
        late = [None if r["harm_item"] is None else r["harm_item"] - args.shift_at for r in res]
        early = [r["harm_item"] is not None and r["harm_item"] < args.shift_at for r in res]
        print(f"{shift:11s}  harm alarm raised                {rate([r['harm_item'] is not None for r in res])}")
        print(f"{shift:11s}  harm alarm before the shift       {rate(early)}")
        print(f"{shift:11s}  items from shift to harm alarm    {median([x for x in late if x is None or x >= 0])}")
        print(f"{shift:11s}  audited auto-answers, shift to alarm {median([r['harm_audits'] for r in res])}")
        warn = [None if r["warn_item"] is None else r["warn_item"] - args.shift_at for r in res]
        print(f"{shift:11s}  items from shift to early warning {median([x for x in warn if x is None or x >= 0])}")
        t_late = [None if r["t_item"] is None else r["t_item"] - args.shift_at for r in res]
        print(f"{shift:11s}  items from shift to t-test alarm  {median([x for x in t_late if x is None or x >= 0])}")
        print(f"{shift:11s}  team accuracy, shift to alarm     {mean([r['before_alarm'] for r in res])}")
        print(f"{shift:11s}  team accuracy after alarm, kept   {mean([r['after_no_fallback'] for r in res])}")
        print(f"{shift:11s}  team accuracy after alarm, defer-all {mean([r['after_defer_all'] for r in res])}")
    print(f"# {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
