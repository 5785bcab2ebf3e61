"""Photos as cameras and phones store them: each EXIF orientation, and a 12-megapixel phone JPEG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# What a camera stores for each EXIF orientation: the upright picture under the inverse of the turn the tag asks a
# viewer to apply (PIL's ImageOps.exif_transpose applies the turn).
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def oriented(upright: Image.Image, fmt: str = "JPEG") -> dict[int, bytes]:
    """The upright image stored eight ways, one per EXIF orientation (1: as it is), as a camera writes them."""
    out = {}
    for tag in range(1, 9):
        img = upright if tag == 1 else upright.transpose(STORED_AS[tag])
        exif = Image.Exif()
        exif[0x0112] = tag
        buf = io.BytesIO()
        extra = {"quality": 100, "subsampling": 0} if fmt == "JPEG" else {}
        img.save(buf, fmt, exif=exif, **extra)
        out[tag] = buf.getvalue()
    return out


def phone_jpeg(width: int = 4000, height: int = 3000, seed: int = 0) -> bytes:
    """A 12-megapixel camera JPEG: a smooth scene under sensor noise, 3-6 MB as a phone's are."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:height, :width]
    scene = np.stack([(x * 255 // width), (y * 255 // height), ((x + y) * 255 // (width + height))], -1)
    noisy = np.clip(scene + rng.normal(0, 12, scene.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=92)
    return buf.getvalue()
