"""Encoded images to pixels: the header read before any pixel (format, size, EXIF orientation), photos turned
upright and shaped by a model's input contract, JPEGs decoded at reduced scale, and the upright copy people are
shown when the original is turned or too large to show."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from teaming._validation import DataError
from teaming.preprocess import InputContract, conform

DECODE_BYTES_PER_PIXEL = 16  # the most a decoded pixel costs while a photo is decoded (decode, view, copy for people)
ORIENTATION = 0x0112  # the EXIF tag saying how a camera held the photo (1 upright, 2..8 mirrored or turned)
REVIEW_SIDE = 1280  # the longest side of a copy made for people to look at


@dataclass(frozen=True)
class Header:
    """What an encoded image's header says, read before any pixel is decoded."""

    format: str  # PIL's name: JPEG, PNG, GIF, WEBP, BMP, TIFF, ...
    width: int
    height: int
    orientation: int = 1  # EXIF orientation; 5..8 turn the photo a quarter, swapping width and height

    @property
    def upright(self) -> tuple[int, int]:
        """(width, height) of the photo as it is meant to be seen, after its EXIF orientation."""
        return (self.height, self.width) if self.orientation in (5, 6, 7, 8) else (self.width, self.height)


def read_header(data: bytes, item: str = "image", max_pixels: int | None = None) -> Header:
    """Format, size and EXIF orientation from the header; DataError for bytes that are no image, or over
    `max_pixels` (a decompression bomb is refused here, before it is decoded)."""
    if not data:
        raise DataError(f"{item}: zero bytes, not an image")
    try:
        with Image.open(io.BytesIO(data)) as im:
            orientation = im.getexif().get(ORIENTATION, 1) if im.format in ("JPEG", "PNG", "WEBP", "TIFF") else 1
            header = Header(
                im.format or "unknown", im.width, im.height, orientation if orientation in range(1, 9) else 1
            )
    except Image.DecompressionBombError:
        raise DataError(f"{item}: too many pixels to decode safely") from None
    except UnidentifiedImageError:
        raise DataError(f"{item}: cannot decode image (not a format PIL reads)") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{item}: cannot decode image ({err})") from None
    if max_pixels is not None and header.width * header.height > max_pixels:
        raise DataError(f"{item}: {header.width} x {header.height} pixels is over the limit of {max_pixels}")
    return header


def jpeg_scale(header: Header, least: int | None) -> int:
    """The reduced scale (1, 2, 4 or 8) a JPEG is decoded at when both sides need at least `least` pixels, as
    PIL's draft picks it: what a decode costs in memory is (width / scale) x (height / scale) pixels."""
    if header.format != "JPEG" or not least:
        return 1
    room = min(header.width // least, header.height // least)
    return next((s for s in (8, 4, 2) if room >= s), 1)


def decoded_pixels(header: Header, least: int | None) -> int:
    """Pixels held while the image is decoded for a side of at least `least` (`jpeg_scale`)."""
    s = jpeg_scale(header, least)
    return -(-header.width // s) * -(-header.height // s)


def _open_upright(raw: bytes, item: str, max_pixels: int | None, least: int | None) -> Image.Image:
    """The photo decoded as RGB and turned upright by its EXIF orientation; a JPEG at the reduced scale that
    keeps at least `least` pixels a side."""
    read_header(raw, item, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as im:
                if least and im.format == "JPEG":
                    im.draft("RGB", (least, least))
                im.load()
                orientation = im.getexif().get(ORIENTATION, 1)
                out = ImageOps.exif_transpose(im) if orientation in range(2, 9) else im
                return out if out.mode == "RGB" and out is not im else out.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(f"{item}: too many pixels to decode safely") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{item}: cannot decode image ({err})") from None


def _tensor(rgb: Image.Image) -> torch.Tensor:
    """An RGB image's pixels as a read-only 3 x H x W uint8 view of one copy (shaped anew before any write)."""
    with warnings.catch_warnings():  # numpy's view of PIL's bytes is read-only; nothing writes to it
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(np.asarray(rgb)).permute(2, 0, 1)


def decode_image(
    data: bytes | np.ndarray,
    contract: InputContract | int | None = None,
    item: str = "image",
    max_pixels: int | None = None,
) -> torch.Tensor:
    """Decode one encoded image (JPEG, PNG, ...) to uint8 3 x H x W, upright by its EXIF orientation, and shaped
    by a model's input contract when given (an int: stretched to size x size).

    `max_pixels` refuses larger images from their header, before any pixel is decoded. With a contract, a JPEG
    is decoded at the smallest of 1/2, 1/4 or 1/8 scale that still has four times the pixels per side needed.
    """
    size = contract if isinstance(contract, int) else None if contract is None else contract.size
    rgb = _open_upright(bytes(data), item, max_pixels, 4 * size if size else None)
    t = _tensor(rgb)
    return conform(t[None], contract)[0] if contract is not None else t.clone()


def needs_copy(header: Header, longest: int = REVIEW_SIDE) -> bool:
    """Whether people should be shown a re-encoded copy: the photo is turned by EXIF, or too large to show."""
    return header.orientation != 1 or max(header.width, header.height) > longest


def photo_least(header: Header, size: int, longest: int = REVIEW_SIDE) -> int:
    """The fewest pixels a side a photo is decoded with: four times the model's input side, and enough for a copy
    with its longer side near `longest` when one is made (`needs_copy`)."""
    least = 4 * size
    if needs_copy(header, longest):
        least = max(least, min(header.width, header.height) * 3 * longest // (4 * max(header.width, header.height)))
    return least


def decode_photo(
    data: bytes,
    contract: InputContract | int,
    item: str = "image",
    max_pixels: int | None = None,
    longest: int = REVIEW_SIDE,
) -> tuple[torch.Tensor, bytes | None]:
    """One decode for the model and for people: (the model's input, 3 x S x S uint8, and an upright JPEG of at
    most `longest` pixels a side, or None when the bytes themselves are fit to show; see `needs_copy`)."""
    header = read_header(data, item, max_pixels)
    size = contract if isinstance(contract, int) else contract.size
    rgb = _open_upright(data, item, max_pixels, photo_least(header, size, longest))
    pixels = conform(_tensor(rgb)[None], contract)[0]
    copy = None
    if needs_copy(header, longest):
        rgb.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=90)
        copy = out.getvalue()
    return pixels, copy


def decode_jpegs(
    blobs: Sequence[np.ndarray], ids: Sequence[str], contract: InputContract | int | None = None
) -> torch.Tensor:
    """Decode many JPEGs at once with torchvision (batched), falling back to PIL to name a bad item; shaped by
    `contract` as `decode_image` does (packs hold camera-less JPEGs: no EXIF orientation)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.from_numpy(np.ascontiguousarray(b)) for b in blobs]
    for t, item in zip(tensors, ids):
        if t.numel() == 0:
            raise DataError(f"{item}: zero bytes, not an image")
    try:
        decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB)
    except RuntimeError:
        decoded = [decode_image(t.numpy(), None, item) for t, item in zip(tensors, ids)]
    shapes = {tuple(d.shape) for d in decoded}
    if len(shapes) == 1:
        return conform(torch.stack(decoded), contract)
    if contract is None:
        raise DataError(f"images differ in size ({len(shapes)} shapes); give a size to resize them to")
    return torch.cat([conform(d[None], contract) for d in decoded])
