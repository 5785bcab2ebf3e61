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

import numpy as np
import torch
from tqdm import tqdm

from teaming.datasets import load_cifar10h, load_cifar10n, load_default_test, shared_data_dir
from teaming.items import parse_items
from teaming.model import load_artifact
from teaming.model.calibration import softmax
from teaming.model.predict import predict_outputs
from teaming.report.deferral import compare_deferral, markdown


def cifar10h_inputs(model: str, items: str) -> tuple[np.ndarray, ...]:
    art, test = load_artifact(model), load_default_test()
    idx = parse_items(items, len(test))
    logits, feats = predict_outputs(art.net, test.images[torch.from_numpy(idx)], tta=art.meta.tta)
    y = test.labels[idx]
    return softmax(logits, art.meta.temperature), feats.numpy(), y, load_cifar10h().subset(idx).chance_right(y)


def cifar10n_inputs(run: str) -> tuple[np.ndarray, ...]:
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (or $TEAMING_DATA) with CIFAR-10N")
    with np.load(run) as z:
        probs, feats, items = z["probs"].astype(np.float64), z["features"], z["items"]
    with np.load(shared / "cifar10_train_jpeg.npz") as z:
        y = z["labels"][items]
    people = load_cifar10n(shared / "cifar10n_labels.npz").subset(items)
    return probs / probs.sum(1, keepdims=True), feats, y, people.chance_right(y)


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
    c = compare_deferral(probs, feats, y, hacc, splits=args.splits, progress=lambda r: tqdm(r, desc="splits"))
    print(
        f"{args.data}: {len(y)} items, machine {np.mean(probs.argmax(1) == y):.2%}, "
        f"one sampled annotator {hacc.mean():.2%}; team accuracy, mean ± sd over {args.splits} splits"
    )
    print(markdown(c))


if __name__ == "__main__":
    main()
