"""Does fine-tuning on CIFAR-10H help a pretrained net? One pretraining run, then the pretrained net alone and
fine-tuned under several settings, scored on the whole test set and on the held-out items 7000..9999 (the
temperature fitted on 6300..6999; fine-tuning on 0..6299). One line per variant.

    python experiments/finetune_sweep.py --pretrain-epochs 10 --bf16
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from teaming.data import load_jpeg_pack
from teaming.datasets import cifar10_train_pack, load_cifar10h, load_default_test
from teaming.model.calibration import fit_temperature, softmax
from teaming.model.metrics import accuracy, cross_entropy, ece
from teaming.model.predict import predict_logits
from teaming.model.train import TrainConfig, finetune_config, pretrain_config, train

VARIANTS = ((8, 0.2), (4, 0.1), (8, 0.05))  # (epochs, lr scale); the first is the recipe's fine-tuning


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-epochs", type=float, default=10)
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None)
    args = ap.parse_args()
    pre = load_jpeg_pack(cifar10_train_pack(), 32)
    test, human = load_default_test(), load_cifar10h()
    fit, cal, ev = np.arange(6300), np.arange(6300, 7000), np.arange(7000, 10000)
    base = TrainConfig(bf16=args.bf16)
    t0 = time.perf_counter()
    net = train(pre.images, pre.labels, pretrain_config(base, args.pretrain_epochs), progress=True).net
    print(f"pretraining: {args.pretrain_epochs:g} epochs, {time.perf_counter() - t0:.0f} s", flush=True)

    def score(name: str, model) -> None:
        logits = predict_logits(model, test.images, tta=True)
        p = softmax(logits, fit_temperature(logits[cal], human.subset(cal).soft()))
        held = f"acc {accuracy(p[ev], test.labels[ev]):.4f} ce {cross_entropy(p[ev], human.subset(ev).soft()):.4f}"
        held += f" ece {ece(p[ev], test.labels[ev]):.4f}"
        print(f"{name:26s} test_acc {accuracy(p, test.labels):.4f} held-out {held}", flush=True)

    score("pretrained only", net)
    for epochs, lr_scale in VARIANTS:
        cfg = finetune_config(base, epochs=epochs, lr_scale=lr_scale)
        tuned = train(
            test.images[torch.from_numpy(fit)], human.subset(fit), cfg, init=copy.deepcopy(net), progress=False
        )
        score(f"fine-tuned {epochs:g} ep, lr x{lr_scale:g}", tuned.net)


if __name__ == "__main__":
    main()
