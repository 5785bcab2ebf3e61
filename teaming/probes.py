"""Images that probe a model: mild shifts of its own images (what a deployed model meets without anyone
noticing) and unfamiliar images that belong to none of its classes, built only from what ships in packages
(scikit-learn's and scikit-image's sample photos, textures, faces and digits) and from noise."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from teaming.preprocess import luma, to_uint8


def jpeg(images: torch.Tensor, quality: int = 50) -> torch.Tensor:
    """Each image re-encoded as JPEG at `quality` (a re-shared photo)."""
    out = []
    for img in images.permute(0, 2, 3, 1).numpy():
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """Colour dropped (ITU-R 601 luma in all three channels)."""
    return to_uint8(luma(images.float())).expand_as(images).contiguous()


def blur(images: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """A Gaussian blur of `sigma` pixels (a camera out of focus)."""
    from torchvision.transforms.functional import gaussian_blur

    k = 2 * int(np.ceil(2 * sigma)) + 1
    return to_uint8(gaussian_blur(images.float(), [k, k], [sigma, sigma]))


def upside_down(images: torch.Tensor) -> torch.Tensor:
    """Turned 180 degrees (a camera mounted the other way up)."""
    return images.flip(-2, -1).contiguous()


PHOTO_SHIFTS = {
    "jpeg50": lambda x: jpeg(x, 50),
    "grayscale": grayscale,
    "blur": lambda x: blur(x, 1.0),
    "upside-down": upside_down,
}


def photo_shift(kind: str):
    """The change `kind` names (`PHOTO_SHIFTS`); ValueError naming the choices for any other."""
    if kind not in PHOTO_SHIFTS:
        raise ValueError(f"unknown shift {kind!r}; choose from {sorted(PHOTO_SHIFTS)} or unfamiliar:SHARE")
    return PHOTO_SHIFTS[kind]


def shift_photos(kind: str, photos: list[bytes]) -> list[bytes]:
    """Encoded photos changed as a drifting world changes them (`PHOTO_SHIFTS`), encoded again as PNG."""
    change = photo_shift(kind)
    out = []
    for data in photos:
        img = torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)[None]
        changed = change(img.contiguous())[0].permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(changed).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def resample(images: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Upsampled by `factor` (bilinear) and back down (antialiased): the 32 -> 64 -> 32 round trip of a thumbnail."""
    h, w = images.shape[-2:]
    big = F.interpolate(images.float(), scale_factor=factor, mode="bilinear", align_corners=False)
    back = F.interpolate(big, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return to_uint8(back)


SHIFTS = {"jpeg_q50": jpeg, "grayscale": grayscale, "resize_32_64_32": resample}


def shifted(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The clean images and each named shift of them."""
    return {"clean": images, **{name: fn(images) for name, fn in SHIFTS.items()}}


# Files bundled in scikit-image's wheel; none shows a CIFAR-10 class (its chelsea.png is a cat, horse.png a horse).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
    "camera.png",
    "coins.png",
    "moon.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
    "motorcycle_left.png",
    "clock_motion.png",
    "ihc.png",
    "cell.png",
)
SKIMAGE_TEXTURES = ("brick.png", "grass.png", "gravel.png", "page.png", "text.png")


def _rgb(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (255 * (img - img.min()) / max(float(np.ptp(img)), 1e-9)).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    return img[..., :3]


def _crops(sources: list[np.ndarray], n: int, rng: np.random.Generator, size: int = 32) -> torch.Tensor:
    """n random square crops (a quarter to all of the shorter side) of the sources, resized to size x size."""
    out = []
    for k in range(n):
        img = sources[k % len(sources)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(img[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(crop))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def _skimage_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def _skimage(names: tuple[str, ...]) -> list[np.ndarray]:
    return [_rgb(np.asarray(Image.open(_skimage_dir() / name))) for name in names]


def unfamiliar_sets(familiar: torch.Tensor, n: int = 300, seed: int = 0, size: int = 32) -> dict[str, torch.Tensor]:
    """Named sets of n uint8 images (N x 3 x size x size) a model of `familiar`'s kind has never seen:
    photos, textures, faces, digits, uniform noise, flat colours and `familiar` with its pixels shuffled.
    Sets that need scikit-image are left out when it is not installed."""
    from sklearn.datasets import load_digits, load_sample_images

    rng = np.random.default_rng(seed)
    sets: dict[str, torch.Tensor] = {}
    photos = [_rgb(img) for img in load_sample_images().images]
    try:
        photos += _skimage(SKIMAGE_PHOTOS)
        sets["textures"] = _crops(_skimage(SKIMAGE_TEXTURES), n, rng, size)
        faces = np.load(_skimage_dir() / "lfw_subset.npy")[: min(n, 200)]
        sets["faces"] = torch.stack([_crops([_rgb(f)], 1, rng, size)[0] for f in faces])
    except ImportError:
        pass
    sets["photos"] = _crops(photos, n, rng, size)
    digits = load_digits().images[rng.permutation(1797)[:n]]
    sets["digits"] = torch.stack([_crops([_rgb(d * 16)], 1, rng, size)[0] for d in digits])
    sets["noise"] = torch.from_numpy(rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8))
    colours = rng.integers(0, 256, (n, 3, 1, 1), dtype=np.uint8)
    sets["constant"] = torch.from_numpy(np.broadcast_to(colours, (n, 3, size, size)).copy())
    base = familiar[torch.from_numpy(rng.choice(len(familiar), n, replace=len(familiar) < n))]
    flat = base.flatten(2)
    perm = torch.from_numpy(rng.permutation(flat.shape[-1]))
    sets["shuffled_pixels"] = flat[:, :, perm].reshape(base.shape).contiguous()
    return sets
