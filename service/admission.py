"""Admission at the door (an ASGI middleware around the whole service), before any byte of a body is read:

- who is calling (auth.py): 401/403 before a body is read, so strangers cannot make the service wait on them;
- how large the body says it is: 413 over the route's limit (classify: TEAMING_MAX_IMAGES images of
  TEAMING_MAX_IMAGE_BYTES each, in base64, and at most TEAMING_MAX_REQUEST_BYTES in all);
- how many bodies one client has not finished sending: 429 past TEAMING_MAX_UNREAD_BODIES, for that client only;
- how long a body may stall: 408 once TEAMING_BODY_IDLE_SECONDS pass without a byte.

BentoML's own concurrency cap counted a stalled upload like real work, so a thousand of them turned every caller
away; the service runs without it, and saturation shows on /readyz instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter

import bentoml
from bentoml.exceptions import BentoMLException
from starlette.responses import JSONResponse

from service.auth import Denied, authorize
from service.settings import get_settings

logger = logging.getLogger("bentoml.teaming")
SMALL_BODY = 64 * 1024  # any route but classify


def body_limit(path: str) -> int:
    s = get_settings()
    if path.rstrip("/") == "/classify":
        return min(s.max_images * (4 * s.max_image_bytes // 3 + 512) + 4096, s.max_request_bytes)
    return SMALL_BODY


def replacing_body(send, replace):
    """`send` with the response's body swapped whole for `replace(start message)` -> (body, content type or None
    to keep it), or passed through where that returns None; the headers are made to match."""
    held = {}

    async def sending(message) -> None:
        if message["type"] == "http.response.start" and (new := replace(message)) is not None:
            held["body"], kind = new
            drop = {b"content-length"} | ({b"content-type"} if kind else set())
            kept = [(k, v) for k, v in message.get("headers") or [] if k not in drop]
            kept += [(b"content-type", kind)] if kind else []
            message = {**message, "headers": kept + [(b"content-length", str(len(held["body"])).encode())]}
        elif message["type"] == "http.response.body" and "body" in held:
            if message.get("more_body"):
                return  # the old body's rest: replaced as a whole below
            message = {**message, "body": held.pop("body")}
        await send(message)

    return sending


def as_json(send, path: str):
    """`send` with BentoML's own plain-text 404 and 405 (paths and methods nothing serves) turned into the
    {"detail": ...} every other refusal is."""

    def replace(start: dict) -> tuple[bytes, bytes] | None:
        kind = dict(start.get("headers") or []).get(b"content-type", b"")
        if start["status"] not in (404, 405) or not kind.startswith(b"text/plain"):
            return None
        what = "no such path" if start["status"] == 404 else "this path does not take that method"
        return json.dumps({"detail": f"{path}: {what}"}).encode(), b"application/json"

    return replacing_body(send, replace)


def with_alarms(send, lines: list[str]):
    """`send` with /readyz's 200 body saying "ready" and one line for each open alarm: the service stays ready
    (a fallback sends people the items; it does not stop serving), and whoever reads the probe sees why."""
    body = ("ready\n" + "".join(f"alarm: {line}\n" for line in lines)).encode()
    return replacing_body(send, lambda start: (body, None) if start["status"] == 200 else None)


def open_alarm_lines() -> list[str]:
    """The open alarms as of this replica's last look at the log (none before the service is up)."""
    try:
        return list(bentoml.get_current_service().background.open_alarms)
    except (BentoMLException, AttributeError):
        return []


class Admission:
    def __init__(self, app) -> None:
        self.app = app
        self.unread: Counter[str] = Counter()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        path, method = scope["path"], scope["method"]
        send = as_json(send, path)
        if path == "/readyz":
            send = with_alarms(send, open_alarm_lines())
        try:
            scope.setdefault("state", {})["principal"] = authorize(method, path, headers.get("authorization"))
        except Denied as err:
            return await self._refuse(scope, receive, send, err.status, err.message)
        length = headers.get("content-length")
        has_body = (length is not None and length != "0") or "chunked" in headers.get("transfer-encoding", "")
        if not has_body:
            return await self.app(scope, receive, send)
        if length is not None and length.isdigit() and int(length) > body_limit(path):
            return await self._refuse(scope, receive, send, 413, f"a body of {length} bytes is over {body_limit(path)}")
        s = get_settings()
        client = (scope.get("client") or ("unknown", 0))[0]
        if s.max_unread_bodies and self.unread[client] >= s.max_unread_bodies:
            return await self._refuse(scope, receive, send, 429, "too many unfinished uploads from you", 1)
        self.unread[client] += 1
        upload = _Upload(self, scope, receive, send, client, body_limit(path), s.body_idle_seconds)
        try:
            await self.app(scope, upload.receive, upload.send)
        finally:
            upload.finish()

    @staticmethod
    async def _refuse(scope, receive, send, status: int, message: str, retry_after: float | None = None) -> None:
        logger.warning("refused %s %s: %d %s", scope["method"], scope["path"], status, message)
        headers = {"Retry-After": str(int(retry_after))} if retry_after else None
        await JSONResponse({"detail": message}, status, headers=headers)(scope, receive, send)


class _Upload:
    """One admitted body as it arrives: refused with 408 when it stalls and 413 when it grows past its limit (a
    chunked body announces no length), and counted among its client's unfinished uploads until it ends."""

    def __init__(self, admission: Admission, scope, receive, send, client: str, limit: int, idle: float) -> None:
        self.admission, self.scope, self._receive, self._send = admission, scope, receive, send
        self.client, self.limit, self.idle = client, limit, idle
        self.done = self.replied = False
        self.received = 0

    def finish(self) -> None:
        if not self.done:
            self.done = True
            unread = self.admission.unread
            unread[self.client] -= 1
            if unread[self.client] <= 0:
                del unread[self.client]

    async def receive(self):
        if self.done:
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), self.idle)
        except asyncio.TimeoutError:
            return await self._refuse(408, f"no body byte for {self.idle:g} s")
        self.received += len(message.get("body", b""))
        if self.received > self.limit:
            return await self._refuse(413, f"a body of more than {self.limit} bytes is over the limit")
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.finish()
        return message

    async def send(self, message) -> None:
        if not self.replied:  # after a refusal the app only learns that the client is gone
            await self._send(message)

    async def _refuse(self, status: int, why: str) -> dict:
        self.finish()
        self.replied = True
        await self.admission._refuse(self.scope, self._receive, self._send, status, why)
        return {"type": "http.disconnect"}
