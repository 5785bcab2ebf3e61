"""Training on what people said: soft human distributions, hard labels, or one sampled annotator per batch.

The recipe (decoupled SGD hyper-parameters, triangular schedule, lookahead, whitening init) follows
airbench94; the whole dataset stays on the device as uint8 and is augmented there.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from teaming._validation import DataError
from teaming.labels import HumanLabels
from teaming.model.nets import FastNet, build_net
from teaming.model.outliers import synthetic_outliers
from teaming.model.predict import predict_logits, to_float
from teaming.model.runtime import cpu_has_bf16
from teaming.model.weights import measure_batchnorm
from teaming.preprocess import luma

LossKind = Literal["soft", "hard", "sampled"]


@dataclass(kw_only=True)
class TrainConfig:
    """Hyper-parameters of one run; lr and weight_decay are per 1024 examples (airbench's decoupled form)."""

    arch: str = "fastnet"
    widths: tuple[int, ...] = (64, 256, 256)
    input_size: int = 32
    loss: LossKind = "soft"
    label_smoothing: float = 0.0
    epochs: float = 10.0
    batch_size: int = 1024
    lr: float = 11.5
    momentum: float = 0.85
    weight_decay: float = 0.0153
    bias_scaler: float = 64.0
    whiten_bias_epochs: int = 3
    flip: bool = True
    translate: int = 2
    grayscale: float = 0.15  # share of images turned grayscale (robustness to colourless inputs)
    soften: float = 0.15  # share of images blurred by a down-and-up resize (robustness to resampled inputs)
    lookahead: bool = True
    outlier_exposure: float = 0.0  # weight of the uniform-target loss on synthetic outliers (Hendrycks' lambda)
    seed: int = 0
    device: str = "auto"
    bf16: bool | None = None  # bfloat16 autocast; None: on GPUs only (on AVX512-BF16 CPUs a step is 1.95x faster)

    def __post_init__(self) -> None:
        self.widths = tuple(self.widths)
        if self.loss not in ("soft", "hard", "sampled"):
            raise ValueError(f"loss must be soft, hard or sampled, not {self.loss!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.epochs <= 0 or self.batch_size <= 0:
            raise ValueError("epochs and batch_size must be positive")
        if self.outlier_exposure < 0:
            raise ValueError(f"outlier_exposure must be >= 0, got {self.outlier_exposure}")

    def to_dict(self) -> dict:
        """JSON-ready: the same dict after a round trip through model.json."""
        return {**asdict(self), "widths": list(self.widths)}


def auto_batch_size(n: int, large: int = 4096, steps: int = 16) -> int:
    """The batch for training on n items when none is given: airbench's 1,024 from `large` items up; below, the
    largest power of two that still makes `steps` steps an epoch (at least 16 images), so a small set trains
    for more than a handful of steps (1,024 on 864 items would be one step an epoch)."""
    if n >= large:
        return TrainConfig.batch_size
    return max(16, 2 ** int(np.floor(np.log2(max(n / steps, 1)))))


def pretrain_config(base: TrainConfig | None = None, epochs: float = 10.0, label_smoothing: float = 0.2) -> TrainConfig:
    """Settings for pretraining on hard labels (CIFAR-10 train): `base`'s net and optimiser, smoothed labels."""
    return replace(base or TrainConfig(), loss="hard", epochs=epochs, label_smoothing=label_smoothing)


def finetune_config(
    base: TrainConfig | None = None, loss: LossKind = "soft", epochs: float = 8.0, lr_scale: float = 0.2
) -> TrainConfig:
    """Settings for fine-tuning a pretrained net on human labels: smaller steps, no label smoothing of soft
    targets (people's disagreement is the signal)."""
    base = base or TrainConfig()
    smoothing = 0.0 if loss == "soft" else base.label_smoothing
    return replace(base, loss=loss, epochs=epochs, lr=base.lr * lr_scale, label_smoothing=smoothing)


@dataclass
class TrainResult:
    net: nn.Module
    config: TrainConfig
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def target_distribution(labels: HumanLabels | np.ndarray, num_classes: int) -> np.ndarray:
    """N x C float targets: human vote shares, or one-hot rows for hard label ids."""
    if isinstance(labels, HumanLabels):
        return labels.soft().astype(np.float32)
    arr = np.asarray(labels)
    if arr.ndim == 1:
        if arr.dtype.kind not in "iu" or arr.min(initial=0) < 0 or arr.max(initial=0) >= num_classes:
            raise DataError(f"hard labels must be integer ids in 0..{num_classes - 1}")
        return np.eye(num_classes, dtype=np.float32)[arr]
    if arr.ndim != 2 or arr.shape[1] != num_classes:
        raise DataError(f"targets must be N label ids or an N x {num_classes} distribution, got {arr.shape}")
    if np.any(arr < 0) or not np.allclose(arr.sum(1), 1, atol=1e-4):
        raise DataError("soft targets must be non-negative rows summing to 1")
    return arr.astype(np.float32)


def batch_targets(
    dist: torch.Tensor, kind: LossKind, smoothing: float, gen: torch.Generator | None = None
) -> torch.Tensor:
    """The distribution a batch is trained against under each loss kind, label smoothing applied."""
    if kind == "hard":
        dist = F.one_hot(dist.argmax(1), dist.shape[1]).float()
    elif kind == "sampled":
        draw = torch.multinomial(dist, 1, generator=gen).squeeze(1)
        dist = F.one_hot(draw, dist.shape[1]).float()
    if smoothing:
        dist = dist * (1 - smoothing) + smoothing / dist.shape[1]
    return dist


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-item cross-entropy -sum(target * log softmax(logits)) against a target distribution."""
    return -(target * F.log_softmax(logits.float(), dim=1)).sum(1)


def augment(
    x: torch.Tensor,
    flip: bool,
    translate: int,
    gen: torch.Generator | None = None,
    grayscale: float = 0.0,
    soften: float = 0.0,
) -> torch.Tensor:
    """Random horizontal flips and translations by up to `translate` px (reflect padding), per image; a
    `grayscale` share made colourless and a `soften` share resampled down to 3/4 size and back."""
    n, _, h, w = x.shape
    if grayscale:
        mask = torch.rand(n, device=x.device, generator=gen) < grayscale
        x = torch.where(mask.view(-1, 1, 1, 1), luma(x).expand_as(x), x)
    if soften:
        mask = torch.rand(n, device=x.device, generator=gen) < soften
        small = F.interpolate(x, size=(3 * h // 4, 3 * w // 4), mode="bilinear", antialias=True, align_corners=False)
        back = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        x = torch.where(mask.view(-1, 1, 1, 1), back, x)
    if flip:
        mask = torch.rand(n, device=x.device, generator=gen) < 0.5
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
    if translate:
        r = translate
        padded = F.pad(x, (r,) * 4, mode="reflect")
        dy, dx = torch.randint(0, 2 * r + 1, (2, n), device=x.device, generator=gen)
        rows = (dy.view(-1, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * r)
        x = padded.gather(2, rows)
        cols = (dx.view(-1, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    return x.contiguous(memory_format=torch.channels_last)


def _triangle(steps: int, start: float = 0.2, peak_at: float = 0.23, end: float = 0.07) -> np.ndarray:
    peak = max(1, int(peak_at * steps))
    return np.interp(np.arange(steps + 1), [0, peak, steps], [start, 1.0, end])


def train(
    images: torch.Tensor,
    targets: HumanLabels | np.ndarray,
    config: TrainConfig | None = None,
    init: nn.Module | None = None,
    val: tuple[torch.Tensor, np.ndarray] | None = None,
    num_classes: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train a net on uint8 images (N x 3 x H x W) against targets; `init` fine-tunes an existing net.

    `val` is (images, hard labels) scored after each epoch. Returns the net on the training device.
    """
    config = config or TrainConfig()
    dist, c = _target_distribution(images, targets, num_classes)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    data = images.to(device)
    loop = _Loop(config, _start_net(config, c, init, data), data, torch.from_numpy(dist).to(device), gen, c)
    history: list[dict] = []
    start = time.perf_counter()
    with tqdm(total=loop.total_steps, desc="train", unit="step", disable=not progress, leave=False) as bar:
        for epoch in range(math.ceil(config.epochs)):
            row = loop.epoch(images, epoch, fresh=init is None, bar=bar)
            row["seconds"] = time.perf_counter() - start
            bar.set_postfix(epoch=epoch + 1, loss=f"{row['train_loss']:.3f}")
            if val is not None:
                logits = predict_logits(loop.net, val[0])
                row["val_acc"] = float((logits.argmax(1).numpy() == np.asarray(val[1])).mean())
            history.append(row)
    if config.outlier_exposure:  # the running statistics saw outliers in every batch: measure them on the images
        measure_batchnorm(loop.net, data)
    if device.type == "cuda":
        torch.cuda.synchronize()
    loop.net.eval()
    return TrainResult(loop.net, config, history, time.perf_counter() - start)


def _target_distribution(
    images: torch.Tensor, targets: HumanLabels | np.ndarray, num_classes: int | None
) -> tuple[np.ndarray, int]:
    """The targets as N x C distributions, and C; one per image."""
    if len(images) == 0:
        raise DataError("no training images")
    c = num_classes or (targets.counts.shape[1] if isinstance(targets, HumanLabels) else None)
    if c is None:
        arr = np.asarray(targets)
        c = arr.shape[1] if arr.ndim == 2 else int(arr.max()) + 1
    dist = target_distribution(targets, c)
    if len(dist) != len(images):
        raise DataError(f"{len(images)} images but {len(dist)} targets")
    return dist, c


def _start_net(config: TrainConfig, c: int, init: nn.Module | None, data: torch.Tensor) -> nn.Module:
    """The net to train, channels-last on the data's device: `init`, or a new one (whitened on the data)."""
    if init is None:
        net = build_net(config.arch, c, config.input_size, config.widths).to(data.device)
        if isinstance(net, FastNet):
            net.init_whitening(to_float(data[:5000]))
    else:
        net = init.to(data.device)
    return net.to(memory_format=torch.channels_last)


class _Loop:
    """One training run's state from step to step: the net, its optimizer and schedule, and the data on the
    device."""

    def __init__(
        self, config: TrainConfig, net: nn.Module, data: torch.Tensor, dist: torch.Tensor, gen: torch.Generator, c: int
    ) -> None:
        self.config, self.net, self.data, self.dist, self.gen = config, net, data, dist, gen
        self.device = data.device
        self.batch = min(config.batch_size, len(data))
        self.steps_per_epoch = max(1, len(data) // self.batch)
        self.total_steps = math.ceil(self.steps_per_epoch * config.epochs)
        self.opt = _optimizer(net, config, self.batch)
        self.schedule = _triangle(self.total_steps)
        self.base_lrs = [g["lr"] for g in self.opt.param_groups]
        self.alpha = 0.95**5 * (np.arange(self.total_steps + 1) / self.total_steps) ** 3
        self.ema = {k: v.detach().clone() for k, v in net.state_dict().items()} if config.lookahead else None
        self.uniform = torch.full((1, c), 1 / c, device=self.device)
        self.step = 0
        self.bf16 = config.bf16 if config.bf16 is not None else self.device.type == "cuda"
        if self.bf16 and self.device.type == "cpu" and not cpu_has_bf16():
            warnings.warn(
                "bf16 on a CPU without AVX512-BF16 or AMX is emulated and slower than fp32: leave it off here",
                stacklevel=3,
            )

    def epoch(self, images: torch.Tensor, epoch: int, fresh: bool, bar) -> dict:
        """One pass over the shuffled data (fewer steps if the run ends within it); its mean loss and accuracy."""
        config, net = self.config, self.net
        net.train()
        whiten = getattr(net, "whiten", None)
        if whiten is not None and whiten.bias is not None:
            whiten.bias.requires_grad = fresh and epoch < config.whiten_bias_epochs
        order = torch.randperm(len(self.data), device=self.device, generator=self.gen)
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: no host sync per step
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen, bs, half = 0, self.batch, max(1, self.batch // 2)
        pool = None
        if config.outlier_exposure:  # this epoch's outliers, made on the CPU at once: half a batch per step
            pool = synthetic_outliers(images, self.steps_per_epoch * half, seed=config.seed * 1_000_003 + epoch)
            pool = pool.to(self.device)
        for b in range(self.steps_per_epoch):
            if self.step >= self.total_steps:
                break
            idx = order[b * bs : (b + 1) * bs]
            fit, own = self.train_step(idx, None if pool is None else pool[b * half : (b + 1) * half])
            loss_sum += fit.detach()
            correct += (own.argmax(1) == self.dist[idx].argmax(1)).sum()
            seen += len(idx)
            bar.update(1)
        return {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_acc": int(correct) / max(seen, 1),
        }

    def train_step(self, idx: torch.Tensor, outliers: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step on the items `idx` (and outliers pushed toward uniform): (their summed loss, logits)."""
        config = self.config
        raw = self.data[idx] if outliers is None else torch.cat([self.data[idx], outliers])
        x = augment(to_float(raw), config.flip, config.translate, self.gen, config.grayscale, config.soften)
        target = batch_targets(self.dist[idx], config.loss, config.label_smoothing, self.gen)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net(x)
        own = logits[: len(idx)]  # the labelled items' logits; any after them are the outliers'
        fit = soft_cross_entropy(own, target).sum()
        loss = fit
        if outliers is not None:  # the outliers' loss, weighted per item against the labelled items'
            away = soft_cross_entropy(logits[len(idx) :], self.uniform)
            loss = fit + config.outlier_exposure * len(idx) * away.mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        for g, base in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = base * self.schedule[self.step]
        self.opt.step()
        self.step += 1
        if self.ema is not None and (self.step % 5 == 0 or self.step == self.total_steps):
            decay = 1.0 if self.step == self.total_steps else float(self.alpha[self.step])
            _lookahead(self.net, self.ema, decay)
        return fit, own


def _optimizer(net: nn.Module, config: TrainConfig, batch: int) -> torch.optim.SGD:
    """Nesterov SGD with airbench's decoupled learning rate and weight decay; norm biases on their own scale."""
    kilostep = 1024 * (1 + 1 / (1 - config.momentum))
    lr = config.lr / kilostep
    wd = config.weight_decay * batch / kilostep
    norm_biases = [p for k, p in net.named_parameters() if "norm" in k and p.requires_grad]
    others = [p for k, p in net.named_parameters() if "norm" not in k and p.requires_grad]
    groups = [dict(params=others, lr=lr, weight_decay=wd / lr)]
    if norm_biases:
        lr_b = lr * config.bias_scaler
        groups.append(dict(params=norm_biases, lr=lr_b, weight_decay=wd / lr_b))
    return torch.optim.SGD(groups, momentum=config.momentum, nesterov=True)


@torch.no_grad()
def _lookahead(net: nn.Module, ema: dict[str, torch.Tensor], decay: float) -> None:
    for v, e in zip(net.state_dict().values(), ema.values()):
        if v.dtype.is_floating_point:
            e.lerp_(v, 1 - decay)
            v.copy_(e)
