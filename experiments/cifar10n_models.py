"""Train the machine classifiers of the CIFAR-10N seed table and save their test probabilities.

Each model trains on train[0:36000] with one kind of CIFAR-10N label, fits its temperature to its own
training targets on train[36000:40000], and predicts train[40000:50000] (mirror TTA). Probabilities go to
OUT/<name>.npz with the item positions and penultimate features, so `experiments/cifar10n_table.py` (and
`experiments/learned_deferral.py`) can build their tables without a net.
Usage: python experiments/cifar10n_models.py [--out runs/cifar10n] [--epochs 6] [--only ce_r1,soft_r123]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from teaming.data import load_jpeg_pack
from teaming.datasets import load_cifar10n, shared_data_dir
from teaming.model.calibration import fit_temperature, softmax
from teaming.model.metrics import accuracy
from teaming.model.predict import predict_logits, predict_outputs
from teaming.model.train import TrainConfig, resolve_device, train

FIT, CAL, TEST = slice(0, 36000), slice(36000, 40000), slice(40000, 50000)
# name -> (label columns, TrainConfig overrides): machines that differ in loss, label source and net width.
MODELS = {
    "ce_r1": (["random_label1"], dict(loss="hard")),
    "ls_r1": (["random_label1"], dict(loss="hard", label_smoothing=0.2)),
    "soft_r123": (["random_label1", "random_label2", "random_label3"], dict(loss="soft")),
    "sampled_r123": (["random_label1", "random_label2", "random_label3"], dict(loss="sampled")),
    "wide_ce_aggre": (["aggre_label"], dict(loss="hard", widths=(64, 128, 128), seed=1)),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/cifar10n")
    p.add_argument("--epochs", type=float, default=6.0)
    p.add_argument("--widths", default="32,64,128", help="default net widths (the wide model overrides them)")
    p.add_argument("--only", default=None, help="comma-separated model names")
    args = p.parse_args()
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (or $TEAMING_DATA) with the CIFAR-10 training pack and CIFAR-10N")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device()
    print(f"device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    pack = load_jpeg_pack(shared / "cifar10_train_jpeg.npz")
    clean = pack.labels
    names = args.only.split(",") if args.only else list(MODELS)
    for name in names:
        cols, overrides = MODELS[name]
        human = load_cifar10n(shared / "cifar10n_labels.npz", cols)
        config = TrainConfig(
            **{"widths": tuple(int(w) for w in args.widths.split(",")), "epochs": args.epochs, **overrides}
        )
        start = time.perf_counter()
        net = train(pack.images[FIT], human.subset(FIT), config, num_classes=10).net
        cal_logits = predict_logits(net, pack.images[CAL], tta=True).numpy()
        t = fit_temperature(cal_logits, human.subset(CAL).soft())
        logits, features = predict_outputs(net, pack.images[TEST], tta=True)
        probs = softmax(logits.numpy(), t)
        seconds = time.perf_counter() - start
        np.savez_compressed(
            out / f"{name}.npz",
            probs=probs.astype(np.float32),
            features=features.numpy().astype(np.float32),  # for the learned deferral policies
            items=np.arange(50000)[TEST],
        )
        info = dict(
            name=name,
            labels=cols,
            config=config.to_dict(),
            temperature=t,
            seconds=round(seconds, 1),
            test_accuracy=accuracy(probs, clean[TEST]),
            device=str(device),
        )
        (out / f"{name}.json").write_text(json.dumps(info, indent=2))
        print(f"{name}: accuracy {info['test_accuracy']:.4f} T={t:.3f} in {seconds:.0f} s")


if __name__ == "__main__":
    main()
