"""The classify request and how its images are read: base64 decoded, checked against the limits and decoded to
pixels off the event loop, so a bad image fails its own request (400, naming the image) before it can join a
batch. Answers and the other requests are the API's wire format, shared with the client: teaming.api.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import torch
from pydantic import BaseModel, Field, ValidationError

from service.settings import Settings
from teaming._validation import DataError
from teaming.data import decode_image


class Refused(Exception):
    """A request the service turns down: `status` (4xx, or 503) and a one-line reason for the caller."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class ImageIn(BaseModel):
    """One image to classify: base64 bytes (JPEG, PNG, ...) and an optional caller id."""

    id: str | None = Field(None, max_length=256, description="caller's item id; generated when absent")
    data: str = Field(..., description="base64-encoded image file")


class ClassifyIn(BaseModel):
    images: list[ImageIn] = Field(..., min_length=1, description="at most TEAMING_MAX_IMAGES images")


@dataclass
class Decoded:
    """An image ready for the model: its id, pixels (uint8 3 x H x W) and the original bytes for reviewers."""

    item_id: str | None
    pixels: torch.Tensor
    raw: bytes

    @property
    def content_type(self) -> str:
        return "image/png" if self.raw[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"


def parse(body: object, s: Settings) -> ClassifyIn:
    """The request's JSON as a ClassifyIn; 400 with the first problem in one line."""
    if isinstance(body, dict) and isinstance(body.get("images"), list) and len(body["images"]) > s.max_images:
        raise Refused(400, f"images: at most {s.max_images} items per request, got {len(body['images'])}")
    try:
        return ClassifyIn.model_validate(body)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Refused(400, f"{where}: {first['msg']}") from None


def decode(item: ImageIn, s: Settings) -> Decoded:
    """Base64 and image decoding of one image within the byte and pixel limits; 400 naming the image."""
    name = item.id or "image"
    limit = s.max_image_bytes
    if len(item.data) > 4 * (limit + 2) // 3 + 4:
        raise Refused(400, f"{name}: over the size limit of {limit} bytes")
    try:
        raw = base64.b64decode(item.data, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, f"{name}: data is not valid base64") from None
    if len(raw) > limit:
        raise Refused(400, f"{name}: {len(raw)} bytes is over the size limit of {limit}")
    try:
        pixels = decode_image(raw, None, name, s.max_pixels)
    except DataError as err:
        raise Refused(400, str(err)) from None
    return Decoded(item.id, pixels, raw)
