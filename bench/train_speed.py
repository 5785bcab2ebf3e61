"""Training speed: our fast net vs airbench94, both fed the shared JPEG pack, timed in one run.

Prints one `name value` line per figure. airbench needs CUDA; on a CPU-only machine its lines say so.
Usage: python bench/train_speed.py [--train-n 50000] [--epochs 9.9] [--widths 64,256,256] [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time

import numpy as np
import torch

from teaming.data import load_jpeg_pack
from teaming.datasets import load_default_test, shared_data_dir
from teaming.model.predict import predict_logits
from teaming.model.train import TrainConfig, resolve_device, train


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_ours(tr, te, args) -> tuple[float, float]:
    cfg = TrainConfig(
        loss="hard", label_smoothing=0.2, epochs=args.epochs, widths=args.widths, seed=args.seed, bf16=args.bf16
    )
    images = tr.images.to(resolve_device())  # resident on the device before the clock starts, as airbench's loader is
    sync()
    start = time.perf_counter()
    res = train(images, tr.labels, cfg, num_classes=10, progress=False)
    sync()
    seconds = time.perf_counter() - start
    acc = float((predict_logits(res.net, te.images, tta=True).argmax(1).numpy() == te.labels).mean())
    return seconds, acc


@contextlib.contextmanager
def airbench_data(tr, te):
    """airbench's CifarLoader reads cifar10/{train,test}.pt from the working directory: write the pack there."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(f"{tmp}/cifar10")
        for split, ds in (("train", tr), ("test", te)):
            torch.save(
                {
                    "images": ds.images.permute(0, 2, 3, 1).contiguous(),
                    "labels": torch.from_numpy(ds.labels),
                    "classes": ds.classes,
                },
                f"{tmp}/cifar10/{split}.pt",
            )
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(here)


def run_airbench(args) -> tuple[float, float]:
    from airbench import lib_airbench94 as ab
    from airbench.utils import CifarLoader, evaluate

    loader = CifarLoader("cifar10", train=True, batch_size=1024, aug=ab.hyp["aug"], altflip=True)
    sync()
    start = time.perf_counter()
    model = ab.train94(loader, epochs=args.epochs, verbose=False)
    sync()
    seconds = time.perf_counter() - start
    acc = evaluate(model, CifarLoader("cifar10", train=False, batch_size=2000), tta_level=2)
    return seconds, acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-n", type=int, default=50000)
    p.add_argument("--epochs", type=float, default=9.9)
    p.add_argument("--widths", default="64,256,256")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto", help="our trainer's autocast")
    args = p.parse_args()
    args.widths = tuple(int(w) for w in args.widths.split(","))
    args.bf16 = {"auto": None, "on": True, "off": False}[args.bf16]
    shared = shared_data_dir()
    if shared is None:
        raise SystemExit("needs ../shared/data (or $TEAMING_DATA) with the CIFAR-10 JPEG packs")
    tr = load_jpeg_pack(shared / "cifar10_train_jpeg.npz").subset(slice(0, args.train_n))
    te = load_default_test()  # the same pack as shared's cifar10_test_jpeg.npz, shipped inside the package
    device = resolve_device()
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu x{torch.get_num_threads()} threads"
    print(f"device {name}")
    print(f"train_images {len(tr)}")
    print(f"epochs {args.epochs}")
    if device.type == "cuda":  # warm-up: cuDNN autotuning and lazy init are not training time
        warm = argparse.Namespace(**{**vars(args), "epochs": 1})
        run_ours(tr.subset(slice(0, 5000)), te.subset(slice(0, 500)), warm)
        with airbench_data(tr, te):
            run_airbench(warm)
    ours = [run_ours(tr, te, args) for _ in range(args.runs)]
    print(f"ours_seconds {np.mean([s for s, _ in ours]):.2f}")
    print(f"ours_test_acc {np.mean([a for _, a in ours]):.4f}")
    if device.type != "cuda":
        print("airbench94_seconds skipped (airbench needs CUDA)")
        print("airbench94_test_acc skipped (airbench needs CUDA)")
        return
    with airbench_data(tr, te):
        ref = [run_airbench(args) for _ in range(args.runs)]
    print(f"airbench94_seconds {np.mean([s for s, _ in ref]):.2f}")
    print(f"airbench94_test_acc {np.mean([a for _, a in ref]):.4f}")


if __name__ == "__main__":
    main()
