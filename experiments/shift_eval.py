"""Model artifacts side by side on held-out items, clean and under mild shifts: accuracy, CE to CIFAR-10H, ECE.
One line per model and set.

    python experiments/shift_eval.py models/cifar10h-default /tmp/old-default --items 7000:10000
"""

from __future__ import annotations

import argparse

import torch

from teaming.datasets import load_cifar10h, load_default_test
from teaming.items import parse_items
from teaming.model import load_artifact
from teaming.model.metrics import accuracy, cross_entropy, ece
from teaming.probes import shifted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--items", default="7000:10000")
    args = ap.parse_args()
    test, human = load_default_test(), load_cifar10h()
    idx = parse_items(args.items, len(test))
    y, soft = test.labels[idx], human.subset(idx).soft()
    sets = shifted(test.images[torch.from_numpy(idx)])
    for path in args.models:
        art = load_artifact(path)
        for name, images in sets.items():
            p = art.predict_proba(images)
            print(
                f"{path:32s} {name:16s} acc {accuracy(p, y):.4f} ce {cross_entropy(p, soft):.4f} ece {ece(p, y):.4f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
