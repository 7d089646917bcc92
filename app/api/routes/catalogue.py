"""Route lists (PROTOCOL §4.2): Go 1.0.x answered ``GET <prefix>/`` with the routes of that category,
``{"category","prefix","api":[{"method","path"}]}``, paths relative to the prefix."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app.api.auth import Reader
from app.api.errors import ERRORS
from app.api.route_index import flat_routes

router = APIRouter(tags=["system"], responses=ERRORS)

_DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


class ApiRoute(BaseModel):
    method: str
    path: str


class RouteList(BaseModel):
    category: str
    prefix: str
    api: list[ApiRoute]


def route_list(request: Request, category: str, prefix: str) -> RouteList:
    """Computed from the app's routes, so routes added later (preheat, ...) are listed too."""
    api = []
    for route in flat_routes(request.app.routes):
        if route.path in _DOCS:
            continue
        if prefix and not route.path.startswith(prefix + "/"):
            continue
        if not prefix and route.path.startswith("/api/"):
            continue
        for method in sorted(route.methods - {"HEAD"}):
            api.append(ApiRoute(method=method, path=route.path[len(prefix):] or "/"))
    return RouteList(category=category, prefix=prefix, api=api)


@router.get("/", response_model=RouteList)
async def legacy_routes(request: Request, _: Reader) -> RouteList:
    return route_list(request, "legacy api", "")


@router.get("/api/v1/", response_model=RouteList)
async def v1_routes(request: Request, _: Reader) -> RouteList:
    return route_list(request, "v1 api", "/api/v1")


@router.get("/api/ext/", response_model=RouteList)
async def extension_routes(request: Request, _: Reader) -> RouteList:
    return route_list(request, "extension api", "/api/ext")
