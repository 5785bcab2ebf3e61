"""A model of one's own, start to finish, as README.md's worked example runs it: scikit-learn's digits rendered as
photos, a ResNet-18 trained on some of them for a minute and a half and exported to ONNX and to TorchScript, each
imported with `teaming import` and served, with the README's three reviewers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("bentoml", reason="the service extra is not installed")

ROOT = Path(__file__).resolve().parents[2]
PREPROCESS = "size=64,resize=stretch,mean=0.485/0.456/0.406,std=0.229/0.224/0.225"


def run(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def digits(tmp_path_factory, cpu_training) -> Path:
    """The example's photos, votes and the two exported graphs (about a minute of training)."""
    out = tmp_path_factory.mktemp("digits")
    run(str(ROOT / "examples" / "digits.py"), "data", "--out", str(out))
    said = run(str(ROOT / "examples" / "digits.py"), "train", "--data", str(out))
    accuracy = float(said.split("held-out accuracy on photos/: ")[1].split("%")[0])
    assert accuracy > 80, said  # a net worth serving: the comparison below is about the import, not the net
    return out


def source_argmax(graph: Path, photos: list[Path]) -> np.ndarray:
    """What the net itself answers, run as its author runs it (torchvision's transforms, not teaming's code)."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    net = torch.jit.load(str(graph)).eval()
    x = torch.stack(
        [
            TF.normalize(
                TF.to_tensor(Image.open(p).convert("RGB").resize((64, 64), Image.BILINEAR)),
                (0.485, 0.456, 0.406),
                (0.229, 0.224, 0.225),
            )
            for p in photos
        ]
    )
    with torch.no_grad():
        return net(x)[0].argmax(1).numpy()


def phone_as_its_author_sees_it(photo: Path, tmp_path: Path) -> tuple[int, int]:
    """The net's own answer on the phone photo turned upright by its EXIF orientation, and on its pixels as stored
    (on its side): a net trained for a minute on 2 cores need not read this one photo as the 7 it shows."""
    from PIL import Image, ImageOps

    stored = Image.open(photo)
    ImageOps.exif_transpose(stored).convert("RGB").save(tmp_path / "upright.png")
    stored.convert("RGB").save(tmp_path / "sideways.png")
    answers = source_argmax(photo.parent / "digits.pt", [tmp_path / "upright.png", tmp_path / "sideways.png"])
    return int(answers[0]), int(answers[1])


@pytest.mark.parametrize("graph, features", [("digits.onnx", "features"), ("digits.pt", "1")])
def test_an_imported_net_serves_as_itself_calibrated_and_guarded(digits, serve, graph, features, tmp_path):
    model = tmp_path / graph.replace(".", "-")
    run(
        "-m", "teaming.cli", "import", str(digits / graph), "--out", str(model), "--images", str(digits / "photos"),
        "--labels", str(digits / "votes.csv"), "--classes", str(digits / "classes.txt"), "--preprocess", PREPROCESS,
        "--features", features,  # ONNX names its outputs; a TorchScript tuple is indexed
    )  # fmt: skip
    meta = json.loads((model / "model.json").read_text())
    assert meta["metrics"]["calibrated"]["ece"] < meta["metrics"]["uncalibrated"]["ece"]  # on the report split
    server = serve(
        audit_rate=0.05,
        TEAMING_MODEL_DIR=str(model),
        TEAMING_MAX_IMAGE_BYTES="",  # the defaults a user gets: a phone photo fits
        TEAMING_MAX_PIXELS="",
    )
    photos = sorted((digits / "photos").glob("*/*.jpg"))
    served = []
    for start in range(0, len(photos), 16):
        chunk = photos[start : start + 16]
        served += server.client().classify([(p.stem, p.read_bytes()) for p in chunk])
    labels = np.array([int(d.top_k[0].label) for d in served])
    same = labels == source_argmax(digits / "digits.pt", photos)
    assert same.mean() >= 0.995, f"{int((~same).sum())} of {len(same)} differ"
    strange = server.client().classify([("china", (digits / "china.jpg").read_bytes())])[0]
    assert (strange.decision, strange.reason) == ("deferred", "unfamiliar")
    phone = server.client().classify([("phone", (digits / "phone.jpg").read_bytes())])[0]
    upright, _ = phone_as_its_author_sees_it(digits / "phone.jpg", tmp_path)
    assert phone.top_k[0].label == str(upright)  # read upright (EXIF), as the net itself reads the upright photo
    about = server.client().model()
    assert about.kind == meta["kind"] and about.classes == [str(d) for d in range(10)]
    assert about.input.size == 64 and about.guard == meta["guard"] and about.guard_active
