"""The service's HTTP face (FastAPI, mounted at the root beside BentoML's own /livez, /readyz and /metrics):
callers' routes (callers.py), reviewers' (reviewing.py) and the admin's (admin.py), with every refusal mapped
to its HTTP code in one place and logged as one WARNING line."""

from __future__ import annotations

import logging

import bentoml
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from service import admin, callers, reviewing
from service.auth import Denied
from service.schemas import Refused, is_json, media_type
from service.settings import get_settings
from teaming.api import ANSWER_TAGS
from teaming.ops.queue import Conflict, NotFound

logger = logging.getLogger("bentoml.teaming")
web = FastAPI(title="teaming", description="Classify images with a model and human reviewers.")
ROUTERS = ((callers.router, ""), (reviewing.router, "/v1"), (admin.router, "/v1"))  # with their prefixes
for router, prefix in ROUTERS:
    web.include_router(router, prefix=prefix)


def openapi_with_classes() -> dict:
    """The OpenAPI document, with the served model's classes as the labels a reviewer may answer, and no
    security requirement on what is open (classify and /v1/model without a classify token)."""
    if web.openapi_schema is None:
        schema = get_openapi(title=web.title, version=web.version, description=web.description, routes=web.routes)
        classes = bentoml.get_current_service().classes
        answer = schema["components"]["schemas"]["ClassAnswer"]["properties"]["label"]
        answer["anyOf"] = [
            {"type": "integer", "minimum": 0, "maximum": len(classes) - 1},
            {"type": "string", "enum": classes},
        ]
        if get_settings().classify_token is None:
            for method, path in (("post", "/classify"), ("get", "/v1/model")):
                operation = schema["paths"].get(path, {}).get(method, {})
                operation.pop("security", None)
                for code in ("401", "403"):
                    operation.get("responses", {}).pop(code, None)
        web.openapi_schema = schema
    return web.openapi_schema


web.openapi = openapi_with_classes


def _refuse(request: Request, status: int, message: str, headers: dict | None = None):
    """Every refusal: {"detail": "<one line>"} with its status, and one WARNING line in the log."""
    logger.warning("refused %s %s: %d %s", request.method, request.url.path, status, message)
    return JSONResponse({"detail": message}, status, headers=headers)


@web.exception_handler(Refused)
async def _refused(request: Request, err: Refused) -> JSONResponse:
    headers = None if err.retry_after is None else {"Retry-After": str(int(err.retry_after))}
    return _refuse(request, err.status, err.message, headers)


@web.exception_handler(NotFound)
async def _not_found(request: Request, err: NotFound) -> JSONResponse:
    return _refuse(request, 404, str(err))


@web.exception_handler(Conflict)
async def _conflict(request: Request, err: Conflict) -> JSONResponse:
    return _refuse(request, 409, str(err))


@web.exception_handler(RequestValidationError)
async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    """422 naming the first field that does not fit (without the schema's union tags); 415 when the body that did
    not fit was sent as something other than JSON."""
    first = err.errors()[0]
    kind = media_type(request)
    if first["loc"][:1] == ("body",) and kind and not is_json(kind):
        return _refuse(request, 415, f"this route takes a JSON body (Content-Type: application/json), not {kind}")
    where = ".".join(str(p) for p in first["loc"] if p not in ANSWER_TAGS)
    return _refuse(request, 422, f"{where}: {first['msg']}")


@web.exception_handler(HTTPException)
async def _http(request: Request, err: HTTPException) -> JSONResponse:
    return _refuse(request, err.status_code, str(err.detail), headers=err.headers)


@web.exception_handler(Denied)
async def _denied(request: Request, err: Denied) -> JSONResponse:
    return _refuse(request, err.status, err.message)


@web.exception_handler(OperationalError)
@web.exception_handler(InterfaceError)
@web.exception_handler(PoolTimeout)
async def _database_down(request: Request, err: Exception) -> JSONResponse:
    message = f"the database is unreachable or refuses writes, retry later ({type(err).__name__})"
    return _refuse(request, 503, message, headers={"Retry-After": "5"})
