"""Who may call what: bearer tokens for reviewers, the admin and (optionally) classify callers.

Tokens are compared in constant time. Every protected route takes one of the FastAPI dependencies below, which
run before the request body is read or validated.
"""

from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

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


def caller_or_admin(creds: Credentials = Depends(bearer)) -> bool:
    """The classify caller's token (TEAMING_CLASSIFY_TOKEN) or the admin's; True for the admin. Reviewers may
    not read outcomes: they show the model's answer and the other reviewers', which would unblind audits."""
    if creds is None:
        raise HTTPException(401, "outcomes need 'Authorization: Bearer <classify or admin token>'")
    s = get_settings()
    if same(creds.credentials, s.admin_token):
        return True
    if same(creds.credentials, s.classify_token):
        return False
    raise HTTPException(403, "outcomes are for the caller (TEAMING_CLASSIFY_TOKEN) and the admin")


def classify_caller(creds: Credentials = Depends(bearer)) -> None:
    """When TEAMING_CLASSIFY_TOKEN is set, classify needs it (checked before the body is read)."""
    token = get_settings().classify_token
    if token and not same(None if creds is None else creds.credentials, token):
        raise HTTPException(401, "classify needs 'Authorization: Bearer <classify token>'")
