"""One error shape for the REST API: ``{"code": <http status>, "message": "..."}`` (Go 1.0.x, PROTOCOL §2.4).

dfget's endpoints (``/peer/*``, ``/task/metrics``) keep FastAPI's default behaviour: their answers are
decided in ``app/api/routes/peer.py`` and dfget never reads an error body anyway.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from app.api.responses import JSONBytes
from app.api.route_index import flat_routes

_DFGET_PATH = re.compile(r"^(?:/v[0-9.]+)?/(?:peer/|task/metrics$)")


def is_dfget_path(path: str) -> bool:
    return bool(_DFGET_PATH.match(path))


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"code": status, "message": message}


def _describe(errors: Any) -> str:
    """``query.limit: Input should be less than or equal to 1000; ...`` from pydantic's error list."""
    parts = []
    for error in errors:
        where = ".".join(str(item) for item in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else str(error.get("msg", "invalid")))
    return "; ".join(parts) or "invalid request"


def allowed_methods(request: Request) -> str:
    """Every method of every route on this path. Starlette's own ``Allow`` names only the methods of
    the first route whose path matched (GET /peers and POST /peers are two routes): a 405 must list all."""
    methods: set[str] = set()
    for entry in flat_routes(request.app.routes):
        matches = getattr(entry.route, "matches", None)
        if matches is not None and matches(request.scope)[0] != Match.NONE:
            methods |= entry.methods
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if is_dfget_path(request.url.path):
            return await http_exception_handler(request, exc)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return JSONBytes(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                         headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        return JSONBytes(error_body(400, _describe(exc.errors())), status_code=400)


class ApiError(BaseModel):
    """The REST API's error body."""

    code: int
    message: str


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ApiError, "description": "Bad input"},
    401: {"model": ApiError, "description": "No token"},
    403: {"model": ApiError, "description": "Wrong token"},
    # Any request whose body is over DF_MAX_REST_BODY_BYTES, refused while it is read (app/api/limits.py).
    413: {"model": ApiError, "description": "Body over the size limit"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ApiError, "description": "Unknown id"}}
