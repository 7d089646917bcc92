"""``/api/v1/overview`` and ``/api/v1/tasks/{id}/swarm``: the operator views of issue 8 (app/ops)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request

from app.api.auth import Reader
from app.api.errors import ERRORS, NOT_FOUND
from app.cluster.heartbeat import replica_id
from app.cluster.service import ClusterService
from app.ops.models import Overview, TaskSwarm
from app.ops.overview import overview
from app.ops.swarm import task_swarm
from app.state.traffic import MAX_HISTORY_MINUTES
from app.tasks.service import TASK_ID_PATTERN

router = APIRouter(tags=["overview"], responses=ERRORS)
TaskId = Annotated[str, Path(alias="id", pattern=TASK_ID_PATTERN, description="Task id: 64 lowercase hex.")]


@router.get("/api/v1/overview", response_model=Overview, response_model_exclude_none=True)
async def get_overview(
    request: Request,
    _: Reader,
    minutes: Annotated[int, Query(ge=1, le=MAX_HISTORY_MINUTES, description="Traffic window and history.")] = 15,
) -> Overview:
    """Cluster health (replicas with heartbeat age, workers, Redis, database, seed-cache disk), totals,
    bytes by source class (all time and in the window), the P2P ratio and its per-minute history."""
    state = request.app.state
    service = ClusterService(
        state.redis, state.settings, state.storage, state.bridge.dispatcher,
        replica_id(state.settings, state.role.replica_pid),
        getattr(state, "audit_runtime", None),
    )
    return await overview(service, await state.bridge.live.current(), minutes)


@router.get("/api/v1/tasks/{id}/swarm", response_model=TaskSwarm, response_model_exclude_none=True,
            responses=NOT_FOUND)
async def get_task_swarm(
    request: Request,
    _: Reader,
    tid: TaskId,
    piece_offset: Annotated[int, Query(alias="pieceOffset", ge=0, le=1 << 20)] = 0,
    piece_limit: Annotated[int, Query(alias="pieceLimit", ge=1, le=20_000)] = 5000,
    peer_offset: Annotated[int, Query(alias="peerOffset", ge=0, le=1_000_000)] = 0,
    peer_limit: Annotated[int, Query(alias="peerLimit", ge=1, le=1000)] = 200,
) -> TaskSwarm:
    """The task's piece map (per piece: seeded, how many peers hold it), its peers with progress and
    bytes served, peers running/done, and the bytes its clients received by source class. Source errors
    and policy refusals are in ``GET /api/v1/tasks/{id}``, its events in ``GET /api/v1/audit?task=``."""
    swarm = await task_swarm(request.app.state.redis, tid, piece_offset, piece_limit, peer_offset, peer_limit)
    if swarm is None:
        raise HTTPException(404, f"task {tid} not found")
    return swarm
