"""Synthetic outliers made from a model's own training images, for the familiarity guard to learn what
"none of the classes" looks like (outlier exposure, Hendrycks et al., 2019) without any outside data:
close-ups, patch-shuffled images, mosaics of four and heavily noised images keep CIFAR's colours and local
statistics but show no whole object; phase-scrambled and tiled images keep only its textures. A share is made
grayscale, as training augments that share.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from teaming import probes
from teaming.preprocess import to_uint8


def close_ups(
    images: torch.Tensor, rng: np.random.Generator, smallest: float = 0.25, largest: float = 0.5
) -> torch.Tensor:
    """A random square crop of each image (its side a quarter to a half of the image's) blown up to full size."""
    n, _, h, w = images.shape
    out = []
    for img in images:
        side = int(rng.integers(int(smallest * h), int(largest * h) + 1))
        y, x = (int(v) for v in rng.integers(0, h - side + 1, 2))
        crop = img[None, :, y : y + side, x : x + side].float()
        out.append(F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False))
    return to_uint8(torch.cat(out))


def patch_shuffled(images: torch.Tensor, rng: np.random.Generator, grid: int = 4) -> torch.Tensor:
    """Each image cut into grid x grid patches laid out again in a random order."""
    n, c, h, w = images.shape
    ph, pw = h // grid, w // grid
    patches = images[:, :, : ph * grid, : pw * grid].reshape(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, grid * grid, c, ph, pw)
    order = torch.from_numpy(np.stack([rng.permutation(grid * grid) for _ in range(n)]))
    patches = patches[torch.arange(n)[:, None], order]
    out = patches.reshape(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, ph * grid, pw * grid)
    return F.pad(out, (0, w - pw * grid, 0, h - ph * grid)).contiguous()


def mosaics(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """2 x 2 mosaics of four different images, each shrunk to a quarter of the area."""
    n, _, h, w = images.shape
    small = F.interpolate(images.float(), size=(h // 2, w // 2), mode="bilinear", antialias=True, align_corners=False)
    a, b, c, d = (small[torch.from_numpy(rng.permutation(n))] for _ in range(4))
    out = torch.cat([torch.cat([a, b], 3), torch.cat([c, d], 3)], 2)
    return to_uint8(F.interpolate(out, size=(h, w), mode="nearest"))


def noised(images: torch.Tensor, rng: np.random.Generator, low: float = 30, high: float = 120) -> torch.Tensor:
    """Each image under Gaussian pixel noise with a standard deviation drawn from [low, high] (of 255)."""
    sigma = torch.from_numpy(rng.uniform(low, high, (len(images), 1, 1, 1))).float()
    noise = torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32))
    return to_uint8(images.float() + sigma * noise)


def phase_scrambled(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Each image's Fourier amplitudes under random phases (one per frequency, shared by the channels): its
    colours and texture statistics, no shapes."""
    x = images.float()
    amplitude = torch.fft.fft2(x - x.mean((2, 3), keepdim=True)).abs()
    noise = torch.from_numpy(rng.standard_normal((len(x), 1, *x.shape[2:])).astype(np.float32))
    phase = torch.fft.fft2(noise).angle()
    out = torch.fft.ifft2(amplitude * torch.exp(1j * phase)).real
    return to_uint8(out + x.mean((2, 3), keepdim=True))


def tiled(images: torch.Tensor, rng: np.random.Generator, smallest: int = 4, largest: int = 10) -> torch.Tensor:
    """A small random patch of each image (side `smallest` to `largest` pixels) repeated over the whole image."""
    n, _, h, w = images.shape
    out = torch.empty_like(images)
    for k, img in enumerate(images):
        side = int(rng.integers(smallest, largest + 1))
        y, x = (int(v) for v in rng.integers(0, h - side + 1, 2))
        patch = img[:, y : y + side, x : x + side]
        out[k] = patch.repeat(1, -(-h // side), -(-w // side))[:, :h, :w]
    return out


# Each kind's share of the outliers: whole-object-free views of the images, then texture-like ones.
KINDS = {"close_ups": 2, "patch_shuffled": 2, "mosaics": 2, "noised": 1, "phase_scrambled": 1, "tiled": 1}
MAKERS = {make.__name__: make for make in (close_ups, patch_shuffled, mosaics, noised, phase_scrambled, tiled)}


def synthetic_outliers(
    images: torch.Tensor, n: int, seed: int = 0, grayscale: float = 0.15, kinds: dict[str, int] | None = None
) -> torch.Tensor:
    """n outliers (uint8, N x 3 x H x W) from random training images, each kind's share as in `kinds`
    (default `KINDS`); a `grayscale` share loses its colour."""
    kinds = KINDS if kinds is None else kinds
    rng = np.random.default_rng(seed)
    weights = np.array(list(kinds.values()))
    parts = weights * n // weights.sum()
    parts[0] += n - parts.sum()
    makers = [MAKERS[name] for name in kinds]
    out = torch.cat(
        [make(images[torch.from_numpy(rng.integers(0, len(images), k))], rng) for make, k in zip(makers, parts) if k]
    )
    gray = torch.from_numpy(rng.random(len(out)) < grayscale)
    out[gray] = probes.grayscale(out[gray])
    return out
