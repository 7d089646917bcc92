"""The Dragonfly2 Open API subset Harbor 2.12+ uses (HARBOR.md §3): ``GET /healthy``,
``POST /oapi/v1/jobs``, ``GET /oapi/v1/jobs/{id}``. Integer job ids, states PENDING/SUCCESS/FAILURE only,
errors as Dragonfly2's manager writes them (422 ``{"errors":..}``, 401 ``{"message":"Unauthorized"}``)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.responses import PlainTextResponse, Response

from app.api.auth import Admin, Reader
from app.api.responses import JSONBytes
from app.api.route_index import OWN_AUTH
from app.api.routes.preheat import client_ip, preheat_service
from app.preheat import docs, views
from app.preheat.requests import BadPreheatRequest, parse_oapi
from app.preheat.service import PreheatRefused

_HOSTNAME = socket.gethostname()


class OpenApiErrorRoute(APIRoute):
    """A missing or wrong token is 401 ``{"message":"Unauthorized"}``, as for a bad Dragonfly2 PAT."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def envelope(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                if exc.status_code in (401, 403):
                    return JSONBytes({"message": "Unauthorized"}, status_code=401)
                return JSONBytes({"message": str(exc.detail)}, status_code=exc.status_code)
            except RequestValidationError as exc:
                return JSONBytes({"errors": str(exc.errors())}, status_code=422)

        return envelope


router = APIRouter(tags=["open api"], route_class=OpenApiErrorRoute)


@router.get("/healthy", response_class=PlainTextResponse)
async def healthy() -> PlainTextResponse:
    return PlainTextResponse("OK")


_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {401: {"model": docs.OapiMessage, "description": "No or wrong token"}}
_INVALID: dict[int | str, dict[str, Any]] = {422: {"model": docs.OapiErrors, "description": "Invalid request"}}


@router.post(
    "/oapi/v1/jobs", response_class=JSONBytes,
    responses={200: {"model": docs.OapiJob}, 400: {"model": docs.OapiErrors, "description": "Refused URL"},
               **_UNAUTHORIZED, **_INVALID},
    openapi_extra={OWN_AUTH: "tests/test_preheat_api.py", "requestBody": docs.OAPI_JOB_BODY},
)
async def create_job(request: Request, actor: Admin) -> JSONBytes:
    try:
        wanted, args = parse_oapi(await request.body())
    except BadPreheatRequest as exc:
        return JSONBytes({"errors": exc.message}, status_code=422)
    service = preheat_service(request)
    try:
        job = await service.create_job(wanted, args, actor, client_ip(request))
    except PreheatRefused as exc:
        return JSONBytes({"errors": exc.message}, status_code=400)
    found = await service.get_job(job.id)
    record = found[1] if found is not None else None
    return JSONBytes(views.oapi_job(job, record, _HOSTNAME, request.app.state.settings.advertise_ip))


@router.get(
    "/oapi/v1/jobs/{job_id}", response_class=JSONBytes,
    responses={200: {"model": docs.OapiJob}, 404: {"model": docs.OapiMessage, "description": "Unknown job"},
               **_UNAUTHORIZED, **_INVALID},
    openapi_extra={OWN_AUTH: "tests/test_preheat_api.py"},
)
async def get_job(job_id: int, request: Request, actor: Reader) -> JSONBytes:
    found = await preheat_service(request).get_job(job_id)
    if found is None:
        return JSONBytes({"message": f"job {job_id} not found"}, status_code=404)
    job, record = found
    return JSONBytes(views.oapi_job(job, record, _HOSTNAME, request.app.state.settings.advertise_ip))
