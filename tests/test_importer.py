"""`teaming import` on a classifier trained elsewhere: the shipped net exported to ONNX and TorchScript stands for
the user's model, 400 CIFAR-10 photos in class folders with three CIFAR-10H votes each for their labelled photos.
Each step is checked on its own items, and every bad input is one line, exit 2, and nothing written."""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from teaming.model import load_artifact, load_model
from teaming.model.runtime import Served, export_onnx, fold
from teaming.policy import fitted_for, load_policy
from tests.support.cli import cli

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "cifar10h-default"
ITEMS = range(7000, 7400)


def write_folder(root: Path, images, classes, items, votes_of, ids_extra=()) -> tuple[Path, Path]:
    """PNG photos in class folders and a votes CSV (three votes drawn from each item's CIFAR-10H counts)."""
    rng = np.random.default_rng(0)
    photos, votes = root / "photos", root / "votes.csv"
    root.mkdir(parents=True, exist_ok=True)
    with open(votes, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["item_id", "annotator_id", "label"])
        for i in items:
            label = classes[int(images.labels[i])]
            (photos / label).mkdir(parents=True, exist_ok=True)
            buf = io.BytesIO()
            Image.fromarray(images.images[i].permute(1, 2, 0).numpy()).save(buf, "PNG")
            (photos / label / f"{i}.png").write_bytes(buf.getvalue())
            counts = votes_of[i]
            for k, said in enumerate(rng.choice(len(classes), 3, p=counts / counts.sum())):
                out.writerow([f"{label}/{i}.png", f"annotator-{k}", classes[said]])
        for extra in ids_extra:
            out.writerow([extra, "annotator-0", classes[0]])
    return photos, votes


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, cifar_test, cifar10h) -> tuple[Path, Path]:
    return write_folder(tmp_path_factory.mktemp("own"), cifar_test, cifar_test.classes, ITEMS, cifar10h.counts)


class Probabilities(nn.Module):
    """A graph that ends in a softmax, as many exported classifiers do."""

    def __init__(self, served: nn.Module) -> None:
        super().__init__()
        self.served = served

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.served(x)[0], 1)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, cpu_training) -> dict[str, Path]:
    """The shipped net as someone else's files: ONNX with logits and features, TorchScript with both as a tuple,
    and TorchScript that gives probabilities only."""
    art = load_artifact(DEFAULT_MODEL)
    out = tmp_path_factory.mktemp("graphs")
    served = Served(fold(art.net), art.meta.tta).eval()
    example = torch.rand(2, 3, 32, 32)
    with warnings.catch_warnings():  # torch.jit says TorchScript is deprecated; models still ship as it
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.trace(served, example).save(str(out / "net.pt"))
        torch.jit.trace(Probabilities(served).eval(), example).save(str(out / "probs.ts"))
    export_onnx(art.net, art.meta.tta, 32, out / "net.onnx")
    return {"onnx": out / "net.onnx", "torchscript": out / "net.pt", "probabilities": out / "probs.ts"}


@pytest.fixture(scope="module")
def imported_onnx(tmp_path_factory, graphs, labelled) -> Path:
    photos, votes = labelled
    out = tmp_path_factory.mktemp("imported") / "cifar-onnx"
    r = cli("import", graphs["onnx"], "--out", out, "--images", photos, "--labels", votes, "--features", "features")
    assert r.returncode == 0, r.stderr
    return out


def test_an_onnx_import_records_every_step_on_items_of_its_own(imported_onnx, cifar_test):
    out = imported_onnx
    assert {"model.onnx", "model.json", "MODEL_CARD.md", "policy.json", "familiarity.safetensors"} <= {
        p.name for p in out.iterdir()
    }
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "onnx" and meta["guard"] == "features" and meta["graph"]["outputs"] == "logits"
    assert meta["input"] == {
        "size": 32,
        "resize": "stretch",
        "crop_pct": 1.0,
        "interp": "bilinear",
        "mean": None,
        "std": None,
    }  # the size the graph declares; floats in [0, 1] as exported
    splits = meta["data"]["splits"]
    ids = [i for s in splits.values() for i in s]
    assert len(ids) == len(set(ids)) == len(ITEMS)  # disjoint, and every item in one split
    assert {k: len(v) for k, v in splits.items()} == {"calibration": 80, "guard": 80, "policy": 120, "report": 120}
    card = (out / "MODEL_CARD.md").read_text()
    for step in ("Contract check", "Calibration", "Familiarity guard", "Policy"):
        assert f"**{step}**" in card
    assert "onnx-int8" in card  # the reduced-precision backend was checked too, passed or not
    model = load_model(out)
    policy = load_policy(out / "policy.json")
    assert fitted_for(policy) == model.version and policy.classes_ == model.classes
    assert set(policy.model_["fitted_ids"]) == set(splits["policy"])
    # the imported graph answers as the net it came from (the same net: one answer in 200 may flip in rounding)
    idx = torch.arange(7000, 7200)
    same = model.outputs(cifar_test.images[idx]).probs.argmax(1) == load_artifact(DEFAULT_MODEL).predict_proba(
        cifar_test.images[idx]
    ).argmax(1)
    assert same.mean() >= 0.995
    assert meta["metrics"]["calibrated"]["ece"] < meta["metrics"]["uncalibrated"]["ece"]


def test_fit_policy_and_report_keep_to_the_items_left_for_them(imported_onnx, labelled, tmp_path):
    photos, votes = labelled
    meta = json.loads((imported_onnx / "model.json").read_text())
    everything = cli(
        "fit-policy",
        imported_onnx,
        "--out",
        tmp_path / "p.json",
        "--images",
        photos,
        "--labels",
        votes,
        "--items",
        "0:400",
    )
    assert everything.returncode == 2 and "calibrated or guarded the model" in everything.stderr
    assert not (tmp_path / "p.json").exists()
    report = cli(
        "report",
        imported_onnx,
        "--policy",
        imported_onnx / "policy.json",
        "--images",
        photos,
        "--labels",
        votes,
        "--out",
        tmp_path / "r.md",
    )  # by default: the items the import left for the policy and report
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "r.md").read_text()
    assert f"{len(meta['data']['splits']['report'])} items" in text and "items the policy was fitted on" in text


def test_torchscript_without_features_guards_on_its_logits(graphs, labelled, tmp_path):
    photos, votes = labelled
    out = tmp_path / "ts"
    r = cli(
        "import", graphs["torchscript"], "--out", out, "--images", photos, "--labels", votes, "--preprocess", "size=32"
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["kind"] == "torchscript" and meta["guard"] in ("energy", "max-logit")
    card = (out / "MODEL_CARD.md").read_text()
    assert "AUROC on the guard split: energy" in card and "max-logit" in card  # both measured, one chosen
    assert "torchscript-bf16" in card
    model = load_model(out)
    out_ = model.outputs(load_model(DEFAULT_MODEL).meta and torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert out_.features is None and out_.unfamiliarity.shape == (2,)


def test_a_graph_that_gives_probabilities_is_read_as_logits(graphs, labelled, tmp_path, cifar_test):
    photos, votes = labelled
    out = tmp_path / "probs"
    r = cli(
        "import",
        graphs["probabilities"],
        "--out",
        out,
        "--images",
        photos,
        "--labels",
        votes,
        "--preprocess",
        "size=32",
    )
    assert r.returncode == 0, r.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["graph"]["outputs"] == "probabilities"
    assert "turned back into logits" in (out / "MODEL_CARD.md").read_text()
    x = cifar_test.images[7000:7100]
    assert (load_model(out).outputs(x).probs.argmax(1) == load_model(DEFAULT_MODEL).outputs(x).probs.argmax(1)).all()


def _bad_inputs(root: Path, graphs, labelled, cifar_test, cifar10h) -> dict[str, tuple[list, str]]:
    """Each bad input the import must refuse: its arguments and the words the refusal must hold."""
    photos, votes = labelled
    eleven = root / "eleven.txt"
    eleven.write_text("\n".join(cifar_test.classes + ["zebra"]))
    twice = root / "twice.txt"
    twice.write_text("\n".join(cifar_test.classes[:9] + ["cat"]))
    stray_photos, stray_votes = write_folder(
        root / "stray",
        cifar_test,
        cifar_test.classes,
        range(7000, 7200),
        cifar10h.counts,
        ids_extra=["cat/not-here.png"],
    )
    few_photos, few_votes = write_folder(
        root / "few", cifar_test, cifar_test.classes, range(7000, 7100), cifar10h.counts
    )
    corrupt = root / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf graph" * 10)
    corrupt_ts = root / "corrupt.pt"
    corrupt_ts.write_bytes(b"PK not a zip")
    (root / "model.h5").write_bytes(b"HDF5 weights")
    base = ["--images", photos, "--labels", votes]
    return {
        "outputs that do not match the classes": ([graphs["onnx"], *base, "--classes", eleven], "not N x 11"),
        "a graph that wants another input shape": (
            [graphs["onnx"], *base, "--preprocess", "size=48"],
            "--preprocess size=32",
        ),
        "labels for photos not in the folder": (
            [graphs["onnx"], "--images", stray_photos, "--labels", stray_votes],
            "1 voted item is not among the photos, e.g. 'cat/not-here.png'",
        ),
        "a classes file with duplicates": ([graphs["onnx"], *base, "--classes", twice], "'cat' is given 2 times"),
        "too few items for the splits": (
            [graphs["onnx"], "--images", few_photos, "--labels", few_votes],
            "too few to import: it needs at least 167",
        ),
        "a corrupt ONNX file": ([corrupt, *base], "is not an ONNX graph"),
        "a corrupt TorchScript file": ([corrupt_ts, *base, "--preprocess", "size=32"], "is not a TorchScript file"),
        "TorchScript without a size": ([graphs["torchscript"], *base], "--preprocess needs size=N"),
        "a file of no known kind": ([root / "model.h5", *base], "a model file is .onnx"),
        "no file at all": ([root / "nothing.onnx", *base], "no model file at"),
        "an unknown features output": ([graphs["onnx"], *base, "--features", "penultimate"], "no output 'penultimate'"),
    }


def test_every_bad_input_is_one_line_and_writes_nothing(graphs, labelled, tmp_path, cifar_test, cifar10h):
    for case, (args, words) in _bad_inputs(tmp_path, graphs, labelled, cifar_test, cifar10h).items():
        out = tmp_path / "out"
        r = cli("import", *args[:1], "--out", out, *args[1:])
        assert r.returncode == 2, (case, r.stdout, r.stderr)
        assert words in r.stderr, (case, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (case, r.stderr)
        assert not out.exists(), case


def test_a_flat_folder_with_one_vote_a_photo_gets_a_certified_policy(graphs, tmp_path, cifar_test, cifar10h):
    """Photos known only by one person's vote: no person apart from the reference, so the policy certifies the
    auto-answered items' accuracy (Learn then Test) instead of comparing with people."""
    flat = tmp_path / "flat"
    flat.mkdir()
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(cifar_test.classes))
    with open(tmp_path / "votes.csv", "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["item_id", "annotator_id", "label"])
        for i in range(7000, 7400):
            Image.fromarray(cifar_test.images[i].permute(1, 2, 0).numpy()).save(flat / f"photo-{i}.png")
            out.writerow([f"photo-{i}", "a", cifar_test.classes[int(cifar10h.counts[i].argmax())]])
    model = tmp_path / "certified"
    r = cli("import", graphs["onnx"], "--out", model, "--images", flat, "--labels", tmp_path / "votes.csv",
            "--classes", classes, "--features", "features")  # fmt: skip
    assert r.returncode == 0, r.stderr
    policy = load_policy(model / "policy.json")
    assert policy.kind == "certified" and 0.9 < policy.target_accuracy < 1
    assert "Learn then Test" in (model / "MODEL_CARD.md").read_text()
    meta = json.loads((model / "model.json").read_text())
    assert meta["data"]["splits"]["calibration"][0].startswith("photo-")  # ids are the file stems
