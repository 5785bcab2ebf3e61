"""Learned deferral against the threshold rules at fixed deferral budgets, cross-fitted, with oracle bounds.

For each of 20 random halvings of the items, every method is fitted on one half and scored on the other: it
defers the given share of the scored half that it ranks first, the model answers the rest. The human is one
annotator sampled per item, so a deferred item counts its expected accuracy (the share of its annotators who
were right). Paired t-tests compare each method with the best threshold rule over the same 20 splits; the
corrected test (Nadeau & Bengio, 2003) accounts for the overlap between splits.

Usage:
  python experiments/learned_deferral.py cifar10h --model models/cifar10h-default --items 7000:10000
  python experiments/learned_deferral.py cifar10n --run runs/cifar10n/soft_r123.npz
"""

from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
import torch
from scipy import stats
from tqdm import tqdm

from teaming.confidence import confidence
from teaming.data import parse_items
from teaming.datasets import load_cifar10h, load_cifar10n, load_default_test, shared_data_dir
from teaming.model import load_artifact
from teaming.model.calibration import softmax
from teaming.model.predict import predict_outputs
from teaming.policy.learned import L2D, Rejector

RATES = (0.05, 0.10, 0.20)
RULES = ("max_prob", "margin", "entropy")


def cifar10h_inputs(model: str, items: str) -> tuple[np.ndarray, ...]:
    art, test = load_artifact(model), load_default_test()
    idx = parse_items(items, len(test))
    logits, feats = predict_outputs(art.net, test.images[torch.from_numpy(idx)], tta=art.meta.tta)
    counts = load_cifar10h().subset(idx).counts
    y = test.labels[idx]
    return softmax(logits, art.meta.temperature), feats.numpy(), y, counts[np.arange(len(y)), y] / counts.sum(1)


def cifar10n_inputs(run: str) -> tuple[np.ndarray, ...]:
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (or $TEAMING_DATA) with CIFAR-10N")
    with np.load(run) as z:
        probs, feats, items = z["probs"].astype(np.float64), z["features"], z["items"]
    with np.load(shared / "cifar10_train_jpeg.npz") as z:
        y = z["labels"][items]
    votes = load_cifar10n(shared / "cifar10n_labels.npz").subset(items).counts
    return probs / probs.sum(1, keepdims=True), feats, y, votes[np.arange(len(y)), y] / votes.sum(1)


Method = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # (fit idx, score idx) -> (score, pred)


def methods(probs, feats, y, hacc) -> dict[str, Method]:
    pred = probs.argmax(1)
    out: dict[str, Method] = {}
    for rule in RULES:
        out[f"threshold ({rule})"] = lambda a, b, r=rule: (-confidence(probs[b], r), pred[b])

    def rejector(a, b):
        r = Rejector().fit(probs[a], feats[a], y[a], hacc[a])
        return r.defer_score(probs[b], feats[b]), pred[b]

    def l2d(a, b):
        m = L2D().fit(probs[a], feats[a], y[a], hacc[a])
        return m.defer_score(probs[b], feats[b]), m.predict(probs[b], feats[b])

    out["rejector (learned)"] = rejector
    out["L2D, CE surrogate (learned)"] = l2d
    out["oracle: true human accuracy"] = lambda a, b: (hacc[b] - probs[b].max(1), pred[b])
    out["oracle: where the model is wrong"] = lambda a, b: ((pred[b] != y[b]) + 1e-3 * hacc[b], pred[b])
    return out


def team_accuracy(score: np.ndarray, pred: np.ndarray, y: np.ndarray, hacc: np.ndarray, rate: float) -> float:
    k = int(round(rate * len(y)))
    defer = np.zeros(len(y), bool)
    defer[np.argsort(-score, kind="stable")[:k]] = True
    return float(np.where(defer, hacc, pred == y).mean())


def corrected_p(diff: np.ndarray, test_share: float = 0.5) -> float:
    """Nadeau & Bengio's corrected resampled t-test: the variance grows by n_test/n_train for overlapping splits."""
    k, sd = len(diff), diff.std(ddof=1)
    if sd == 0:
        return 0.0 if diff.mean() != 0 else 1.0
    t = diff.mean() / (sd * np.sqrt(1 / k + test_share / (1 - test_share)))
    return float(2 * stats.t.sf(abs(t), k - 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", choices=["cifar10h", "cifar10n"])
    ap.add_argument("--model", default="models/cifar10h-default")
    ap.add_argument("--items", default="7000:10000")
    ap.add_argument("--run", default="runs/cifar10n/soft_r123.npz")
    ap.add_argument("--splits", type=int, default=20)
    args = ap.parse_args()
    probs, feats, y, hacc = (
        cifar10h_inputs(args.model, args.items) if args.data == "cifar10h" else cifar10n_inputs(args.run)
    )
    ms = methods(probs, feats, y, hacc)
    rng = np.random.default_rng(0)
    acc = {m: np.zeros((args.splits, len(RATES))) for m in ms}
    for s in tqdm(range(args.splits), desc="splits"):
        perm = rng.permutation(len(y))
        a, b = np.sort(perm[: len(y) // 2]), np.sort(perm[len(y) // 2 :])
        for name, method in ms.items():
            score, pred = method(a, b)
            acc[name][s] = [team_accuracy(score, pred, y[b], hacc[b], r) for r in RATES]
    print(
        f"{args.data}: {len(y)} items, machine {np.mean(probs.argmax(1) == y):.2%}, "
        f"one sampled annotator {hacc.mean():.2%}; team accuracy, mean ± sd over {args.splits} splits"
    )
    print("| method | " + " | ".join(f"{r:.0%} deferred" for r in RATES) + " |")
    print("|---|" + "---|" * len(RATES))
    for name, a in acc.items():
        print(
            f"| {name} | " + " | ".join(f"{100 * m:.2f} ± {100 * sd:.2f}" for m, sd in zip(a.mean(0), a.std(0))) + " |"
        )
    print()
    print("| learned method | budget | gain over the best threshold rule (points) | p (paired t) | p (corrected) |")
    print("|---|---|---|---|---|")
    for j, r in enumerate(RATES):
        best = max(RULES, key=lambda rule: acc[f"threshold ({rule})"][:, j].mean())
        base = acc[f"threshold ({best})"][:, j]
        for name in ("rejector (learned)", "L2D, CE surrogate (learned)"):
            diff = acc[name][:, j] - base
            p = stats.ttest_rel(acc[name][:, j], base).pvalue if diff.std() > 0 else 1.0
            print(f"| {name} vs {best} | {r:.0%} | {100 * diff.mean():+.2f} | {p:.3g} | {corrected_p(diff):.3g} |")


if __name__ == "__main__":
    main()
