"""A worked example of bringing your own classifier, offline: scikit-learn's 1,797 handwritten digits rendered
as photos of ink on paper, a torchvision net trained on some of them the way a user trains their own, exported to
ONNX and TorchScript, then imported, served and reviewed with teaming (README.md, "Your own model").

    python examples/digits.py data --out runs/digits     # photos, votes of three annotators, a phone photo
    python examples/digits.py train --data runs/digits   # a ResNet-18 at 64 px, exported twice

`data` writes, in class folders: train/ (1,000 photos, the user's training set, with train.csv), photos/ (397
labelled photos to import with, votes.csv) and live/ (400 photos the service meets later, live.csv); each votes
file holds three annotators' votes, each right 95% of the time (as one CIFAR-10H annotator is). Also classes.txt,
phone.jpg (a 12-megapixel portrait photo of a 7, turned by its EXIF orientation as a phone stores it) and
china.jpg (a photo of none of the classes). `train` writes digits.onnx and digits.pt: each takes N x 3 x 64 x 64
images normalised with ImageNet's mean and std, and gives logits and the 512 penultimate features.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

SIZE = 64
SPLITS = {"train": 1000, "photos": 397, "live": 400}  # folder -> photos; each has its votes CSV
VOTES = {"train": "train.csv", "photos": "votes.csv", "live": "live.csv"}
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
PREPROCESS = "size=64,resize=stretch,mean=0.485/0.456/0.406,std=0.229/0.224/0.225"


def render(digit: np.ndarray, rng: np.random.Generator, side: int = 96) -> Image.Image:
    """An 8 x 8 digit (0..16) as a photo: dark ink on light paper, scaled, turned and placed a little off centre,
    under uneven light and sensor noise."""
    ink = Image.fromarray((digit * 255 / 16).astype(np.uint8)).resize((48, 48), Image.BICUBIC)
    ink = ink.rotate(float(rng.uniform(-12, 12)), Image.BICUBIC, expand=True)
    scale = rng.uniform(0.55, 0.8) * side / max(ink.size)
    ink = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.BICUBIC)
    mask = np.zeros((side, side), np.float32)
    y, x = (int(rng.integers(0, side - s + 1)) for s in (ink.height, ink.width))
    mask[y : y + ink.height, x : x + ink.width] = np.asarray(ink, np.float32) / 255
    paper = rng.uniform(170, 250, 3)
    pen = rng.uniform(0, 90, 3)
    light = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(0.9, 1.1), side)[None, :, None]
    img = (paper * (1 - mask[..., None]) + pen * mask[..., None]) * light
    img += rng.normal(0, 5, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def jpeg(img: Image.Image, quality: int = 90, **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality, **kwargs)
    return out.getvalue()


def phone_photo(digit: np.ndarray, rng: np.random.Generator) -> bytes:
    """A 3000 x 4000 portrait photo of a digit, stored as a phone stores it: the sensor's 4000 x 3000 landscape
    pixels with EXIF orientation 6 (turn 90 degrees clockwise to view)."""
    upright = render(digit, rng, side=750).resize((3000, 3000), Image.BICUBIC)
    canvas = Image.new("RGB", (3000, 4000), tuple(int(v) for v in np.asarray(upright)[5, 5]))
    canvas.paste(upright, (0, 500))
    grain = rng.normal(0, 6, (4000, 3000, 3))
    photo = Image.fromarray(np.clip(np.asarray(canvas, np.float64) + grain, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    return jpeg(photo.transpose(Image.Transpose.ROTATE_90), 92, exif=exif)


def data(out: Path, seed: int = 0) -> None:
    """Photos in class folders, the votes, the classes, a phone photo and a photo of none of the classes."""
    from sklearn.datasets import load_digits, load_sample_image

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    bounds = np.cumsum([0, *SPLITS.values()])
    splits = {name: order[a:b] for name, a, b in zip(SPLITS, bounds, bounds[1:])}
    out.mkdir(parents=True, exist_ok=True)
    for split, idx in splits.items():
        with open(out / VOTES[split], "w", newline="") as fh:
            votes = csv.writer(fh)
            votes.writerow(["item_id", "annotator_id", "label"])
            for i in idx:
                label = int(digits.target[i])
                folder = out / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{i:04d}.jpg").write_bytes(jpeg(render(digits.images[i], rng)))
                for annotator in ("ann", "bo", "cy"):  # each right 95% of the time, else any other digit
                    said = label if rng.random() < 0.95 else int(rng.choice([d for d in range(10) if d != label]))
                    votes.writerow([f"{label}/{i:04d}.jpg", annotator, said])
    (out / "classes.txt").write_text("".join(f"{d}\n" for d in range(10)))
    seven = next(i for i in splits["photos"] if digits.target[i] == 7)
    (out / "phone.jpg").write_bytes(phone_photo(digits.images[seven], rng))
    (out / "china.jpg").write_bytes(jpeg(Image.fromarray(load_sample_image("china.jpg"))))
    said = ", ".join(f"{out}/{name} ({n} photos, {VOTES[name]})" for name, n in SPLITS.items())
    print(f"wrote {said}, classes.txt, phone.jpg and china.jpg")


class Exported(nn.Module):
    """The trained net as it is exported: normalised images in, (logits, penultimate features) out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        if hasattr(n, "fc"):  # a ResNet
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            features = torch.flatten(n.avgpool(n.layer4(n.layer3(n.layer2(n.layer1(x))))), 1)
            return n.fc(features), features
        features = n.classifier[:-1](torch.flatten(n.avgpool(n.features(x)), 1))
        return n.classifier[-1](features), features


def folder_tensors(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every photo of a class-folder tree, stretched to 64 x 64 and normalised, with its folder's label."""
    from torchvision.transforms import functional as TF

    xs, ys = [], []
    for label in range(10):
        for file in sorted((root / str(label)).glob("*.jpg")):
            img = TF.to_tensor(Image.open(file).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
            xs.append(TF.normalize(img, MEAN, STD))
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def train(root: Path, epochs: int = 10, seed: int = 0, arch: str = "resnet18") -> None:
    """Train a torchvision net from scratch on train/, report its accuracy on photos/, export it twice."""
    import torchvision.models

    torch.manual_seed(seed)
    x, y = folder_tensors(root / "train")
    net = getattr(torchvision.models, arch)(num_classes=10)
    for m in net.modules():  # MobileNetV3's 0.01 is for ImageNet's million images; 150 steps need faster stats
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.05)
    steps = epochs * (len(x) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        for idx in torch.randperm(len(x)).split(64)[: len(x) // 64]:
            shift = torch.randint(-4, 5, (2,)).tolist()  # a little translation, as photos are framed
            batch = torch.roll(x[idx], shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(net(batch), y[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} ({time.perf_counter() - start:.0f} s)", flush=True)
    net.eval()
    exported = Exported(net).eval()
    held_x, held_y = folder_tensors(root / "photos")
    with torch.no_grad():
        acc = (exported(held_x)[0].argmax(1) == held_y).float().mean()
    print(f"held-out accuracy on photos/: {acc:.2%}")
    example = torch.randn(2, 3, SIZE, SIZE)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.onnx.export(
        exported,
        (example,),
        input_names=["images"],
        output_names=["logits", "features"],
        dynamic_shapes=({0: batch},),
        dynamo=True,
        verbose=False,
    )
    program.save(str(root / "digits.onnx"))
    with warnings.catch_warnings():  # torch.jit warns that TorchScript is deprecated; many models still ship as it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(exported, example).save(str(root / "digits.pt"))
    print(f"wrote {root}/digits.onnx and {root}/digits.pt (inputs: --preprocess {PREPROCESS})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("data", help="render the photos and write the votes")
    make.add_argument("--out", type=Path, default=Path("runs/digits"))
    fit = sub.add_parser("train", help="train and export the net (a minute and a half on 2 CPU cores)")
    fit.add_argument("--data", type=Path, default=Path("runs/digits"))
    fit.add_argument("--epochs", type=int, default=10)
    fit.add_argument("--arch", default="resnet18", help="a torchvision ResNet or MobileNetV3")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.command == "data":
        data(args.out)
    else:
        train(args.data, args.epochs, arch=args.arch)


if __name__ == "__main__":
    main()
