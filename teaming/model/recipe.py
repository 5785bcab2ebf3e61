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
    resolve_device,
    target_distribution,
    train,
)
from teaming.model.train import pretrain_config as pretrain_defaults
from teaming.model.weights import check_interpolation_share, interpolate_weights


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


def check_modes(*, joint: bool, pretrain: bool, start: bool, interpolate: float | None) -> None:
    """Refuse a combination of building modes that cannot work, before any data is loaded or net trained."""
    if joint and not pretrain:
        raise ValueError("joint training needs pretraining images (--joint needs --pretrain)")
    if start and pretrain:
        raise ValueError(
            "start from an artifact or pretrain, not both (--init and --pretrain exclude each other: fine-tune a "
            "model, or pretrain a new one)"
        )
    if interpolate is not None:
        if not start:
            raise ValueError(
                "weight interpolation needs a starting model to interpolate from (--interpolate needs --init: it "
                "mixes the starting model's weights with the fine-tuned ones)"
            )
        check_interpolation_share(interpolate)


@dataclass(kw_only=True)
class Recipe:
    """How a model is built from its training items: the training config and the optional modes (pretraining,
    joint training, fine-tuning a starting artifact, weight interpolation), calibration and evaluation."""

    name: str
    config: TrainConfig
    pretrain: ImageSet | None = None
    pretrain_config: TrainConfig | None = None
    calibration_fraction: float = 0.1
    tta: bool = True
    with_fgsm: bool = True
    progress: bool = True
    joint: bool = False
    start: Artifact | None = None
    interpolate: float | None = None


@dataclass
class _Build:
    """One build in progress: the recipe, the images and targets, the split, and the stages so far."""

    recipe: Recipe
    config: TrainConfig  # the recipe's, with the starting artifact's net when there is one
    images: ImageSet
    targets: HumanLabels | np.ndarray
    fit_idx: np.ndarray
    cal_idx: np.ndarray
    stages: list[Stage]
    device: str

    @property
    def human(self) -> HumanLabels | None:
        return self.targets if isinstance(self.targets, HumanLabels) else None

    def pick(self, idx: np.ndarray) -> HumanLabels | np.ndarray:
        return self.targets.subset(idx) if self.human is not None else np.asarray(self.targets)[idx]

    @property
    def fit_images(self) -> torch.Tensor:
        return self.images.images[torch.from_numpy(self.fit_idx)]


def build_model(
    name: str,
    images: ImageSet,
    targets: HumanLabels | np.ndarray,
    train_items: np.ndarray,
    eval_items: np.ndarray | None,
    config: TrainConfig,
    **recipe,
) -> Artifact:
    """Train (fine-tuning from a pretrained net if `pretrain` is given), fit the temperature and score held-out items.

    `targets` are aligned with `images`: human vote counts or hard label ids. The keyword arguments are a
    `Recipe`'s: `joint` trains once on the pretraining images and the training items together, under
    `pretrain_config`, instead of pretraining then fine-tuning (`config` then only names the net). `start`
    fine-tunes an artifact's net instead, and records its stages and command before this run's; `interpolate`
    then keeps the net that share of the way from the start's weights to the fine-tuned ones (WiSE-FT).
    """
    r = Recipe(name=name, config=config, **recipe)
    check_modes(joint=r.joint, pretrain=r.pretrain is not None, start=r.start is not None, interpolate=r.interpolate)
    build = _begin(r, images, targets, train_items)
    net = _fine_tune(build, _pretrain(build))
    net = _interpolate(build, net)
    guard = fit_guard(net, build.fit_images, build.pick(build.fit_idx), len(images.classes), r.tta)
    temperature = _calibrate(build, net)
    metrics, figures, held_out = _evaluate(build, net, eval_items, temperature)
    meta = _meta(build, net, temperature, metrics, held_out)
    return Artifact(net.eval(), meta, figures, guard)


def _begin(r: Recipe, images: ImageSet, targets: HumanLabels | np.ndarray, train_items: np.ndarray) -> _Build:
    """The split into fitting and calibration items, and the net and stages a starting artifact hands on."""
    fit_pos, cal_pos = split_calibration(len(train_items), r.calibration_fraction, r.config.seed)
    config, stages = r.config, []
    if r.start is not None:
        if list(r.start.meta.classes) != list(images.classes):
            raise ValueError(
                f"the starting model's classes {r.start.meta.classes} are not the images' {images.classes}"
            )
        widths = tuple(r.start.meta.widths) if r.start.meta.widths else config.widths
        config = replace(config, arch=r.start.meta.arch, widths=widths, input_size=r.start.meta.input_size)
        stages = [Stage(**stage) for stage in r.start.meta.training.get("stages", [])]
    if r.pretrain is not None and r.pretrain.labels is None:
        raise ValueError("pretraining images need hard labels")
    train_items = np.asarray(train_items)
    device = str(resolve_device(config.device))
    return _Build(r, config, images, targets, train_items[fit_pos], train_items[cal_pos], stages, device)


def _pretrain(build: _Build) -> torch.nn.Module | None:
    """Pretraining on the hard-labelled images, or joint training on them and the human-labelled items together
    (then the build's net is final and its config the joint one); the net to fine-tune, if any."""
    r, config, c = build.recipe, build.config, len(build.images.classes)
    if r.pretrain is None:
        return None if r.start is None else r.start.net
    net_only = TrainConfig(
        arch=config.arch, widths=config.widths, input_size=config.input_size, seed=config.seed, device=config.device
    )
    pcfg = r.pretrain_config or pretrain_defaults(net_only)
    what = (
        f"{len(r.pretrain)} images from {r.pretrain.source}, {pcfg.loss} labels, label smoothing {pcfg.label_smoothing}"
    )
    if r.joint:
        pre_rows = batch_targets(
            torch.from_numpy(target_distribution(r.pretrain.labels, c)), pcfg.loss, pcfg.label_smoothing
        ).numpy()
        rows = np.concatenate([pre_rows, target_distribution(build.pick(build.fit_idx), c)])
        build.config = replace(pcfg, loss="soft", label_smoothing=0.0)
        res = train(torch.cat([r.pretrain.images, build.fit_images]), rows, build.config, progress=r.progress)
        what += f", together with {len(build.fit_idx)} images' {'human' if build.human is not None else 'hard'} targets"
    else:
        res = train(r.pretrain.images, r.pretrain.labels, pcfg, num_classes=c, progress=r.progress)
    stage = Stage(
        "joint" if r.joint else "pretrain", f"{what}, {epochs_of(pcfg)}", res.seconds, build.device, res.history
    )
    build.stages.append(stage)
    return res.net


def _fine_tune(build: _Build, init: torch.nn.Module | None) -> torch.nn.Module:
    """Training on the human-labelled fitting items, from `init` when given (after joint training: `init` as is)."""
    if build.recipe.joint:
        return init
    config = build.config
    res = train(
        build.fit_images,
        build.pick(build.fit_idx),
        config,
        init=copy.deepcopy(init) if init is not None else None,
        num_classes=len(build.images.classes),
        progress=build.recipe.progress,
    )
    what = f"{len(build.fit_idx)} images, {config.loss} targets, {epochs_of(config)}"
    build.stages.append(
        Stage("fine-tune" if init is not None else "train", what, res.seconds, build.device, res.history)
    )
    return res.net


def _interpolate(build: _Build, net: torch.nn.Module) -> torch.nn.Module:
    """With `interpolate`: the net that share of the way from the starting artifact's weights to `net`'s."""
    share = build.recipe.interpolate
    if share is None:
        return net
    began = time.perf_counter()
    net = interpolate_weights(build.recipe.start.net, net, share, build.fit_images)
    what = f"weights {share:g} of the way from the starting net to the fine-tuned one (WiSE-FT)"
    what += f", BatchNorm statistics re-estimated on the {len(build.fit_idx)} training images"
    build.stages.append(Stage("interpolate", what, time.perf_counter() - began, build.device, []))
    return net


def _calibrate(build: _Build, net: torch.nn.Module) -> float:
    """The temperature fitted on the calibration items (their vote distributions, or hard labels)."""
    logits = predict_logits(net, build.images.images[torch.from_numpy(build.cal_idx)], tta=build.recipe.tta)
    human = build.human
    targets = human.subset(build.cal_idx).soft() if human is not None else np.asarray(build.targets)[build.cal_idx]
    return fit_temperature(logits, targets)


def _evaluate(
    build: _Build, net: torch.nn.Module, eval_items: np.ndarray | None, temperature: float
) -> tuple[dict, dict[str, bytes], str | None]:
    """(metrics, figures, the held-out items described) on the held-out items, when there are any."""
    if eval_items is None or not len(eval_items):
        return {}, {}, None
    held_out = describe_items(eval_items)
    r = build.recipe
    evaluation = evaluate_items(net, build.images, build.human, np.asarray(eval_items), temperature, r.tta, r.with_fgsm)
    figures = {}
    if evaluation.labels is not None:
        figures["reliability.png"] = evaluation.reliability_png(f"{r.name}: held-out items {held_out}")
    return evaluation.metrics, figures, held_out


def _meta(build: _Build, net: torch.nn.Module, temperature: float, metrics: dict, held_out: str | None) -> ModelMeta:
    """model.json: what was built, from which items, by which stages (after the starting artifact's)."""
    r, config = build.recipe, build.config
    earlier = r.start.meta.data if r.start is not None else {}
    lineage = r.start.meta.training if r.start is not None else {}
    used = np.concatenate([build.fit_idx, build.cal_idx, run_positions(earlier.get("used_positions"))])
    return ModelMeta(
        name=r.name,
        classes=list(build.images.classes),
        arch=config.arch,
        input_size=config.input_size,
        widths=list(config.widths) if config.arch == "fastnet" else None,
        normalization={
            "mean": net.normalize.mean.flatten().tolist(),
            "std": net.normalize.std.flatten().tolist(),
            "input": "RGB float in [0, 1]",
        },
        temperature=temperature,
        tta=r.tta,
        data={
            "images": build.images.source,
            "labels": "human vote counts" if build.human is not None else "hard labels",
            "train_items": describe_items(build.fit_idx),
            "used_positions": item_runs(used),
            "calibration_items": describe_items(build.cal_idx),
            "eval_items": held_out,
            "held_out_items": held_out,
        },
        training={
            "joint": r.joint or lineage.get("joint", False),
            "config": config.to_dict(),
            "pretrain_config": r.pretrain_config.to_dict() if r.pretrain_config else lineage.get("pretrain_config"),
            "stages": [s.__dict__ for s in build.stages],
            **({"init": starting_model(r.start.meta.name, lineage)} if r.start is not None else {}),
        },
        metrics=metrics,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )


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
