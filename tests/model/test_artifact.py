"""Artifacts: built by the recipe on real data, saved atomically with their card and figures, loaded exactly."""

from pathlib import Path

import numpy as np
import pytest
import torch

import teaming.model.artifact as artifact_mod
from teaming.model.artifact import load_artifact, save_artifact
from teaming.model.card import METRIC_NAMES, model_card
from teaming.model.recipe import build_model
from teaming.model.train import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "cifar10h-default"


@pytest.fixture(scope="module")
def tiny_artifact(cifar_test, cifar10h, cpu_training):
    cfg = TrainConfig(widths=(8, 16, 16), batch_size=200, epochs=1)
    return build_model("tiny", cifar_test, cifar10h, np.arange(1000), np.arange(7000, 7300), cfg, progress=False)


def test_build_model_records_splits_temperature_and_metrics(tiny_artifact):
    meta = tiny_artifact.meta
    assert meta.data["train_items"].startswith("900 items within 0..")
    assert meta.data["calibration_items"].startswith("100 items within")
    assert meta.data["held_out_items"] == "7000..7299 (300 items)"
    assert meta.temperature > 0
    cal, raw = meta.metrics["calibrated"], meta.metrics["uncalibrated"]
    assert cal["accuracy"] == raw["accuracy"]  # temperature never changes the argmax
    assert {"human_ce", "ece", "second_best_accuracy", "multilabel_accuracy", "fgsm_accuracy"} <= set(cal)


def test_save_load_round_trips_exactly(tmp_path, tiny_artifact, cifar_test):
    path = save_artifact(tiny_artifact, tmp_path / "tiny")
    files = {"model.safetensors", "model.json", "MODEL_CARD.md", "reliability.png", "familiarity.safetensors"}
    assert {p.name for p in path.iterdir()} == files
    loaded = load_artifact(path)
    assert loaded.figures == tiny_artifact.figures and loaded.figures["reliability.png"].startswith(b"\x89PNG")
    x = cifar_test.images[:64]
    np.testing.assert_array_equal(loaded.predict_proba(x), tiny_artifact.predict_proba(x))
    a, b = loaded.outputs(x), tiny_artifact.outputs(x)
    np.testing.assert_array_equal(a.unfamiliarity, b.unfamiliarity)
    np.testing.assert_allclose(a.probs, loaded.predict_proba(x), atol=1e-6)  # one forward gives all three
    assert a.features.shape == (64, 16)
    assert loaded.meta == tiny_artifact.meta and loaded.meta.data["used_positions"]
    card = (path / "MODEL_CARD.md").read_text()
    assert "Held out" in card and "7000..7299" in card and "Cross-entropy to human labels" in card


def test_interrupted_save_leaves_the_old_artifact_untouched(tmp_path, tiny_artifact, monkeypatch):
    path = save_artifact(tiny_artifact, tmp_path / "tiny")
    before = (path / "model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact_mod, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(tiny_artifact, tmp_path / "tiny")
    with pytest.raises(KeyboardInterrupt):
        save_artifact(tiny_artifact, tmp_path / "fresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    assert (path / "model.safetensors").read_bytes() == before


def test_loading_a_folder_that_is_not_an_artifact(tmp_path, tiny_artifact):
    with pytest.raises(FileNotFoundError, match="model.json is missing"):
        load_artifact(tmp_path)
    path = save_artifact(tiny_artifact, tmp_path / "tiny")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        load_artifact(path)


def test_artifact_resizes_larger_images(tiny_artifact, cifar_test):
    big = torch.nn.functional.interpolate(cifar_test.images[:8].float(), size=64).to(torch.uint8)
    probs = tiny_artifact.predict_proba(big)
    assert probs.shape == (8, 10) and np.allclose(probs.sum(1), 1)


def test_shipped_default_model_loads_and_is_calibrated(cifar_test, shipped_probs):
    if not (DEFAULT_MODEL / "model.json").exists():
        pytest.fail("the shipped default model is missing from models/cifar10h-default")
    art = load_artifact(DEFAULT_MODEL)
    assert art.meta.data["held_out_items"].startswith("7000..9999")
    shipped = [f for f in DEFAULT_MODEL.iterdir() if f.suffix != ".onnx"]  # ONNX graphs: `teaming export` writes them
    assert sum(f.stat().st_size for f in shipped) < 10 * 2**20
    idx = np.arange(7000, 8000)
    probs = shipped_probs(idx)  # the same net as `art`, run once per session
    acc = (probs.argmax(1) == cifar_test.labels[idx]).mean()
    stored = art.meta.metrics["calibrated"]["accuracy"]
    assert acc > 0.8 and abs(acc - stored) < 0.03


def test_resnet_on_a_larger_image_folder_round_trips(tmp_path, cifar_test, cpu_training):
    from PIL import Image

    from teaming.data import load_image_folder

    sub = cifar_test.subset(np.arange(120))
    for img, label, item in zip(sub.images, sub.labels, sub.ids):
        folder = tmp_path / "photos" / sub.classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(img.permute(1, 2, 0).numpy()).resize((48, 48))
        big.save(folder / f"{item.split('/')[1]}.png")
    photos = load_image_folder(tmp_path / "photos", 40)
    cfg = TrainConfig(arch="resnet18", input_size=40, loss="hard", epochs=1, batch_size=60)
    art = build_model(
        "photos",
        photos,
        photos.labels,
        np.arange(100),
        np.arange(100, 120),
        cfg,
        tta=False,
        with_fgsm=False,
        progress=False,
    )
    assert art.meta.widths is None and art.meta.input_size == 40
    loaded = load_artifact(save_artifact(art, tmp_path / "resnet"))
    np.testing.assert_array_equal(loaded.predict_proba(photos.images[:8]), art.predict_proba(photos.images[:8]))


def test_model_card_says_what_the_model_is_and_how_it_scored(tiny_artifact):
    card = model_card(tiny_artifact.meta, figures=["reliability.png"])
    meta = tiny_artifact.meta
    assert card.startswith("# Model card: tiny") and f"T = {meta.temperature:.4f}" in card
    assert "mirror test-time augmentation" in card and "![reliability.png](reliability.png)" in card
    assert "**Held out**: 7000..7299 (300 items)" in card
    for key in ("accuracy", "human_ce", "ece"):
        assert (
            f"| {METRIC_NAMES[key]} | {meta.metrics['uncalibrated'][key]:.4f} | {meta.metrics['calibrated'][key]:.4f} |"
            in card
        )
    assert "train" in card and f"{meta.training['stages'][0]['seconds']:.0f} s" in card


def test_joint_training_learns_the_pretraining_images_and_the_human_items_in_one_run(
    cifar_test, cifar10h, cpu_training
):
    """--joint: one stage on both sets (the pretraining images' smoothed hard labels, the items' vote shares);
    the items used are recorded and the held-out items stay out."""
    from teaming.model.train import pretrain_config

    pre = pre_stand_in(cifar_test, 5000, 6000)
    cfg = TrainConfig(widths=(8, 16, 16), batch_size=200, epochs=1)
    pcfg = pretrain_config(cfg, epochs=1)
    art = build_model(
        "joint",
        cifar_test,
        cifar10h,
        np.arange(1000),
        np.arange(7000, 7300),
        cfg,
        pretrain=pre,
        pretrain_config=pcfg,
        with_fgsm=False,
        progress=False,
        joint=True,
    )
    training = art.meta.training
    assert training["joint"] is True and [s["name"] for s in training["stages"]] == ["joint"]
    assert "1000 images from stand-in pack" in training["stages"][0]["description"]
    assert "together with 900 images' human targets" in training["stages"][0]["description"]
    assert training["config"]["loss"] == "soft" and training["config"]["label_smoothing"] == 0.0
    assert training["pretrain_config"]["label_smoothing"] == 0.2  # applied to the pretraining rows only
    assert art.meta.data["used_positions"] == [[0, 999]]
    with pytest.raises(ValueError, match="joint training needs pretraining images"):
        build_model("x", cifar_test, cifar10h, np.arange(100), None, cfg, joint=True, progress=False)


def test_fine_tuning_an_artifact_records_its_stages_command_and_items(tiny_artifact, cifar_test, cifar10h):
    """`start`: the artifact's net is fine-tuned, and the new model.json keeps its stages, command and items."""
    tiny_artifact.meta.training["command"] = "teaming train --out runs/tiny"
    cfg = TrainConfig(widths=(64, 64, 64), batch_size=200, epochs=1)  # the start's widths win
    art = build_model(
        "tuned", cifar_test, cifar10h, np.arange(2000, 2500), None, cfg, progress=False, start=tiny_artifact
    )
    training = art.meta.training
    assert [s["name"] for s in training["stages"]] == ["train", "fine-tune"]
    assert training["init"] == {"name": "tiny", "command": "teaming train --out runs/tiny"}
    assert art.meta.widths == [8, 16, 16]
    assert art.meta.data["used_positions"] == [[0, 999], [2000, 2499]]
    mixed = build_model(
        "mixed",
        cifar_test,
        cifar10h,
        np.arange(2000, 2500),
        None,
        cfg,
        progress=False,
        start=tiny_artifact,
        interpolate=0.5,
    )
    assert [s["name"] for s in mixed.meta.training["stages"]] == ["train", "fine-tune", "interpolate"]
    assert "0.5 of the way" in mixed.meta.training["stages"][-1]["description"]
    mixed.meta.training["command"] = "teaming train --out runs/mixed --init runs/tiny --interpolate 0.5"
    card = model_card(mixed.meta)
    assert "Reproduce: `teaming train --out runs/tiny` builds the starting model tiny; then `teaming train" in card
    again = build_model("again", cifar_test, cifar10h, np.arange(2000, 2500), None, cfg, progress=False, start=mixed)
    assert again.meta.training["init"] == {
        "name": "mixed",
        "command": mixed.meta.training["command"],
        "init": {"name": "tiny", "command": "teaming train --out runs/tiny"},
    }
    again.meta.training["command"] = "teaming train --out runs/again --init runs/mixed"
    assert (
        "Reproduce: `teaming train --out runs/tiny` builds the starting model tiny; then "
        "`teaming train --out runs/mixed --init runs/tiny --interpolate 0.5` builds the starting model mixed; "
        "then `teaming train --out runs/again"
    ) in model_card(again.meta)
    with pytest.raises(ValueError, match="needs a starting model"):
        build_model("x", cifar_test, cifar10h, np.arange(100), None, cfg, progress=False, interpolate=0.5)
    with pytest.raises(ValueError, match="share must be in"):  # refused before any training
        build_model(
            "x", cifar_test, cifar10h, np.arange(100), None, cfg, progress=False, start=tiny_artifact, interpolate=1.5
        )
    with pytest.raises(ValueError, match="an artifact or pretrain"):
        build_model(
            "x",
            cifar_test,
            cifar10h,
            np.arange(100),
            None,
            cfg,
            pretrain=pre_stand_in(cifar_test, 0, 10),
            start=tiny_artifact,
        )


def pre_stand_in(cifar_test, first: int, stop: int):
    """Test images standing in for a pretraining pack (hard labels, a source name)."""
    from teaming.data import ImageSet

    ids = [f"p{i}" for i in range(first, stop)]
    return ImageSet(
        cifar_test.images[first:stop], ids, cifar_test.classes, cifar_test.labels[first:stop], source="stand-in pack"
    )
