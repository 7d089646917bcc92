"""Legacy preheat API for Harbor 2.1–2.11 (HARBOR.md §2, PROTOCOL §6.4): ``/preheats`` and
``/api/v1/preheats`` (the ``/v1.0/...`` copies come from the version-prefix middleware).

Deliberate differences from the Go supernode (HARBOR.md §2 recommendations): a repeated create answers
201 with the same id (never 208: Harbor 2.1/2.2 fail on it, 2.3+ would call a failed preheat a success)
and runs the preheat again (blobs already seeded are reused, not fetched); a failure shows
``DF_PREHEAT_FAIL_STATUS`` ("FAIL", on which every Harbor stops polling) on ``/preheats/{id}``, the path
Harbor uses, and the swagger's "FAILED" on ``/api/v1/preheats/{id}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.auth import Admin, Reader
from app.api.errors import ERRORS, ApiError
from app.api.responses import JSONBytes
from app.preheat import docs, views
from app.preheat.model import Status
from app.preheat.requests import BadPreheatRequest, parse_legacy
from app.preheat.service import PreheatRefused, PreheatService

# Auth and validation errors get the 1.0.x envelope {"code","message"} from app.api.errors.
router = APIRouter(tags=["preheat"], responses=ERRORS)


def preheat_service(request: Request) -> PreheatService:
    service: PreheatService = request.app.state.preheat
    return service


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _error(status: int, message: str) -> JSONBytes:
    return JSONBytes({"code": status, "message": message}, status_code=status)


def _not_found(pid: str) -> JSONBytes:
    return _error(404, f"{pid} doesn't exists")  # sic: the Go supernode's text


async def create_preheat(request: Request, actor: Admin) -> JSONBytes:
    try:
        wanted = parse_legacy(await request.body())
        pid = await preheat_service(request).create(wanted, actor, "legacy", client_ip(request))
    except (BadPreheatRequest, PreheatRefused) as exc:
        return _error(400, exc.message)
    return JSONBytes({"ID": pid}, status_code=201)


async def list_preheats(
    request: Request, actor: Reader,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most recent first; at most this many.")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> JSONBytes:
    """The array Go served, newest first, a page at a time (``limit``, ``offset``)."""
    page = await preheat_service(request).list_page(limit, offset)
    return JSONBytes([views.legacy_task(record) for record in page])


async def delete_preheat(pid: str, request: Request, actor: Admin) -> Response:
    if not await preheat_service(request).delete(pid, actor, client_ip(request)):
        return _not_found(pid)
    return JSONBytes(True)


def _get_preheat(api_v1: bool) -> Callable[..., Awaitable[JSONBytes]]:
    async def get_preheat(pid: str, request: Request, actor: Reader) -> JSONBytes:
        record = await preheat_service(request).get(pid)
        if record is None:
            return _not_found(pid)
        if not api_v1:
            return JSONBytes(views.legacy_info(record, request.app.state.settings.preheat_fail_status))
        # The /api/v1 copy keeps the swagger's FAILED and adds per-blob progress (Go ignores extra keys).
        return JSONBytes({**views.legacy_info(record, Status.FAILED), "progress": views.progress(record)})

    return get_preheat


_UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"model": ApiError, "description": "Unknown preheat id"}}
for _prefix in ("", "/api/v1"):
    router.add_api_route(f"{_prefix}/preheats", create_preheat, methods=["POST"], response_class=JSONBytes,
                         status_code=201, responses={201: {"model": docs.PreheatCreated}},
                         openapi_extra={"requestBody": docs.LEGACY_PREHEAT_BODY})
    router.add_api_route(f"{_prefix}/preheats", list_preheats, methods=["GET"], response_class=JSONBytes,
                         responses={200: {"model": list[docs.LegacyPreheatTask]}})
    router.add_api_route(f"{_prefix}/preheats/{{pid}}", _get_preheat(bool(_prefix)), methods=["GET"],
                         response_class=JSONBytes, responses={200: {"model": docs.PreheatInfo}, **_UNKNOWN})
    router.add_api_route(f"{_prefix}/preheats/{{pid}}", delete_preheat, methods=["DELETE"], response_class=JSONBytes,
                         responses={200: {"model": bool}, **_UNKNOWN})
