"""`teaming train` and `teaming evaluate`: build a calibrated model artifact on human labels, and score one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
import typer
from rich.table import Table

from teaming.cli._common import HELD_OUT_HELP, command_line, console, default, fail, fmt
from teaming.model.train import (
    TrainConfig,
    auto_batch_size,
    finetune_config,
    pretrain_config,
)

LABELS_HELP = (
    "'cifar10h', 'cifar10n[:cols]', 'hard', or a votes CSV, one row per vote, columns item_id, annotator_id, label "
    "(a class name or id), seconds (optional); an ImageFolder item's id is '<class folder>/<file name>'"
)
HELP = {
    "images": "'default' (embedded CIFAR-10 test), a JPEG pack .npz, or an ImageFolder",
    "train_items": "positions to train and calibrate on (default: 0:7000 of 'default', else the first 80%)",
    "eval_items": "held-out positions to score (default: every other position; 'none' to skip)",
    "batch_size": "images per step (default: 1024 from 4,096 training items up, else 16 steps an epoch)",
    "outlier_exposure": "weight of a loss pushing synthetic outliers toward uniform probabilities (measured in "
    "BENCHMARKS.md)",
    "finetune_lr_scale": "fine-tuning learning rate as a share of --lr",
    "pretrain": "JPEG pack with hard labels to pretrain on, or 'shared' for CIFAR-10 train",
    "joint": "train once on the pretraining images and the human-labelled items together (no fine-tuning)",
    "init": "fine-tune this artifact's net instead of a new one (its stages and command are recorded)",
    "interpolate": "with --init: keep the net this share of the way from the start to the fine-tuned weights (WiSE-FT)",
    "bf16": "bfloat16 autocast (default: on GPUs only; 1.7x on AVX512-BF16 CPUs)",
}


def train_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., help="artifact folder to write, e.g. models/my-model"),
    images: str = typer.Option("default", help=HELP["images"]),
    labels: str = typer.Option("cifar10h", help=LABELS_HELP),
    train_items: Optional[str] = typer.Option(None, help=HELP["train_items"]),
    eval_items: Optional[str] = typer.Option(None, help=HELP["eval_items"]),
    loss: str = typer.Option(TrainConfig.loss, help="soft | hard | sampled"),
    epochs: float = typer.Option(default(finetune_config, "epochs"), help="epochs on the human labels"),
    lr: float = typer.Option(TrainConfig.lr, help="learning rate per 1024 examples"),
    label_smoothing: float = typer.Option(TrainConfig.label_smoothing),
    arch: str = typer.Option(TrainConfig.arch, help="fastnet | resnet18"),
    widths: str = typer.Option(",".join(map(str, TrainConfig.widths)), help="fastnet widths"),
    size: int = typer.Option(TrainConfig.input_size, help="input size (images are resized to it)"),
    batch_size: Optional[int] = typer.Option(None, help=HELP["batch_size"]),
    grayscale: float = typer.Option(TrainConfig.grayscale, help="share of training images made colourless"),
    soften: float = typer.Option(TrainConfig.soften, help="share of training images resampled down and up"),
    outlier_exposure: float = typer.Option(TrainConfig.outlier_exposure, help=HELP["outlier_exposure"]),
    pretrain: Optional[str] = typer.Option(None, help=HELP["pretrain"]),
    pretrain_epochs: float = typer.Option(default(pretrain_config, "epochs")),
    joint: bool = typer.Option(False, help=HELP["joint"]),
    init: Optional[Path] = typer.Option(None, help=HELP["init"]),
    finetune_lr_scale: float = typer.Option(default(finetune_config, "lr_scale"), help=HELP["finetune_lr_scale"]),
    interpolate: Optional[float] = typer.Option(None, help=HELP["interpolate"]),
    calibration_fraction: float = typer.Option(0.1, help="share of training items kept aside to fit the temperature"),
    tta: bool = typer.Option(True, help="average the image and its mirror at prediction time"),
    fgsm: bool = typer.Option(True, help="also score FGSM robustness"),
    seed: int = typer.Option(TrainConfig.seed),
    device: str = typer.Option(TrainConfig.device),
    bf16: Optional[bool] = typer.Option(None, "--bf16/--no-bf16", help=HELP["bf16"]),
    name: Optional[str] = typer.Option(None, help="model name (default: the folder name)"),
    hardware_note: str = typer.Option("", help="a sentence for the model card about where it was trained"),
    force: bool = typer.Option(False, help="save even a model at chance or with an absurd temperature"),
) -> None:
    """Train a calibrated classifier on human labels and save it as an artifact with a model card."""
    _train(SimpleNamespace(**ctx.params), command_line(ctx))


def _train(o: SimpleNamespace, command: str) -> None:
    """`teaming train` with its options `o`: check them, load the data, build the model, save it if sound."""
    from teaming.datasets import load_images, resolve_labels
    from teaming.model import build_model
    from teaming.model.recipe import check_modes

    try:
        check_modes(joint=o.joint, pretrain=bool(o.pretrain), start=o.init is not None, interpolate=o.interpolate)
        data = load_images(o.images, o.size)
        targets = resolve_labels(o.labels, data)
        tr, ev = _train_eval_items(o.images, o.train_items, o.eval_items, len(data))
        n_fit = len(tr) - max(1, int(round(len(tr) * o.calibration_fraction)))
        base = _train_config(o, n_fit)
        pre_base = replace(base, batch_size=o.batch_size or TrainConfig.batch_size)
        pre, pcfg = _pretraining(o.pretrain, o.pretrain_epochs, pre_base)
        start = None if o.init is None else _load_start(o.init)
        if o.pretrain or start is not None:
            base = finetune_config(base, loss=o.loss, epochs=o.epochs, lr_scale=o.finetune_lr_scale)
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    artifact = build_model(
        o.name or o.out.name,
        data,
        targets,
        tr,
        ev,
        base,
        pretrain=pre,
        pretrain_config=pcfg,
        calibration_fraction=o.calibration_fraction,
        tta=o.tta,
        with_fgsm=o.fgsm,
        joint=o.joint,
        start=start,
        interpolate=o.interpolate,
    )
    artifact.meta.training["command"] = command
    if o.hardware_note:
        artifact.meta.training["hardware_note"] = o.hardware_note
    _save_if_sound(artifact, o.out, None if ev is None else len(ev), n_fit, base.batch_size, o.force)


def _train_config(o: SimpleNamespace, n_fit: int) -> TrainConfig:
    """The training settings `teaming train`'s options name."""
    return TrainConfig(
        arch=o.arch,
        widths=tuple(int(x) for x in o.widths.split(",")),
        input_size=o.size,
        loss=o.loss,
        label_smoothing=o.label_smoothing,
        epochs=o.epochs,
        batch_size=o.batch_size or auto_batch_size(n_fit),
        grayscale=o.grayscale,
        soften=o.soften,
        outlier_exposure=o.outlier_exposure,
        lr=o.lr,
        seed=o.seed,
        device=o.device,
        bf16=o.bf16,
    )


def _train_eval_items(
    images: str, train_items: str | None, eval_items: str | None, n: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """The training positions (default: 0:7000 of 'default', else the first 80%) and the held-out ones (default:
    the rest; None for 'none' or an empty selection)."""
    from teaming.items import parse_items

    tr = parse_items(train_items or ("0:7000" if images == "default" else f"0:{int(0.8 * n)}"), n)
    rest = np.setdiff1d(np.arange(n), tr)
    ev = None if eval_items == "none" else parse_items(eval_items, n) if eval_items else rest
    ev = None if ev is not None and not len(ev) else ev
    if ev is not None and np.intersect1d(tr, ev).size:
        raise ValueError("train and eval items overlap")
    return tr, ev


def _pretraining(pretrain: str | None, epochs: float, base: TrainConfig):
    """(the pretraining images, their config), or (None, None) without --pretrain."""
    if not pretrain:
        return None, None
    from teaming.data import load_jpeg_pack
    from teaming.datasets import cifar10_train_pack

    pre = load_jpeg_pack(cifar10_train_pack() if pretrain == "shared" else Path(pretrain), base.input_size)
    if pretrain == "shared":
        pre.source = "CIFAR-10 train, shared/data/cifar10_train_jpeg.npz"
    return pre, pretrain_config(base, epochs=epochs)


def _load_start(init: Path):
    from teaming.model import load_artifact

    return load_artifact(init)  # on the CPU: training moves the net to its device


def _save_if_sound(artifact, out: Path, n_eval: int | None, n_fit: int, batch: int, force: bool) -> None:
    """Save the artifact and show its metrics, unless it fits badly (at chance, or an absurd temperature)."""
    from teaming.model import save_artifact
    from teaming.model.card import metrics_table
    from teaming.model.recipe import fit_problems

    problems = fit_problems(artifact.meta, n_eval)
    if problems and not force:
        per_epoch = n_fit // min(batch, n_fit)
        cause = (
            f"It trained {per_epoch} optimizer step(s) an epoch (batch {batch} on {n_fit} items): lower --batch-size"
            if per_epoch < 8
            else "Check the labels and splits"
        )
        fail(f"not saved: {'; '.join(problems)}. {cause}, or pass --force")
    save_artifact(artifact, out)
    console.print(f"saved [bold]{out}[/bold] (T = {artifact.meta.temperature:.3f})")
    if artifact.meta.metrics:
        console.print(metrics_table(artifact.meta.metrics))


def evaluate_cmd(
    model: Path = typer.Argument(Path("models/cifar10h-default"), help="artifact folder"),
    images: str = typer.Option("default", help="'default', a JPEG pack .npz, or an ImageFolder"),
    labels: Optional[str] = typer.Option(
        "cifar10h", help="human labels to score against ('none' for hard labels only)"
    ),
    items: Optional[str] = typer.Option(None, help=HELD_OUT_HELP),
    fgsm: bool = typer.Option(False, help="also score FGSM robustness at l_inf 4/255"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the metrics as JSON here"),
    plot: Optional[Path] = typer.Option(None, help="write a reliability diagram (PNG) here"),
    device: str = typer.Option(TrainConfig.device),
) -> None:
    """Score a model artifact on labelled images; prints a metrics table and optionally writes JSON."""
    from teaming._validation import DataError
    from teaming.datasets import load_images, resolve_labels
    from teaming.items import parse_items
    from teaming.labels import HumanLabels
    from teaming.model import Artifact, load_model
    from teaming.model.recipe import evaluate_items, evaluate_logits
    from teaming.model.train import resolve_device
    from teaming.team import unused_positions

    try:
        art = load_model(model, resolve_device(device))
        if fgsm and not isinstance(art, Artifact):
            raise ValueError(
                f"--fgsm attacks a net teaming trained through its gradients; {model} is an imported graph"
            )
        data = load_images(images, art.contract, art.classes)
        if data.classes != art.classes:
            raise DataError(f"image classes {data.classes} differ from the model's {art.classes}")
        human = resolve_labels(labels, data) if labels not in (None, "none") else None
        idx = parse_items(items, len(data)) if items else unused_positions(art.meta, data)
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    human = human if isinstance(human, HumanLabels) else None
    with console.status(f"scoring {len(idx)} items"):
        if isinstance(art, Artifact):
            evaluation = evaluate_items(art.net, data, human, idx, art.meta.temperature, art.meta.tta, fgsm)
        else:
            logits = art.logits(data.images[torch.from_numpy(idx)])
            evaluation = evaluate_logits(logits, data, human, idx, art.meta.temperature)
    result = evaluation.metrics
    table = Table(title=f"{art.meta.name} on {len(idx)} items of {data.source}")
    table.add_column("metric")
    for col in result:
        table.add_column(col, justify="right")
    for key in result["calibrated"]:
        table.add_row(key, *[fmt(result[c].get(key)) for c in result])
    console.print(table)
    if json_out:
        json_out.write_text(json.dumps({"model": art.meta.name, "items": items, "metrics": result}, indent=2) + "\n")
        console.print(f"wrote {json_out}")
    if plot and evaluation.labels is not None:
        plot.write_bytes(evaluation.reliability_png(f"{art.meta.name} on {len(idx)} items"))
        console.print(f"wrote {plot}")


def fit_guard_cmd(
    model: Path = typer.Argument(..., help="artifact folder (trained before it had a familiarity guard)"),
    images: str = typer.Option("default", help="the images it was trained on: 'default', a pack or an ImageFolder"),
    labels: str = typer.Option("cifar10h", help="their labels, as for `teaming train`"),
    items: str = typer.Option("0:7000", help="the positions it was trained and calibrated on"),
    device: str = typer.Option(TrainConfig.device),
) -> None:
    """Fit a model's familiarity guard on its training items and record them, as `teaming train` does today."""
    from teaming.datasets import load_images, resolve_labels
    from teaming.items import item_runs, parse_items
    from teaming.model import load_artifact, save_artifact
    from teaming.model.recipe import fit_guard
    from teaming.model.train import resolve_device

    try:
        art = load_artifact(model, resolve_device(device))
        data = load_images(images, art.meta.input_size, art.classes)
        targets = resolve_labels(labels, data)
        idx = parse_items(items, len(data))
    except (ValueError, FileNotFoundError) as err:
        fail(err)
    pick = targets.subset(idx) if hasattr(targets, "subset") else np.asarray(targets)[idx]
    with console.status(f"fitting the guard on {len(idx)} items and as many synthetic outliers"):
        art.guard = fit_guard(art.net, data.images[torch.from_numpy(idx)], pick, len(art.classes), art.meta.tta)
    art.meta.data.setdefault("used_positions", item_runs(idx))
    save_artifact(art, model)
    console.print(f"fitted the familiarity guard of [bold]{model}[/bold] on {len(idx)} items")
    if (model / "policy.json").exists():
        console.print(f"refit its policy so its unfamiliarity limit matches: teaming fit-policy {model} --out ...")
