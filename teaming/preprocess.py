"""A model's input contract: how any photo becomes the float tensor its graph takes, in one place for training,
import, evaluation and the service.

Three resize policies: `stretch` (to size x size whatever the aspect; what the CIFAR nets were trained on, so
theirs), `crop` (the shorter side to size / crop_pct, then the centre size x size: torchvision's classification
presets) and `letterbox` (the longer side to size, the rest padded with the mean colour). Pixels then go in as
floats in [0, 1], normalised by `mean` and `std` where the contract has them (our nets normalise inside).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PRESETS = {
    # torchvision's ImageNet classification preset: Resize(256), CenterCrop(224), ImageNet mean and std
    "torchvision": {"size": 224, "resize": "crop", "crop_pct": 0.875, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
}
KEYS = ("size", "resize", "crop_pct", "interp", "mean", "std")


class InputContract(BaseModel):
    """What a model's graph takes: size x size RGB made by a resize policy, floats in [0, 1], then normalised
    by mean and std where given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(..., ge=8, le=4096, description="the side of the square input, in pixels")
    resize: Literal["stretch", "crop", "letterbox"] = "stretch"
    crop_pct: float = Field(1.0, gt=0.1, le=1.0, description="crop: the centre share of the resized shorter side")
    interp: Literal["bilinear", "bicubic"] = "bilinear"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @model_validator(mode="after")
    def _normalisation(self) -> "InputContract":
        if (self.mean is None) != (self.std is None):
            raise ValueError("give mean and std together, or neither")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        return self

    def describe(self) -> str:
        """One line for a card, a log or /v1/model."""
        s, short = self.size, round(self.size / self.crop_pct)
        how = {
            "stretch": f"stretched to {s}x{s}, its aspect not kept",
            "crop": f"its shorter side resized to {short}, the centre {s}x{s} kept",
            "letterbox": f"its longer side resized to {s}, padded to {s}x{s}",
        }[self.resize]
        norm = f", normalised by mean {list(self.mean)} and std {list(self.std)}" if self.mean else ""
        return f"RGB {how} ({self.interp}), floats in [0, 1]{norm}"


def parse_preprocess(spec: str | None, size: int | None = None) -> InputContract:
    """`--preprocess`: a preset name (`torchvision`) and/or comma-separated keys, lists joined by slashes, e.g.
    `size=64,resize=letterbox,mean=0.5/0.5/0.5,std=0.25/0.25/0.25`. `size` (e.g. read off the graph) fills in a
    size the spec does not give. ValueError naming the bad part."""
    values: dict = {}
    for part in filter(None, (p.strip() for p in (spec or "").split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep:
            if key not in PRESETS:
                raise ValueError(f"--preprocess: unknown preset {key!r}; presets: {', '.join(PRESETS)}, or KEY=VALUE")
            values.update(PRESETS[key])
            continue
        if key not in KEYS:
            raise ValueError(f"--preprocess: unknown key {key!r}; keys: {', '.join(KEYS)}")
        if key in ("mean", "std"):
            try:
                values[key] = tuple(float(v) for v in value.split("/"))
            except ValueError:
                raise ValueError(f"--preprocess: {key}={value!r} is not three numbers joined by '/'") from None
            if len(values[key]) != 3:
                raise ValueError(f"--preprocess: {key} needs three numbers (R/G/B), got {value!r}")
        else:
            values[key] = value.strip()
    if "size" not in values:
        if size is None:
            raise ValueError("--preprocess needs size=N (the model's input side), or the graph must declare it")
        values["size"] = size
    try:
        return InputContract(**values)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ValueError(f"--preprocess: {where + ': ' if where else ''}{message}") from None


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float pixel values (0..255 scale) rounded and clipped back to uint8."""
    return x.round().clamp(0, 255).to(torch.uint8)


def resize(images: torch.Tensor, size: int | tuple[int, int] | None, interp: str = "bilinear") -> torch.Tensor:
    """Resize a uint8 N x 3 x H x W batch to size x size (or (h, w)), antialiased; no-op when already that size."""
    if size is None:
        return images
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if images.shape[-2:] == hw:
        return images
    if images.device.type == "cpu":  # resampled as uint8 (within one level of the float path): no 4-byte copy
        return F.interpolate(images, size=hw, mode=interp, antialias=True, align_corners=False).contiguous()
    out = F.interpolate(images.float(), size=hw, mode=interp, antialias=True, align_corners=False)
    return to_uint8(out)


def conform(images: torch.Tensor, contract: InputContract | int | None) -> torch.Tensor:
    """uint8 N x 3 x H x W images (one size) as the contract's size x size input, by its resize policy; an int is
    a plain stretch to that size, None leaves the images as they are."""
    if contract is None or isinstance(contract, int):
        return resize(images, contract)
    s, (h, w) = contract.size, images.shape[-2:]
    if contract.resize == "stretch" or (h == w == s):
        return resize(images, s, contract.interp)
    if contract.resize == "crop":
        short = max(round(s / contract.crop_pct), s)
        scale = short / min(h, w)
        nh, nw = max(round(h * scale), s), max(round(w * scale), s)
        out = resize(images, (nh, nw), contract.interp)
        top, left = round((nh - s) / 2), round((nw - s) / 2)
        return out[..., top : top + s, left : left + s].contiguous()
    scale = s / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = resize(images, (nh, nw), contract.interp)
    fill = torch.tensor(contract.mean or (0.5, 0.5, 0.5)).mul(255).round().to(torch.uint8)
    canvas = fill.view(1, 3, 1, 1).expand(len(images), 3, s, s).clone()
    top, left = (s - nh) // 2, (s - nw) // 2
    canvas[..., top : top + nh, left : left + nw] = out
    return canvas


def to_input(images: torch.Tensor, contract: InputContract | None = None) -> torch.Tensor:
    """uint8 images at the contract's size -> the float32 tensor the graph takes: [0, 1], normalised if asked."""
    x = images.float() / 255
    if contract is not None and contract.mean is not None:
        mean = torch.tensor(contract.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(contract.std, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x


def luma(x: torch.Tensor) -> torch.Tensor:
    """N x 1 x H x W ITU-R 601 luma of N x 3 x H x W float images, on their device: what grayscale keeps."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)
