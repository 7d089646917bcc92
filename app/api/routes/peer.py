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

from starlette.requests import Request
from starlette.routing import BaseRoute, Route

from app.api.responses import JSONBytes
from app.bridge.service import PeerBridge


def _bridge(request: Request) -> PeerBridge:
    bridge: PeerBridge = request.app.state.bridge
    return bridge


async def register(request: Request) -> JSONBytes:
    body = await request.body()
    return JSONBytes(await _bridge(request).register(body, request.headers.get("content-type", "")))


async def pull_piece_task(request: Request) -> JSONBytes:
    return JSONBytes(await _bridge(request).pull(dict(request.query_params)))


async def report_piece_success(request: Request) -> JSONBytes:
    return JSONBytes(await _bridge(request).piece_success(dict(request.query_params)))


async def report_piece_error(request: Request) -> JSONBytes:
    return JSONBytes(await _bridge(request).piece_error(dict(request.query_params)))


async def report_service_down(request: Request) -> JSONBytes:
    return JSONBytes(await _bridge(request).service_down(dict(request.query_params)))


async def task_metrics(request: Request) -> JSONBytes:
    # dfget retries the report unless code == 1 (IsSuccess, §6.1).
    await request.body()
    return JSONBytes({"code": 1})


# Most frequent first: the router tries routes in order.
routes: list[BaseRoute] = [
    Route("/peer/task", pull_piece_task, methods=["GET"]),
    Route("/peer/piece/suc", report_piece_success, methods=["GET"]),
    Route("/peer/registry", register, methods=["POST"]),
    Route("/peer/piece/error", report_piece_error, methods=["GET"]),
    Route("/peer/service/down", report_service_down, methods=["GET"]),
    Route("/task/metrics", task_metrics, methods=["POST"]),
]
