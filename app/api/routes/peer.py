"""dfget's endpoints (PROTOCOL §5). Always HTTP 200 with a ``code``: dfget treats any other
status as a transport error and migrates.

Plain Starlette routes, not FastAPI ones: these are the hot path (every piece costs a pull and a
success report), and FastAPI's dependency solving and response wrapping doubled a replica's CPU per
request in benchmarks/bench_control_plane.py while adding nothing here (the bridge parses and checks
its input itself, and answers bad input with a result code). They stay ordinary routes, so routing,
the version prefix, the dfget allowlist, metrics and the error handler apply as to every other route.
They are described in README.md and PROTOCOL.md, not in the OpenAPI schema (which is for the REST API).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.routing import BaseRoute, Route

from app.api.responses import JSONBytes
from app.bridge.peer_ip import PeerAddress
from app.bridge.service import PeerBridge
from app.core.redis import is_outage
from app.protocol import wire
from app.protocol.codes import Code

log = logging.getLogger("app.api.peer")

Handler = Callable[[PeerBridge, Request], Awaitable[dict[str, Any]]]


def _answered(handler: Handler, wait: Code) -> Callable[[Request], Awaitable[JSONBytes]]:
    """Every outcome becomes an answer here, so nothing is re-raised past the response: an error
    logged once (no second traceback from the server), and dfget's keep-alive connection stays open.

    ``wait`` is the answer that costs dfget nothing when Redis fails in a way the bridge did not
    already turn into one (602 for a pull, 609 for a registration, the usual reply for a report).
    """

    async def endpoint(request: Request) -> JSONBytes:
        bridge: PeerBridge = request.app.state.bridge
        try:
            return JSONBytes(await handler(bridge, request))
        except ClientDisconnect:
            log.info("%s: client went away before its request was read", request.url.path)
            return JSONBytes(wire.result(Code.PARAM_ERROR, "request body incomplete"))
        except Exception as exc:
            if is_outage(exc):
                bridge.readiness.redis_failed(exc)
                log.warning("%s: redis unavailable (%s), answered %d", request.url.path, type(exc).__name__, wait)
                return JSONBytes(wire.result(wait, "cluster state unavailable, please retry"))
            log.exception("%s: unexpected error, answered code 500", request.url.path)
            # dfget treats code 500 as a transport error (it migrates), with no harm to the replica.
            return JSONBytes(wire.result(Code.SYSTEM_ERROR, f"system error: {type(exc).__name__}"))

    return endpoint


async def _register(bridge: PeerBridge, request: Request) -> dict[str, Any]:
    body = await request.body()
    peer = PeerAddress(request.client.host if request.client else "", tuple(request.headers.getlist("x-forwarded-for")))
    return await bridge.register(body, request.headers.get("content-type", ""), peer)


async def _pull(bridge: PeerBridge, request: Request) -> dict[str, Any]:
    return await bridge.pull(dict(request.query_params))


async def _piece_success(bridge: PeerBridge, request: Request) -> dict[str, Any]:
    return await bridge.piece_success(dict(request.query_params))


async def _piece_error(bridge: PeerBridge, request: Request) -> dict[str, Any]:
    return await bridge.piece_error(dict(request.query_params))


async def _service_down(bridge: PeerBridge, request: Request) -> dict[str, Any]:
    return await bridge.service_down(dict(request.query_params))


async def _task_metrics(bridge: PeerBridge, request: Request) -> dict[str, Any]:
    # dfget retries the report unless code == 1 (IsSuccess, §6.1).
    return await bridge.task_metrics(await request.body())


register = _answered(_register, Code.WAIT_AUTH)
pull_piece_task = _answered(_pull, Code.PEER_WAIT)
report_piece_success = _answered(_piece_success, Code.PIECE_REPORTED)
report_piece_error = _answered(_piece_error, Code.SUCCESS)
report_service_down = _answered(_service_down, Code.PEER_DOWN_REPORTED)
task_metrics = _answered(_task_metrics, Code.SUCCESS)


# Most frequent first: the router tries routes in order.
routes: list[BaseRoute] = [
    Route("/peer/task", pull_piece_task, methods=["GET"]),
    Route("/peer/piece/suc", report_piece_success, methods=["GET"]),
    Route("/peer/registry", register, methods=["POST"]),
    Route("/peer/piece/error", report_piece_error, methods=["GET"]),
    Route("/peer/service/down", report_service_down, methods=["GET"]),
    Route("/task/metrics", task_metrics, methods=["POST"]),
]
