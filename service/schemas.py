"""The classify request and how its images are read: base64 decoded, checked against the limits and decoded to
pixels off the event loop, so a bad image fails its own request (400, naming the image) before it can join a
batch. Answers and the other requests are the API's wire format, shared with the client: teaming.api.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

import torch
from pydantic import BaseModel, Field, StringConstraints, ValidationError
from starlette.requests import Request

from service.settings import Settings
from teaming._validation import DataError
from teaming.api import ErrorOut
from teaming.decode import decode_photo, decoded_pixels, photo_least, read_header
from teaming.preprocess import InputContract

REASONS = {
    400: "the body cannot be read, or its data cannot be used (the message says which item and why)",
    401: "no bearer token",
    403: "a token this route does not take",
    404: "no such row, or none for you",
    408: "the body stalled",
    409: "the row is not in a state that allows this (resolved, or the lease is not yours)",
    413: "the body is over the route's size limit",
    415: "a content type or image format the service does not take",
    422: "the request does not match its schema",
    429: "too many unfinished uploads from this client",
    503: "the database is unreachable or the service is saturated; retry after Retry-After seconds",
}


def errors(*codes: int) -> dict:
    """OpenAPI responses for these refusals: each is {"detail": "<one line>"} (teaming.api.ErrorOut)."""
    return {code: {"model": ErrorOut, "description": REASONS[code]} for code in codes}


GUARDED = (401, 403, 503)  # every protected route
WITH_BODY = (400, 408, 413, 415, 429)  # every route that reads a JSON body


def media_type(request: Request) -> str:
    """The request's Content-Type without its parameters, in lower case ("" when absent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json(content_type: str) -> bool:
    """Whether a media type (`media_type`'s form) is JSON: application/json or application/*+json."""
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


class Refused(Exception):
    """A request the service turns down: `status` (4xx, or 503) and a one-line reason for the caller."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


ItemId = Annotated[str, StringConstraints(max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")]


class ImageIn(BaseModel):
    """One image to classify: base64 bytes (JPEG, PNG, GIF, WebP or BMP) and an optional caller id."""

    id: ItemId | None = Field(None, description="caller's item id (no control characters); generated when absent")
    data: str = Field(
        ...,
        min_length=1,
        description="the image file in base64 (a data URL's 'data:image/jpeg;base64,' prefix is taken too)",
        json_schema_extra={"format": "byte"},
    )


class ClassifyIn(BaseModel):
    images: list[ImageIn] = Field(..., min_length=1, description="at most TEAMING_MAX_IMAGES images")


SHOWN = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp"}


@dataclass
class Decoded:
    """An image ready for the model and for people: its id, pixels at the model's input size, and what a
    reviewer is shown: the original bytes (so only formats browsers show are taken), or an upright JPEG copy of a
    photo turned by its EXIF orientation or too large to show."""

    item_id: str | None
    pixels: torch.Tensor
    shown: bytes
    content_type: str


@dataclass
class ClassifyJob:
    """One classify request's decoded images and the moment it must be answered by."""

    images: list[Decoded]
    deadline: float  # time.monotonic()

    def late(self) -> "Refused | None":
        """The refusal it gets once past its deadline, before anything of it is logged; None while in time."""
        if time.monotonic() <= self.deadline:
            return None
        return Refused(503, "the service is too busy to answer this request in time; nothing was logged", 5)


class PixelBudget:
    """Pixels being decoded at once in this process; a request over the budget is turned away (503)."""

    def __init__(self, pixels: int) -> None:
        self.pixels = pixels
        self.used = 0
        self.lock = threading.Lock()

    @contextmanager
    def hold(self, pixels: int, name: str):
        with self.lock:
            if self.used and self.used + pixels > self.pixels:
                raise Refused(503, f"{name}: the service is busy decoding other images; retry shortly", 1)
            self.used += pixels
        try:
            yield
        finally:
            with self.lock:
                self.used -= pixels


def parse(body: object, s: Settings) -> ClassifyIn:
    """The request's JSON as a ClassifyIn: 400 past the image count limit, 422 with the first schema problem."""
    if isinstance(body, dict) and isinstance(body.get("images"), list) and len(body["images"]) > s.max_images:
        raise Refused(400, f"images: at most {s.max_images} items per request, got {len(body['images'])}")
    try:
        return ClassifyIn.model_validate(body)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Refused(422, f"{where}: {first['msg']}") from None


def image_bytes(item: ImageIn, name: str, limit: int) -> bytes:
    """The image's bytes from its base64 `data` (a data URL's `data:image/...;base64,` prefix is dropped); 400
    past `limit` bytes or for data that is not base64."""
    data = item.data
    if data.startswith("data:"):
        head, sep, data = data.partition(",")
        if not sep or not head.endswith(";base64"):
            raise Refused(400, f"{name}: a data URL must be base64 ('data:image/jpeg;base64,...')")
    if len(data) > 4 * (limit + 2) // 3 + 4:
        raise Refused(400, f"{name}: over the size limit of {limit} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(400, f"{name}: data is not valid base64") from None
    if len(raw) > limit:
        raise Refused(400, f"{name}: {len(raw)} bytes is over the size limit of {limit}")
    return raw


def decode(item: ImageIn, position: int, s: Settings, contract: InputContract, budget: PixelBudget) -> Decoded:
    """One image within the byte, pixel and format limits, turned upright by its EXIF orientation and shaped by
    the model's input contract (a JPEG decoded at reduced scale), with the copy people are shown; 400 (415 for a
    format browsers do not show) naming the image by its id, or its position."""
    name = item.id or f"images.{position}"
    raw = image_bytes(item, name, s.max_image_bytes)
    try:
        header = read_header(raw, name, s.max_pixels)
        if header.format not in SHOWN:
            raise Refused(415, f"{name}: {header.format} images are not taken; send JPEG, PNG, GIF, WebP or BMP")
        held = decoded_pixels(header, photo_least(header, contract.size))
        with budget.hold(max(held, contract.size**2), name):
            pixels, copy = decode_photo(raw, contract, name, s.max_pixels)
    except DataError as err:
        raise Refused(400, str(err)) from None
    if copy is not None:
        return Decoded(item.id, pixels, copy, "image/jpeg")
    return Decoded(item.id, pixels, raw, SHOWN[header.format])


def inline_schema(model: type[BaseModel]) -> dict:
    """A model's JSON schema with its $defs written in place, to stand alone inside the OpenAPI document."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)
