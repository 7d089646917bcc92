"""dfget's endpoints (PROTOCOL §5). Always HTTP 200 with a ``code``: dfget treats any other
status as a transport error and migrates.

The hot path: every piece costs a pull and a success report. In a server these requests are answered
by ``app.api.fastpath`` before they reach FastAPI (no middleware stack, no request objects); the plain
Starlette routes below serve the same answers through ``answer`` when the app runs without that front
(and answer 405 for a wrong method, as every route does). They are described in README.md and
PROTOCOL.md, not in the OpenAPI schema (which is for the REST API).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from app.bridge.peer_ip import PeerAddress
from app.bridge.service import PeerBridge
from app.core.redis import is_outage
from app.protocol import wire
from app.protocol.codes import Code

log = logging.getLogger("app.api.peer")

JSON = "application/json"


@dataclass(frozen=True)
class PeerCall:
    """What a dfget request carries, already off the transport: the last value of each query
    parameter (as Starlette's ``dict(request.query_params)``), the body, and the peer's address."""

    query: dict[str, str]
    body: bytes = b""
    content_type: str = ""
    peer: PeerAddress | None = None


Handler = Callable[[PeerBridge, PeerCall], Awaitable[dict[str, Any]]]


# Plain functions returning the bridge's coroutine (not ``async def`` wrappers): one frame less in the
# chain that every resumption of the request passes through.
def _register(bridge: PeerBridge, call: PeerCall) -> Awaitable[dict[str, Any]]:
    return bridge.register(call.body, call.content_type, call.peer)


def _pull(bridge: PeerBridge, call: PeerCall) -> Awaitable[dict[str, Any]]:
    return bridge.pull(call.query)


def _piece_success(bridge: PeerBridge, call: PeerCall) -> Awaitable[dict[str, Any]]:
    return bridge.piece_success(call.query)


def _piece_error(bridge: PeerBridge, call: PeerCall) -> Awaitable[dict[str, Any]]:
    return bridge.piece_error(call.query)


def _service_down(bridge: PeerBridge, call: PeerCall) -> Awaitable[dict[str, Any]]:
    return bridge.service_down(call.query)


def _task_metrics(bridge: PeerBridge, call: PeerCall) -> Awaitable[dict[str, Any]]:
    # dfget retries the report unless code == 1 (IsSuccess, §6.1).
    return bridge.task_metrics(call.body)


@dataclass(frozen=True)
class DfgetRoute:
    method: str
    handler: Handler
    # The answer that costs dfget nothing when Redis fails in a way the bridge did not already turn
    # into one (602 for a pull, 609 for a registration, the usual reply for a report).
    wait: Code
    reads_body: bool


# Most frequent first: the Starlette router tries routes in order.
ROUTES: dict[str, DfgetRoute] = {
    "/peer/task": DfgetRoute("GET", _pull, Code.PEER_WAIT, False),
    "/peer/piece/suc": DfgetRoute("GET", _piece_success, Code.PIECE_REPORTED, False),
    "/peer/registry": DfgetRoute("POST", _register, Code.WAIT_AUTH, True),
    "/peer/piece/error": DfgetRoute("GET", _piece_error, Code.SUCCESS, False),
    "/peer/service/down": DfgetRoute("GET", _service_down, Code.PEER_DOWN_REPORTED, False),
    "/task/metrics": DfgetRoute("POST", _task_metrics, Code.SUCCESS, True),
}


def busy(route: DfgetRoute) -> bytes:
    """The answer to a request that waited too long for its turn (app.api.admission): ask again."""
    return orjson.dumps(wire.result(route.wait, "supernode busy, please retry"))


def disconnected() -> bytes:
    """The answer to a request whose body never fully arrived (nobody is left to read it)."""
    return orjson.dumps(wire.result(Code.PARAM_ERROR, "request body incomplete"))


async def answer(path: str, route: DfgetRoute, bridge: PeerBridge, call: PeerCall) -> bytes:
    """Every outcome becomes an answer here, so nothing is re-raised past the response: an error
    logged once (no second traceback from the server), and dfget's keep-alive connection stays open."""
    try:
        return orjson.dumps(await route.handler(bridge, call))
    except Exception as exc:
        if is_outage(exc):
            bridge.readiness.redis_failed(exc)
            log.warning("%s: redis unavailable (%s), answered %d", path, type(exc).__name__, route.wait)
            return orjson.dumps(wire.result(route.wait, "cluster state unavailable, please retry"))
        log.exception("%s: unexpected error, answered code 500", path)
        # dfget treats code 500 as a transport error (it migrates), with no harm to the replica.
        return orjson.dumps(wire.result(Code.SYSTEM_ERROR, f"system error: {type(exc).__name__}"))


def _endpoint(path: str, route: DfgetRoute) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        bridge: PeerBridge = request.app.state.bridge
        try:
            body = await request.body() if route.reads_body else b""
        except ClientDisconnect:
            log.info("%s: client went away before its request was read", path)
            return Response(disconnected(), media_type=JSON)
        call = PeerCall(
            dict(request.query_params), body, request.headers.get("content-type", ""),
            PeerAddress(
                request.client.host if request.client else "", tuple(request.headers.getlist("x-forwarded-for"))
            ),
        )
        return Response(await answer(path, route, bridge, call), media_type=JSON)

    return endpoint


routes: list[BaseRoute] = [
    Route(path, _endpoint(path, route), methods=[route.method]) for path, route in ROUTES.items()
]
