"""End-to-end model building: optional pretraining, training on human labels, calibration, held-out evaluation."""

from __future__ import annotations

import copy
import datetime as dt
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.stats import binomtest

from teaming.data import ImageSet
from teaming.items import item_runs, run_positions
from teaming.labels import HumanLabels
from teaming.model.artifact import Artifact
from teaming.model.calibration import fit_temperature, softmax
from teaming.model.familiarity import FamiliarityGuard
from teaming.model.figures import reliability_png
from teaming.model.meta import ModelMeta
from teaming.model.metrics import evaluate_probs, fgsm
from teaming.model.outliers import synthetic_outliers
from teaming.model.predict import predict_logits, predict_outputs
from teaming.model.train import (
    TrainConfig,
    batch_targets,
    check_interpolation_share,
    interpolate_weights,
    resolve_device,
    target_distribution,
    train,
)
from teaming.model.train import pretrain_config as pretrain_defaults


@dataclass
class Stage:
    """One training run of a recipe and what it took."""

    name: str
    description: str
    seconds: float
    device: str
    history: list


def split_calibration(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions 0..n-1 split into (fit, calibration) at random; calibration gets `fraction` of them."""
    if not 0 < fraction < 1:
        raise ValueError(f"calibration fraction must be in (0, 1), got {fraction}")
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def epochs_of(config: TrainConfig) -> str:
    """A stage's length for the card, with the outlier-exposure weight where it trained with one."""
    exposure = f", outlier exposure {config.outlier_exposure:g}" if config.outlier_exposure else ""
    return f"{config.epochs:g} epochs{exposure}"


def describe_items(idx: np.ndarray) -> str:
    """'0..6999' for a contiguous run, else a count with the range."""
    idx = np.sort(np.asarray(idx))
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        return f"{idx[0]}..{idx[-1]} ({len(idx)} items)"
    return f"{len(idx)} items within {idx.min()}..{idx.max()}"


def build_model(
    name: str,
    images: ImageSet,
    targets: HumanLabels | np.ndarray,
    train_items: np.ndarray,
    eval_items: np.ndarray | None,
    config: TrainConfig,
    pretrain: ImageSet | None = None,
    pretrain_config: TrainConfig | None = None,
    calibration_fraction: float = 0.1,
    tta: bool = True,
    with_fgsm: bool = True,
    progress: bool = True,
    joint: bool = False,
    start: Artifact | None = None,
    interpolate: float | None = None,
) -> Artifact:
    """Train (fine-tuning from a pretrained net if `pretrain` is given), fit the temperature and score held-out items.

    `targets` are aligned with `images`: human vote counts or hard label ids. `joint` trains once on the
    pretraining images and the training items together, under `pretrain_config`, instead of pretraining then
    fine-tuning (`config` then only names the net). `start` fine-tunes an artifact's net instead, and records
    its stages and command before this run's; `interpolate` then keeps the net that share of the way from the
    start's weights to the fine-tuned ones (WiSE-FT).
    """
    device = resolve_device(config.device)
    human = targets if isinstance(targets, HumanLabels) else None
    pick = (lambda idx: targets.subset(idx)) if human is not None else (lambda idx: np.asarray(targets)[idx])
    fit_pos, cal_pos = split_calibration(len(train_items), calibration_fraction, config.seed)
    fit_idx, cal_idx = np.asarray(train_items)[fit_pos], np.asarray(train_items)[cal_pos]
    t_fit = torch.from_numpy(fit_idx)
    num_classes = len(images.classes)
    stages: list[Stage] = []
    init = None
    if joint and pretrain is None:
        raise ValueError("joint training needs pretraining images")
    if interpolate is not None:
        if start is None:
            raise ValueError("weight interpolation needs a starting model to interpolate from")
        check_interpolation_share(interpolate)
    if start is not None:
        if pretrain is not None:
            raise ValueError("start from an artifact or pretrain, not both")
        if list(start.meta.classes) != list(images.classes):
            raise ValueError(f"the starting model's classes {start.meta.classes} are not the images' {images.classes}")
        widths = tuple(start.meta.widths) if start.meta.widths else config.widths
        config = replace(config, arch=start.meta.arch, widths=widths, input_size=start.meta.input_size)
        init = start.net
        stages = [Stage(**stage) for stage in start.meta.training.get("stages", [])]
    if pretrain is not None:
        if pretrain.labels is None:
            raise ValueError("pretraining images need hard labels")
        net_only = TrainConfig(config.arch, config.widths, config.input_size, seed=config.seed, device=config.device)
        pcfg = pretrain_config or pretrain_defaults(net_only)
        what = (
            f"{len(pretrain)} images from {pretrain.source}, {pcfg.loss} labels, label smoothing {pcfg.label_smoothing}"
        )
        if joint:
            pre_rows = batch_targets(
                torch.from_numpy(target_distribution(pretrain.labels, num_classes)), pcfg.loss, pcfg.label_smoothing
            ).numpy()
            rows = np.concatenate([pre_rows, target_distribution(pick(fit_idx), num_classes)])
            config = replace(pcfg, loss="soft", label_smoothing=0.0)
            res = train(torch.cat([pretrain.images, images.images[t_fit]]), rows, config, progress=progress)
            what += f", together with {len(fit_idx)} images' {'human' if human is not None else 'hard'} targets"
        else:
            res = train(pretrain.images, pretrain.labels, pcfg, num_classes=num_classes, progress=progress)
            init = res.net
        stages.append(
            Stage(
                "joint" if joint else "pretrain",
                f"{what}, {epochs_of(pcfg)}",
                res.seconds,
                str(device),
                res.history,
            )
        )
    if not joint:
        res = train(
            images.images[t_fit],
            pick(fit_idx),
            config,
            init=copy.deepcopy(init) if init is not None else None,
            num_classes=num_classes,
            progress=progress,
        )
        stages.append(
            Stage(
                "fine-tune" if init is not None else "train",
                f"{len(fit_idx)} images, {config.loss} targets, {epochs_of(config)}",
                res.seconds,
                str(device),
                res.history,
            )
        )
    net = res.net
    if interpolate is not None:
        began = time.perf_counter()
        net = interpolate_weights(start.net, net, interpolate, images.images[t_fit])
        what = f"weights {interpolate:g} of the way from the starting net to the fine-tuned one (WiSE-FT)"
        what += f", BatchNorm statistics re-estimated on the {len(fit_idx)} training images"
        stages.append(Stage("interpolate", what, time.perf_counter() - began, str(device), []))
    guard = fit_guard(net, images.images[t_fit], pick(fit_idx), len(images.classes), tta)

    cal_logits = predict_logits(net, images.images[torch.from_numpy(cal_idx)], tta=tta)
    cal_targets = human.subset(cal_idx).soft() if human is not None else np.asarray(targets)[cal_idx]
    temperature = fit_temperature(cal_logits, cal_targets)

    metrics: dict = {}
    figures: dict[str, bytes] = {}
    held_out = describe_items(eval_items) if eval_items is not None and len(eval_items) else None
    earlier = start.meta.data if start is not None else {}
    lineage = start.meta.training if start is not None else {}
    if held_out is not None:
        evaluation = evaluate_items(net, images, human, np.asarray(eval_items), temperature, tta, with_fgsm)
        metrics = evaluation.metrics
        if evaluation.labels is not None:
            figures["reliability.png"] = evaluation.reliability_png(f"{name}: held-out items {held_out}")
    meta = ModelMeta(
        name=name,
        classes=list(images.classes),
        arch=config.arch,
        input_size=config.input_size,
        widths=list(config.widths) if config.arch == "fastnet" else None,
        normalization={
            "mean": net.normalize.mean.flatten().tolist(),
            "std": net.normalize.std.flatten().tolist(),
            "input": "RGB float in [0, 1]",
        },
        temperature=temperature,
        tta=tta,
        data={
            "images": images.source,
            "labels": "human vote counts" if human is not None else "hard labels",
            "train_items": describe_items(fit_idx),
            "used_positions": item_runs(
                np.concatenate([fit_idx, cal_idx, run_positions(earlier.get("used_positions"))])
            ),
            "calibration_items": describe_items(cal_idx),
            "eval_items": held_out,
            "held_out_items": held_out,
        },
        training={
            "joint": joint or lineage.get("joint", False),
            "config": config.to_dict(),
            "pretrain_config": pretrain_config.to_dict() if pretrain_config else lineage.get("pretrain_config"),
            "stages": [s.__dict__ for s in stages],
            **({"init": starting_model(start.meta.name, lineage)} if start is not None else {}),
        },
        metrics=metrics,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
    return Artifact(net.eval(), meta, figures, guard)


def starting_model(name: str, training: dict) -> dict:
    """What model.json records of the model a run started from: its name and command, and the same of the
    model it started from in turn, so the card can give every command from the first."""
    record = {"name": name, "command": training.get("command")}
    if training.get("init"):
        record["init"] = training["init"]
    return record


def fit_guard(
    net, images: torch.Tensor, targets: HumanLabels | np.ndarray, num_classes: int, tta: bool, seed: int = 0
) -> FamiliarityGuard:
    """The familiarity guard on the training items' features, each under its (majority) training label, and on
    as many synthetic outliers made from those items."""
    _, features = predict_outputs(net, images, tta=tta)
    _, outlier_features = predict_outputs(net, synthetic_outliers(images, len(images), seed), tta=tta)
    labels = targets.soft().argmax(1) if isinstance(targets, HumanLabels) else np.asarray(targets)
    return FamiliarityGuard.fit(features, labels, num_classes, outlier_features)


@dataclass
class Evaluation:
    """Metrics and probabilities before and after temperature scaling, keyed 'uncalibrated' / 'calibrated'."""

    metrics: dict
    probs: dict
    labels: np.ndarray | None

    def reliability_png(self, title: str = "") -> bytes:
        if self.labels is None:
            raise ValueError("a reliability diagram needs hard labels")
        return reliability_png(self.probs, self.labels, title)


def evaluate_items(
    net, images: ImageSet, human: HumanLabels | None, idx: np.ndarray, temperature: float, tta: bool, with_fgsm: bool
) -> Evaluation:
    """Score images[idx] before and after temperature scaling, FGSM included when asked."""
    t = torch.from_numpy(idx)
    logits = predict_logits(net, images.images[t], tta=tta)
    evaluation = evaluate_logits(logits, images, human, idx, temperature)
    if with_fgsm and evaluation.labels is not None:
        evaluation.metrics["calibrated"].update(fgsm(net, images.images[t], evaluation.labels))
    return evaluation


def evaluate_logits(
    logits: torch.Tensor | np.ndarray, images: ImageSet, human: HumanLabels | None, idx: np.ndarray, temperature: float
) -> Evaluation:
    """Score any model's logits on images[idx] before and after temperature scaling."""
    labels = images.labels[idx] if images.labels is not None else None
    counts = human.subset(idx).counts if human is not None else None
    probs = {"uncalibrated": softmax(logits, 1.0), "calibrated": softmax(logits, temperature)}
    metrics = {k: evaluate_probs(p, labels, counts) for k, p in probs.items()}
    return Evaluation(metrics, probs, labels)


def fit_problems(meta: ModelMeta, n_eval: int | None, max_temperature: float = 20.0) -> list[str]:
    """Reasons not to save a freshly trained model: an absurd temperature (its confidences mean nothing) or
    held-out accuracy no better than guessing (exact binomial test against 1/C at 0.01)."""
    problems = []
    t = meta.temperature
    if not 1 / max_temperature <= t <= max_temperature:
        problems.append(
            f"the fitted temperature {t:.4g} is absurd (outside {1 / max_temperature:g}..{max_temperature:g})"
        )
    acc = meta.metrics.get("calibrated", {}).get("accuracy")
    if acc is not None and n_eval:
        chance = 1 / len(meta.classes)
        p = binomtest(int(round(acc * n_eval)), n_eval, chance, alternative="greater").pvalue
        if p > 0.01:
            problems.append(f"held-out accuracy {acc:.2%} on {n_eval} items is no better than chance ({chance:.0%})")
    return problems
