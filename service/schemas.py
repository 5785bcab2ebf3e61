"""The service's request models: images are decoded and checked while a classify request is validated, so a
bad image fails its own request (400, naming the image) before it can join a batch.

Answers and the other requests are the API's wire format, shared with the client: teaming.api.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import torch
from pydantic import BaseModel, BeforeValidator, Field, PrivateAttr, model_validator

from service.settings import get_settings
from teaming._validation import DataError
from teaming.data import decode_image


class ImageIn(BaseModel):
    """One image to classify: base64 bytes (JPEG, PNG, ...) and an optional caller id."""

    id: str | None = Field(None, max_length=256, description="caller's item id; generated when absent")
    data: str = Field(..., description="base64-encoded image file")
    _pixels: torch.Tensor = PrivateAttr()
    _raw: bytes = PrivateAttr()

    @model_validator(mode="after")
    def _decode(self) -> "ImageIn":
        s = get_settings()
        limit = s.max_image_bytes
        name = self.id or "image"
        if len(self.data) > 4 * (limit + 2) // 3 + 4:
            raise ValueError(f"{name}: over the size limit of {limit} bytes")
        try:
            raw = base64.b64decode(self.data, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"{name}: data is not valid base64") from None
        if len(raw) > limit:
            raise ValueError(f"{name}: {len(raw)} bytes is over the size limit of {limit}")
        try:
            self._pixels = decode_image(raw, None, name, s.max_pixels)
        except DataError as err:
            raise ValueError(str(err)) from None
        self._raw = raw
        return self

    @property
    def content_type(self) -> str:
        return "image/png" if self._raw[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"


def _at_most_max_images(images: object) -> object:
    """Refuse an over-long list before any of its images is decoded (TEAMING_MAX_IMAGES, read at request time)."""
    limit = get_settings().max_images
    if isinstance(images, list) and len(images) > limit:
        raise ValueError(f"List should have at most {limit} items after validation, not {len(images)}")
    return images


Images = Annotated[list[ImageIn], Field(min_length=1), BeforeValidator(_at_most_max_images)]
