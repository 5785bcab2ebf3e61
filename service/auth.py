"""Who may call what: bearer tokens for reviewers, the admin and (optionally) classify callers.

Tokens are compared in constant time. Reviewer and admin routes use the FastAPI dependencies below, which run
before the request body is validated; classify, a BentoML API, is guarded by the ASGI middleware.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse

from service.settings import get_settings

bearer = HTTPBearer(auto_error=False, description="a reviewer, admin or classify token")
Credentials = HTTPAuthorizationCredentials | None


def same(token: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an unset expected token matches nothing."""
    return token is not None and expected is not None and hmac.compare_digest(token.encode(), expected.encode())


def reviewer_name(token: str | None) -> str | None:
    """The reviewer a token belongs to, looked up without revealing which tokens share a prefix."""
    name = None
    for known, who in get_settings().reviewer_tokens.items():
        if same(token, known):
            name = who
    return name


def _token(creds: Credentials, role: str) -> str:
    if creds is None:
        raise HTTPException(401, f"{role} routes need 'Authorization: Bearer <token>'")
    return creds.credentials


def reviewer(creds: Credentials = Depends(bearer)) -> str:
    """The calling reviewer's name (401 without a token, 403 with an unknown one)."""
    name = reviewer_name(_token(creds, "reviewer"))
    if name is None:
        raise HTTPException(403, "unknown reviewer token")
    return name


def admin(creds: Credentials = Depends(bearer)) -> None:
    if not same(_token(creds, "admin"), get_settings().admin_token):
        raise HTTPException(403, "not an admin token")


def reviewer_or_admin(creds: Credentials = Depends(bearer)) -> str | None:
    """The reviewer's name, or None for the admin."""
    token = _token(creds, "reviewer")
    if same(token, get_settings().admin_token):
        return None
    name = reviewer_name(token)
    if name is None:
        raise HTTPException(403, "unknown reviewer token")
    return name


class ClassifyToken:
    """ASGI middleware: when TEAMING_CLASSIFY_TOKEN is set, /classify needs it as a bearer token."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        token = get_settings().classify_token
        if token and scope["type"] == "http" and scope["path"].rstrip("/") == "/classify":
            header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
            given = header[7:].strip() if header.lower().startswith("bearer ") else None
            if not same(given, token):
                response = JSONResponse({"error": "classify needs 'Authorization: Bearer <token>'"}, 401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
