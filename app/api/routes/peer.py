"""dfget's endpoints (PROTOCOL §5). Always HTTP 200 with a ``code``: dfget treats any other
status as a transport error and migrates."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import BridgeDep
from app.api.responses import JSONBytes

router = APIRouter(tags=["dfget"])


@router.post("/peer/registry", response_class=JSONBytes)
async def register(request: Request, bridge: BridgeDep) -> JSONBytes:
    body = await request.body()
    return JSONBytes(await bridge.register(body, request.headers.get("content-type", "")))


@router.get("/peer/task", response_class=JSONBytes)
async def pull_piece_task(request: Request, bridge: BridgeDep) -> JSONBytes:
    return JSONBytes(await bridge.pull(dict(request.query_params)))


@router.get("/peer/piece/suc", response_class=JSONBytes)
async def report_piece_success(request: Request, bridge: BridgeDep) -> JSONBytes:
    return JSONBytes(await bridge.piece_success(dict(request.query_params)))


@router.get("/peer/piece/error", response_class=JSONBytes)
async def report_piece_error(request: Request, bridge: BridgeDep) -> JSONBytes:
    return JSONBytes(await bridge.piece_error(dict(request.query_params)))


@router.get("/peer/service/down", response_class=JSONBytes)
async def report_service_down(request: Request, bridge: BridgeDep) -> JSONBytes:
    return JSONBytes(await bridge.service_down(dict(request.query_params)))


@router.post("/task/metrics", response_class=JSONBytes)
async def task_metrics(request: Request) -> JSONBytes:
    # dfget retries the report unless code == 1 (IsSuccess, §6.1).
    await request.body()
    return JSONBytes({"code": 1})
