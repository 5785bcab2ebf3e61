"""The service's HTTP face (FastAPI, mounted at the root beside BentoML's own /livez, /readyz and /metrics):
callers' routes (callers.py), reviewers' (reviewing.py) and the admin's (admin.py), with every refusal mapped
to its HTTP code in one place and logged as one WARNING line."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from service import admin, callers, reviewing
from service.schemas import Refused
from teaming.ops.queue import Conflict, NotFound

logger = logging.getLogger("bentoml.teaming")
web = FastAPI(title="teaming", description="Classify images with a model and human reviewers.")
web.include_router(callers.router)
web.include_router(reviewing.router, prefix="/v1")
web.include_router(admin.router, prefix="/v1")


def _refuse(request: Request, status: int, message: str, key: str = "detail", headers: dict | None = None):
    logger.warning("refused %s %s: %d %s", request.method, request.url.path, status, message)
    return JSONResponse({key: message}, status, headers=headers)


@web.exception_handler(Refused)
async def _refused(request: Request, err: Refused) -> JSONResponse:
    headers = None if err.retry_after is None else {"Retry-After": str(int(err.retry_after))}
    return _refuse(request, err.status, err.message, "error", headers)


@web.exception_handler(NotFound)
async def _not_found(request: Request, err: NotFound) -> JSONResponse:
    return _refuse(request, 404, str(err))


@web.exception_handler(Conflict)
async def _conflict(request: Request, err: Conflict) -> JSONResponse:
    return _refuse(request, 409, str(err))


@web.exception_handler(RequestValidationError)
async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return _refuse(request, 422, f"{where}: {first['msg']}")


@web.exception_handler(HTTPException)
async def _http(request: Request, err: HTTPException) -> JSONResponse:
    return _refuse(request, err.status_code, str(err.detail), headers=err.headers)
