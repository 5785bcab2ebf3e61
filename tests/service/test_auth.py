"""Access is denied by default: every route of the app is public by name or named by a rule, and a path nobody
named takes the admin token."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("fastapi", reason="the service extra is not installed")

from service import auth  # noqa: E402
from service.settings import get_settings  # noqa: E402
from service.web import ROUTERS, web  # noqa: E402

BENTOML_ROUTES = ("/livez", "/readyz", "/metrics", "/schema.json", "/docs.json")  # BentoML's own, beside ours


@pytest.fixture
def tokens(monkeypatch):
    monkeypatch.setenv("TEAMING_REVIEWER_TOKENS", "alice:tok-a")
    monkeypatch.setenv("TEAMING_ADMIN_TOKEN", "tok-admin")
    monkeypatch.setenv("TEAMING_CLASSIFY_TOKEN", "tok-caller")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def named_rule(method: str, path: str):
    """The rule of ACCESS that names `method path`, short of the catch-all; None when only the catch-all does."""
    for rule in auth.ACCESS[:-1]:
        if (rule[0] is None or rule[0] == method) and rule[1].fullmatch(path):
            return rule
    return None


def every_route() -> list[tuple[str, str]]:
    """(method, path) of every route the app serves: its own (docs, OpenAPI) and each included router's."""
    routes = [(r, "") for r in web.routes if hasattr(r, "path")]
    routes += [(r, prefix) for router, prefix in ROUTERS for r in router.routes]
    return [(m, prefix + r.path) for r, prefix in routes for m in sorted(getattr(r, "methods", None) or {"GET"})]


def test_every_route_is_public_by_name_or_named_by_a_rule():
    unplaced = []
    routes = every_route()
    assert ("POST", "/classify") in routes and ("GET", "/v1/queue/tasks/{task_id}/image") in routes
    for method, template in routes:
        path = re.sub(r"\{[^}]+\}", "1", template)  # /v1/queue/tasks/{task_id}/image -> .../1/image
        if path not in auth.PUBLIC and named_rule(method, path) is None:
            unplaced.append(f"{method} {template}")
    assert unplaced == [], f"routes no rule names (only the admin may call them): {unplaced}"
    assert set(BENTOML_ROUTES) <= auth.PUBLIC


def test_a_path_nobody_named_takes_the_admin_token(tokens):
    with pytest.raises(auth.Denied) as err:
        auth.authorize("GET", "/v1/added-tomorrow", None)
    assert err.value.status == 401
    with pytest.raises(auth.Denied) as err:
        auth.authorize("GET", "/v1/added-tomorrow", "Bearer tok-a")
    assert err.value.status == 403
    assert auth.authorize("GET", "/v1/added-tomorrow", "Bearer tok-admin").role == auth.ADMIN
    assert auth.authorize("GET", "/livez", None).role == auth.ANYONE  # public by name


def test_a_named_path_with_a_method_it_does_not_take_reaches_the_app_for_its_405(tokens):
    assert auth.authorize("TRACE", "/v1/model", None).role == auth.ANYONE  # FastAPI answers 405, runs nothing
    with pytest.raises(auth.Denied):
        auth.authorize("GET", "/v1/model", None)  # the method it takes still needs a token


def test_a_path_with_a_newline_in_it_is_judged_like_any_other(tokens):
    with pytest.raises(auth.Denied) as err:
        auth.authorize("POST", "/v1/queue/tasks/\n/skip", None)  # %0A in the URL: once matched no rule and hung
    assert err.value.status == 401
    assert auth.authorize("POST", "/v1/queue/tasks/\n/skip", "Bearer tok-a").role == auth.REVIEWER
