"""Peterson et al.'s table on the shared pack: 10-fold CIFAR-10H fine-tuning with hard, soft and sampled labels.

One pretrained net (CIFAR-10 train, hard labels), then per loss: train on 9 folds of the 10,000 test images,
predict the held-out fold. Prints accuracy and cross-entropy to the human distribution per loss, raw
(as the paper reports) and after a temperature fitted on the other folds' predictions.
Usage: python experiments/soft_labels.py [--pretrain-epochs 9.9] [--epochs 8] [--widths 64,256,256] [--folds 10]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from teaming.data import load_jpeg_pack
from teaming.datasets import load_cifar10h, shared_data_dir
from teaming.model.calibration import fit_temperature, softmax
from teaming.model.crossfit import cross_fit, kfold_indices
from teaming.model.metrics import accuracy, cross_entropy
from teaming.model.nets import build_net
from teaming.model.predict import predict_logits
from teaming.model.train import TrainConfig, finetune_config, resolve_device, train


def fold_calibrated(logits: np.ndarray, soft: np.ndarray, folds, scored: np.ndarray) -> np.ndarray:
    """Probabilities where each fold's temperature is fitted on the other scored folds' out-of-fold logits."""
    probs = np.zeros_like(logits, dtype=np.float64)
    for _, te in folds:
        other = np.setdiff1d(scored, te)
        probs[te] = softmax(logits[te], fit_temperature(logits[other], soft[other]))
    return probs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pretrain-n", type=int, default=50000)
    p.add_argument("--pretrain-epochs", type=float, default=9.9)
    p.add_argument("--epochs", type=float, default=8.0)
    p.add_argument("--lr-scale", type=float, default=0.2)
    p.add_argument("--widths", default="64,256,256")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--losses", default="hard,soft,sampled")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-folds", type=int, default=None, help="score only the first N held-out folds (quick sweeps)")
    p.add_argument(
        "--cache", default=None, help="safetensors file to reuse the pretrained net from (written if absent)"
    )
    args = p.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (or $TEAMING_DATA) with the CIFAR-10 JPEG packs")
    widths = tuple(int(w) for w in args.widths.split(","))
    device = resolve_device()
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    pre = load_jpeg_pack(shared / "cifar10_train_jpeg.npz").subset(slice(0, args.pretrain_n))
    test = load_jpeg_pack(shared / "cifar10_test_jpeg.npz")
    human = load_cifar10h(shared / "cifar10h_counts.npz")
    soft = human.soft()
    base = TrainConfig(loss="hard", label_smoothing=0.2, epochs=args.pretrain_epochs, widths=widths, seed=args.seed)
    if args.cache and Path(args.cache).exists():
        net = build_net("fastnet", 10, 32, widths).to(device)
        net.load_state_dict(load_file(args.cache))
        print(f"pretrained_from {args.cache}")
    else:
        start = time.perf_counter()
        net = train(pre.images, pre.labels, base, num_classes=10).net
        print(f"pretrain_seconds {time.perf_counter() - start:.1f}")
        if args.cache:
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.cache)
    folds = kfold_indices(len(test), args.folds, args.seed)[: args.max_folds]
    if len(folds) < 2:
        raise SystemExit("score at least 2 folds: each fold's temperature is fitted on the others")
    scored = np.sort(np.concatenate([te for _, te in folds]))
    logits = predict_logits(net, test.images, tta=True).numpy()[scored]
    print(f"scored_items {len(scored)}")
    print(f"pretrained_acc {accuracy(softmax(logits), test.labels[scored]):.4f}")
    print(f"pretrained_human_ce {cross_entropy(softmax(logits), soft[scored]):.4f}")
    print(f"human_floor_ce {cross_entropy(soft[scored], soft[scored]):.4f}")
    for loss in args.losses.split(","):
        cfg = finetune_config(base, loss=loss, epochs=args.epochs, lr_scale=args.lr_scale)
        start = time.perf_counter()
        oof = cross_fit(test.images, human, cfg, pretrained=copy.deepcopy(net), folds=folds, tta=True)
        raw = softmax(oof)
        cal = fold_calibrated(oof, soft, folds, scored)
        print(f"{loss}_seconds {time.perf_counter() - start:.1f}")
        print(f"{loss}_acc {accuracy(raw[scored], test.labels[scored]):.4f}")
        print(f"{loss}_human_ce {cross_entropy(raw[scored], soft[scored]):.4f}")
        print(f"{loss}_human_ce_temperature_scaled {cross_entropy(cal[scored], soft[scored]):.4f}")


if __name__ == "__main__":
    main()
