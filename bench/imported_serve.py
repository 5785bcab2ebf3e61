"""An imported ResNet-18 at 224 x 224 (ONNX) through the service, side by side with bare ONNX Runtime in this
process on the same photos, in one run.

The net is torchvision's ResNet-18 (random weights: speed does not depend on them) exported with logits and
features, imported with `teaming import --preprocess torchvision` on 200 CIFAR-10 photos blown up to 256 x 256
JPEGs, and served with the README's settings (three reviewers, audit rate 0.05, decisions logged to SQLite).
Bare: ONNX Runtime with the service's session options on inputs already decoded and shaped (the model alone),
and again with decoding included. Rounds interleave the targets so a drift of the machine hits each alike.
Usage: python -m bench.imported_serve [--images 1,64] [--clients 1,4] [--seconds 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import csv
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.serve_load import closed_loop
from teaming.datasets import load_cifar10h, load_default_test
from teaming.decode import decode_image
from teaming.model.meta import load_meta
from teaming.model.runtime import device_name, onnx_session
from teaming.preprocess import to_input
from tests.support.process import ServiceProcess

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = range(7000, 7200)


class WithFeatures(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.net = resnet18(num_classes=10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        f = torch.flatten(n.avgpool(n.layer4(n.layer3(n.layer2(n.layer1(x))))), 1)
        return n.fc(f), f


def make(tmp: Path) -> tuple[Path, list[bytes]]:
    """The exported graph, imported into a model folder; and the photos as JPEG bytes."""
    net = WithFeatures().eval()
    program = torch.onnx.export(
        net, (torch.rand(2, 3, 224, 224),), input_names=["images"], output_names=["logits", "features"],
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), dynamo=True, verbose=False,
    )  # fmt: skip
    program.save(str(tmp / "resnet18.onnx"))
    images, counts = load_default_test(), load_cifar10h().counts
    rng, photos = np.random.default_rng(0), []
    with open(tmp / "votes.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["item_id", "annotator_id", "label"])
        for i in PHOTOS:
            label = images.classes[int(images.labels[i])]
            img = Image.fromarray(images.images[i].permute(1, 2, 0).numpy()).resize((256, 256), Image.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=90)
            photos.append(buf.getvalue())
            (tmp / "photos" / label).mkdir(parents=True, exist_ok=True)
            (tmp / "photos" / label / f"{i}.jpg").write_bytes(photos[-1])
            for k, said in enumerate(rng.choice(10, 3, p=counts[i] / counts[i].sum())):
                out.writerow([f"{label}/{i}.jpg", k, images.classes[said]])
    model = tmp / "resnet18"
    subprocess.run(
        [sys.executable, "-m", "teaming.cli", "import", str(tmp / "resnet18.onnx"), "--out", str(model), "--images",
         str(tmp / "photos"), "--labels", str(tmp / "votes.csv"), "--preprocess", "torchvision", "--features",
         "features", "--force"],
        check=True, capture_output=True,
    )  # fmt: skip
    return model, photos


def bare(model: Path, photos: list[bytes], batch: int, seconds: float, decode: bool) -> float:
    """Images/s of ONNX Runtime alone on `batch` photos a call (decoded and shaped beforehand unless `decode`)."""
    meta = load_meta(model)
    session = onnx_session(model / meta.graph.file)
    contract = meta.contract

    def inputs(chunk: list[bytes]) -> np.ndarray:
        return to_input(torch.stack([decode_image(p, contract) for p in chunk]), contract).numpy()

    ready = inputs(photos[:batch])
    session.run(["logits", "features"], {"images": ready})
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = [photos[(done + j) % len(photos)] for j in range(batch)]
        session.run(["logits", "features"], {"images": inputs(chunk) if decode else ready})
        done += batch
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", default="1,64")
    p.add_argument("--clients", default="1,4")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    print(
        f"# imported_serve on {device_name(torch.device('cpu'))}, {os.cpu_count()} CPU cores, "
        f"{time.strftime('%Y-%m-%d')}; {args.rounds} interleaved rounds of {args.seconds:g} s"
    )
    with tempfile.TemporaryDirectory() as tmp:
        model, photos = make(Path(tmp))
        payloads = [{"id": f"photo-{k}", "data": base64.b64encode(b).decode()} for k, b in enumerate(photos)]
        env = {
            "TEAMING_MODEL_DIR": str(model),
            "TEAMING_DB_URL": f"sqlite:///{Path(tmp) / 'log.db'}",
            "TEAMING_REVIEWER_TOKENS": "alice:alice-secret,bob:bob-secret,carol:carol-secret",
            "TEAMING_AUDIT_RATE": "0.05",
            "BENTOML_HOME": str(Path(tmp) / "bentoml"),
        }
        service = ServiceProcess(env, Path(tmp) / "service.log").start()
        try:
            asyncio.run(closed_loop(service.url, payloads, 2, 8, 4.0, 20))  # warm up
            for size in [int(x) for x in args.images.split(",")]:
                rates = {"bare onnxruntime": [], "bare + decode": []}
                for clients in [int(x) for x in args.clients.split(",")]:
                    rates[f"service, {clients} clients"] = []
                for _ in range(args.rounds):
                    rates["bare onnxruntime"].append(bare(model, photos, size, args.seconds, decode=False))
                    rates["bare + decode"].append(bare(model, photos, size, args.seconds, decode=True))
                    for clients in [int(x) for x in args.clients.split(",")]:
                        level = asyncio.run(closed_loop(service.url, payloads, clients, size, args.seconds, 10**6))
                        fails = level.errors + level.server_errors + sum(level.failures.values())
                        assert fails == 0, f"{fails} requests failed"
                        rates[f"service, {clients} clients"].append(level.images_per_second(size))
                reference = np.mean(rates["bare onnxruntime"])
                for name, r in rates.items():
                    share = np.mean(r) / reference
                    print(f"{name:<22s} images/req={size:<3d} images/s={np.mean(r):7.1f}  of bare={share:.3f}")
        finally:
            service.stop()


if __name__ == "__main__":
    main()
