"""Command line: `teaming train` builds a model artifact, `teaming evaluate` scores one."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from teaming.data import DataError, ImageSet, load_images, load_jpeg_pack, shared_data_dir
from teaming.labels import HumanLabels, load_cifar10h, load_cifar10n

app = typer.Typer(
    help="Human-AI teaming: train calibrated classifiers on human labels and evaluate them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()


def parse_items(spec: str | None, n: int) -> np.ndarray:
    """'7000:10000' (a slice), '1,5,9' (positions) or None (all) -> positions into an image set."""
    if spec is None or spec in ("", "all"):
        return np.arange(n)
    try:
        if ":" in spec:
            a, b = (int(x) if x else None for x in spec.split(":"))
            idx = np.arange(n)[slice(a, b)]
        else:
            idx = np.array([int(x) for x in spec.split(",")])
    except ValueError:
        raise DataError(f"items {spec!r} must look like 'START:STOP' or 'I,J,K'") from None
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= n:
        raise DataError(f"items {spec!r} select nothing valid among {n} images")
    return idx


def resolve_labels(spec: str, images: ImageSet) -> HumanLabels | np.ndarray:
    """'hard', 'cifar10h[:PATH]', 'cifar10n[:col,col]' or a long CSV path -> targets aligned with images."""
    if spec == "hard":
        if images.labels is None:
            raise DataError("these images carry no hard labels")
        return images.labels
    if spec.startswith("cifar10h"):
        path = spec.split(":", 1)[1] if ":" in spec else None
        human = load_cifar10h(path, images.classes)
    elif spec.startswith("cifar10n"):
        cols = spec.split(":", 1)[1].split(",") if ":" in spec else ["random_label1", "random_label2", "random_label3"]
        shared = shared_data_dir()
        if shared is None:
            raise DataError("CIFAR-10N labels live in ../shared/data (or $TEAMING_DATA), which is absent")
        human = load_cifar10n(shared / "cifar10n_labels.npz", cols)
    else:
        human = HumanLabels.from_csv(spec, images.classes, ids=None)
    return human.aligned_to(images.ids)


def _fmt(value: float | int | None) -> str:
    return "" if value is None else str(value) if isinstance(value, int) else f"{value:.4f}"


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(2)


@app.command("train")
def train_cmd(
    out: Path = typer.Option(..., help="artifact folder to write, e.g. models/my-model"),
    images: str = typer.Option(
        "default", help="'default' (embedded CIFAR-10 test), a JPEG pack .npz, or an ImageFolder"
    ),
    labels: str = typer.Option(
        "cifar10h", help="'cifar10h', 'cifar10n[:cols]', 'hard', or a CSV item_id,annotator_id,label"
    ),
    train_items: str = typer.Option("0:7000", help="positions to train and calibrate on"),
    eval_items: Optional[str] = typer.Option("7000:10000", help="held-out positions to score ('none' to skip)"),
    loss: str = typer.Option("soft", help="soft | hard | sampled"),
    epochs: float = typer.Option(8.0),
    lr: float = typer.Option(11.5, help="learning rate per 1024 examples"),
    label_smoothing: float = typer.Option(0.0),
    arch: str = typer.Option("fastnet", help="fastnet | resnet18"),
    widths: str = typer.Option("64,256,256", help="fastnet widths"),
    size: int = typer.Option(32, help="input size (images are resized to it)"),
    batch_size: int = typer.Option(1024),
    pretrain: Optional[str] = typer.Option(
        None, help="JPEG pack with hard labels to pretrain on, or 'shared' for CIFAR-10 train"
    ),
    pretrain_epochs: float = typer.Option(10.0),
    calibration_fraction: float = typer.Option(0.1, help="share of training items kept aside to fit the temperature"),
    tta: bool = typer.Option(True, help="average the image and its mirror at prediction time"),
    fgsm: bool = typer.Option(True, help="also score FGSM robustness"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    name: Optional[str] = typer.Option(None, help="model name (default: the folder name)"),
    hardware_note: str = typer.Option("", help="a sentence for the model card about where it was trained"),
) -> None:
    """Train a calibrated classifier on human labels and save it as an artifact with a model card."""
    from teaming.artifact import save_artifact
    from teaming.card import metrics_table
    from teaming.recipe import build_model
    from teaming.train import TrainConfig, finetune_config

    try:
        data = load_images(images, size)
        targets = resolve_labels(labels, data)
        tr = parse_items(train_items, len(data))
        ev = None if eval_items in (None, "none") else parse_items(eval_items, len(data))
        if ev is not None and np.intersect1d(tr, ev).size:
            raise DataError("train and eval items overlap")
        w = tuple(int(x) for x in widths.split(","))
        base = TrainConfig(
            arch=arch,
            widths=w,
            input_size=size,
            loss=loss,
            epochs=epochs,
            lr=lr,
            label_smoothing=label_smoothing,
            batch_size=batch_size,
            seed=seed,
            device=device,
        )
        pre = pcfg = None
        if pretrain:
            shared = shared_data_dir() if pretrain == "shared" else None
            path = shared / "cifar10_train_jpeg.npz" if shared else Path(pretrain)
            pre = load_jpeg_pack(path, size)
            if pretrain == "shared":
                pre.source = "CIFAR-10 train, shared/data/cifar10_train_jpeg.npz"
            pcfg = TrainConfig(**{**base.to_dict(), "loss": "hard", "label_smoothing": 0.2, "epochs": pretrain_epochs})
            base = finetune_config(base, loss=loss, epochs=epochs)
    except (DataError, ValueError, FileNotFoundError) as err:
        _fail(err)
    artifact = build_model(name or out.name, data, targets, tr, ev, base, pre, pcfg, calibration_fraction, tta, fgsm)
    artifact.meta.training["command"] = "teaming " + shlex.join(sys.argv[1:])
    if hardware_note:
        artifact.meta.training["hardware_note"] = hardware_note
    save_artifact(artifact, out)
    console.print(f"saved [bold]{out}[/bold] (T = {artifact.meta.temperature:.3f})")
    if artifact.meta.metrics:
        console.print(metrics_table(artifact.meta.metrics))


@app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    images: str = typer.Option("default", help="'default', a JPEG pack .npz, or an ImageFolder"),
    labels: Optional[str] = typer.Option(
        "cifar10h", help="human labels to score against ('none' for hard labels only)"
    ),
    items: Optional[str] = typer.Option("7000:10000", help="positions to score"),
    fgsm: bool = typer.Option(False, help="also score FGSM robustness at l_inf 4/255"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON here"),
    plot: Optional[Path] = typer.Option(None, help="write a reliability diagram (PNG) here"),
    device: str = typer.Option("auto"),
) -> None:
    """Score a model artifact on labelled images; prints a metrics table and optionally writes JSON."""
    from teaming.artifact import load_artifact
    from teaming.recipe import evaluate_items
    from teaming.train import resolve_device

    try:
        art = load_artifact(model, resolve_device(device))
        data = load_images(images, art.meta.input_size, art.classes)
        if data.classes != art.classes:
            raise DataError(f"image classes {data.classes} differ from the model's {art.classes}")
        human = resolve_labels(labels, data) if labels not in (None, "none") else None
        idx = parse_items(items, len(data))
    except (DataError, ValueError, FileNotFoundError) as err:
        _fail(err)
    evaluation = evaluate_items(
        art.net, data, human if isinstance(human, HumanLabels) else None, idx, art.meta.temperature, art.meta.tta, fgsm
    )
    result = evaluation.metrics
    table = Table(title=f"{art.meta.name} on {len(idx)} items of {data.source}")
    table.add_column("metric")
    for col in result:
        table.add_column(col, justify="right")
    for key in result["calibrated"]:
        table.add_row(key, *[_fmt(result[c].get(key)) for c in result])
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"model": art.meta.name, "items": items, "metrics": result}, indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if plot and evaluation.labels is not None:
        plot.write_bytes(evaluation.reliability_png(f"{art.meta.name} on {len(idx)} items"))
        console.print(f"wrote {plot}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
