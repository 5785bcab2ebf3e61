"""Pilot sweep of training recipes at reduced width and epochs: accuracy, CE to CIFAR-10H and ECE on held-out
items 7000..9999, clean and under mild shifts. One line per recipe and set.

    python experiments/recipe_sweep.py --widths 32,128,128 --pretrain-epochs 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from teaming.data import load_jpeg_pack
from teaming.datasets import cifar10_train_pack, load_cifar10h, load_default_test
from teaming.model.calibration import fit_temperature, softmax
from teaming.model.metrics import accuracy, cross_entropy, ece
from teaming.model.predict import predict_logits
from teaming.model.train import TrainConfig, finetune_config, pretrain_config, train
from teaming.probes import shifted

RECIPES = {
    "airbench": {},
    "augment-shifts": {"grayscale": 0.15, "soften": 0.15},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--widths", default="32,128,128")
    ap.add_argument("--pretrain-epochs", type=float, default=4)
    ap.add_argument("--epochs", type=float, default=8)
    ap.add_argument("--recipes", default=",".join(RECIPES))
    args = ap.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    pre = load_jpeg_pack(cifar10_train_pack(), 32)
    test, human = load_default_test(), load_cifar10h()
    fit, cal, ev = np.arange(0, 6300), np.arange(6300, 7000), np.arange(7000, 10000)
    sets = shifted(test.images[torch.from_numpy(ev)])
    for name in args.recipes.split(","):
        base = TrainConfig(widths=widths, **RECIPES[name])
        t0 = time.perf_counter()
        net = train(pre.images, pre.labels, pretrain_config(base, args.pretrain_epochs), progress=False).net
        net = train(
            test.images[torch.from_numpy(fit)],
            human.subset(fit),
            finetune_config(base, epochs=args.epochs),
            init=net,
            progress=False,
        ).net
        seconds = time.perf_counter() - t0
        temp = fit_temperature(
            predict_logits(net, test.images[torch.from_numpy(cal)], tta=True), human.subset(cal).soft()
        )
        for set_name, imgs in sets.items():
            p = softmax(predict_logits(net, imgs, tta=True), temp)
            print(
                f"{name:16s} {set_name:16s} acc {accuracy(p, test.labels[ev]):.4f} "
                f"ce {cross_entropy(p, human.subset(ev).soft()):.4f} ece {ece(p, test.labels[ev]):.4f} "
                f"train_s {seconds:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
