"""Who may call what, decided once at the door (admission.py), before any byte of a body is read.

Callers hold the classify token (TEAMING_CLASSIFY_TOKEN; classify is open when it is unset), reviewers their own
tokens, the admin the admin token. Access is denied by default: a path no rule names and not listed as public
takes the admin token, so a route added tomorrow is not public by accident. Tokens are compared in constant time.
Reviewers never read outcomes (they show the model's answer and the other reviewers', which would unblind audits)
and see only images they hold a lease on; the admin sees everything but does not answer tasks.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from fastapi import Request
from fastapi.security import HTTPBearer

from service.settings import get_settings

ADMIN, REVIEWER, CALLER, ANYONE = "admin", "reviewer", "caller", "anyone"
bearer = HTTPBearer(auto_error=False, description="a reviewer, admin or classify token")  # for the OpenAPI page

# Anyone: health and metrics (BentoML's), the API's description, and the reviewer page's files (it asks for a
# reviewer token itself; its data routes check it).
PUBLIC = frozenset(
    {
        "/livez",
        "/readyz",
        "/metrics",
        "/schema.json",
        "/docs.json",
        "/openapi.json",
        "/docs",
        "/docs/oauth2-redirect",
        "/redoc",
        "/v1/review",
        "/v1/review.js",
        "/v1/review.css",
        "/v1/review.svg",
    }
)
# (method or None for any, path pattern, roles allowed, open while classify is); the first match decides; a path
# neither matched nor public takes the admin token.
ACCESS = [
    ("POST", re.compile(r"/classify/?", re.DOTALL), {CALLER}, True),
    ("GET", re.compile(r"/v1/model/?", re.DOTALL), {CALLER, REVIEWER, ADMIN}, True),
    (None, re.compile(r"/v1/outcomes(/.*)?", re.DOTALL), {CALLER, ADMIN}, False),
    (None, re.compile(r"/v1/(admin/.*|reviewers/?|alarms(/.*)?)", re.DOTALL), {ADMIN}, False),
    (None, re.compile(r"/v1/queue/(stats/?|tasks/[^/]+/image/?)", re.DOTALL), {REVIEWER, ADMIN}, False),
    (None, re.compile(r"/v1/queue(/.*)?", re.DOTALL), {REVIEWER}, False),
    (None, re.compile(r"/v1/answers(/.*)?", re.DOTALL), {REVIEWER}, False),  # corrections of one's own answers
    (None, re.compile(r".*", re.DOTALL), {ADMIN}, False),  # anything else: denied to all but the admin
]
WHO = {CALLER: "the classify token", ADMIN: "the admin token", REVIEWER: "a reviewer token"}


@dataclass(frozen=True)
class Principal:
    role: str
    name: str | None = None  # the reviewer's name


class Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def same(token: str | None, expected: str | None) -> bool:
    """Constant-time comparison; an unset expected token matches nothing."""
    return token is not None and expected is not None and hmac.compare_digest(token.encode(), expected.encode())


def identify(authorization: str | None) -> Principal | None:
    """The bearer token's holder, or None without a bearer token. Every known token is compared, so the time
    taken does not tell which one matched."""
    if not authorization or not authorization[:7].lower() == "bearer ":
        return None
    token = authorization[7:].strip()
    s = get_settings()
    found = Principal(ANYONE)
    for known, name in s.reviewer_tokens.items():
        if same(token, known):
            found = Principal(REVIEWER, name)
    if same(token, s.admin_token):
        found = Principal(ADMIN)
    if same(token, s.classify_token):
        found = Principal(CALLER)
    return found


def authorize(method: str, path: str, authorization: str | None) -> Principal:
    """The caller of `method path`, or Denied (401 without a token, 403 with one that may not)."""
    who = identify(authorization)
    if path in PUBLIC:
        return who or Principal(ANYONE)
    named = [rule for rule in ACCESS[:-1] if rule[1].fullmatch(path)]
    if named and not any(rule[0] in (None, method) for rule in named):
        return who or Principal(ANYONE)  # a named path, another method: the app answers 405 and runs nothing
    for rule_method, pattern, roles, open_with_classify in ACCESS:
        if (rule_method is None or rule_method == method) and pattern.fullmatch(path):
            if open_with_classify and get_settings().classify_token is None:
                return who or Principal(ANYONE)  # without a classify token, classify (and what it serves) is open
            if who is None or who.role == ANYONE:  # no token, or one nobody holds
                need = " or ".join(WHO[r] for r in sorted(roles))
                raise Denied(
                    401, f"{path} needs 'Authorization: Bearer <{need}>'" + (" (unknown token)" if who else "")
                )
            if who.role not in roles:
                raise Denied(403, f"{path} takes {' or '.join(WHO[r] for r in sorted(roles))}")
            return who
    raise Denied(401, f"{path!r} needs 'Authorization: Bearer <the admin token>'")  # the last rule matches all


def principal(request: Request) -> Principal:
    """The caller the guard let in (a FastAPI dependency)."""
    return request.scope.get("state", {}).get("principal") or Principal(ANYONE)


def reviewer(request: Request) -> str:
    """The calling reviewer's name (the guard admitted only reviewers to these routes)."""
    who = principal(request)
    if who.role != REVIEWER or who.name is None:
        raise Denied(403, "this route takes a reviewer token")
    return who.name
