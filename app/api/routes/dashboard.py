"""``/dashboard``: the operations page (app/dashboard, package data). Static files only; the page reads
and changes the cluster through the public REST API with the token the operator enters. Not part of
the OpenAPI document (it is no API)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from starlette.responses import FileResponse, RedirectResponse

from app.dashboard import STATIC_DIR

router = APIRouter(include_in_schema=False)

_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
# The only files served: those shipped, fixed at import (no path from a request reaches the filesystem).
FILES = {path.relative_to(STATIC_DIR).as_posix(): path for path in STATIC_DIR.rglob("*")
         if path.is_file() and path.suffix in _TYPES}
_HEADERS = {
    # Scripts and styles only from this replica; style attributes (bar widths) are the one inline thing.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'self'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated: a replica upgrade reaches open pages at their next load
}


@router.get("/dashboard")
async def dashboard_root() -> RedirectResponse:
    # The page's assets and API calls are relative to the directory /dashboard/.
    return RedirectResponse("dashboard/", status_code=308)


@router.get("/dashboard/")
async def dashboard_index() -> FileResponse:
    return _file("index.html")


@router.get("/dashboard/{name:path}")
async def dashboard_file(name: str) -> FileResponse:
    return _file(name)


def _file(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise HTTPException(404, f"no dashboard file {name!r}")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)
