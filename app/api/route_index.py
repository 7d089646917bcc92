"""Every route of the app, flat, across FastAPI versions: 0.165+ keeps included routers as lazy
branches in ``app.routes`` (``fastapi.routing.iter_route_contexts`` walks them); older versions list
the routes themselves."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import routing

# openapi_extra key of a GET route that changes state (so it needs Admin, and its auth is tested).
MUTATING_GET = "x-mutating"
# openapi_extra key of a route whose auth answers follow another product's contract (the Dragonfly2
# Open API's 401 {"message":"Unauthorized"}, the Harbor webhook secret); value: where that is tested.
OWN_AUTH = "x-own-auth"


@dataclass(frozen=True)
class RouteEntry:
    path: str
    methods: frozenset[str]
    route: Any  # the route (or FastAPI's context of it): endpoint, openapi_extra, dependant, ...


def flat_routes(routes: Iterable[Any]) -> Iterator[RouteEntry]:
    walk = getattr(routing, "iter_route_contexts", None)
    for route in walk(list(routes)) if walk is not None else routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if isinstance(path, str) and methods:
            yield RouteEntry(path, frozenset(methods), route)
