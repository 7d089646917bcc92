"""``/api/v1/limits`` and ``/api/v1/tasks/{id}/limits``: live limits (issue 8 part 3, app/limits)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Path, Request

from app.api.admin_audit import audit_admin
from app.api.auth import Admin, Reader
from app.api.errors import ERRORS, NOT_FOUND
from app.limits.model import Limits
from app.limits.store import LiveLimits, effective_down_link
from app.limits.views import LimitsChange, LimitsView, LimitValues, TaskLimitsChange, TaskLimitsView
from app.state.store import ClusterState
from app.tasks.service import TASK_ID_PATTERN

router = APIRouter(tags=["limits"], responses=ERRORS)
TaskId = Annotated[str, Path(alias="id", pattern=TASK_ID_PATTERN, description="Task id: 64 lowercase hex.")]


def _live(request: Request) -> LiveLimits:
    live: LiveLimits = request.app.state.bridge.live
    return live


async def _view(live: LiveLimits, limits: Limits) -> LimitsView:
    await live.current()  # refreshes the live replica count when stale
    return LimitsView(
        limits=LimitValues(**limits.as_wire()),
        defaults=LimitValues(**live.defaults.as_wire()),
        overrides=await live.overrides(),
        liveReplicas=live.live_replicas,
        seedUploadPerReplicaKiBps=limits.seed_upload_share_kibps(live.live_replicas),
        appliedWithinSeconds=live.cache_seconds,
    )


@router.get("/api/v1/limits", response_model=LimitsView)
async def get_limits(request: Request, _: Reader) -> LimitsView:
    """The cluster-wide live limits in force, the settings they override, and the seed upload share."""
    live = _live(request)
    overrides = await live.overrides()
    return await _view(live, live.defaults.with_overrides(overrides))


@router.put("/api/v1/limits", response_model=LimitsView)
async def put_limits(request: Request, actor: Admin, change: Annotated[LimitsChange, Body()]) -> LimitsView:
    """Change any of the limits (null: back to the setting). Every replica applies it within
    ``appliedWithinSeconds``; kept in Redis, so it survives replica restarts. Audited."""
    fields = {name: getattr(change, name) for name in change.model_fields_set}
    if not fields:
        raise HTTPException(400, "name at least one limit: " + ", ".join(LimitsChange.model_fields))
    live = _live(request)
    limits = await live.apply(fields)
    await audit_admin(request, actor, "limits.changed", target="cluster", detail={"set": fields})
    return await _view(live, limits)


async def _task_view(request: Request, tid: str) -> TaskLimitsView:
    live = _live(request)
    override = await live.task_down_link(tid)
    return TaskLimitsView(taskId=tid, downLinkKiB=effective_down_link(await live.current(), override),
                          override=override)


@router.get("/api/v1/tasks/{id}/limits", response_model=TaskLimitsView, response_model_exclude_none=True,
            responses=NOT_FOUND)
async def get_task_limits(request: Request, _: Reader, tid: TaskId) -> TaskLimitsView:
    """The downLink this task's piece tasks carry, and its own override if any."""
    state: ClusterState = request.app.state.cluster_state
    if await state.task_geometry(tid) is None:
        raise HTTPException(404, f"task {tid} not found")
    return await _task_view(request, tid)


@router.put("/api/v1/tasks/{id}/limits", response_model=TaskLimitsView, response_model_exclude_none=True,
            responses=NOT_FOUND)
async def put_task_limits(
    request: Request, actor: Admin, tid: TaskId, change: Annotated[TaskLimitsChange, Body()]
) -> TaskLimitsView:
    """Set one task's downLink (null: back to the cluster's); applies to its next piece tasks. Audited."""
    state: ClusterState = request.app.state.cluster_state
    if not await state.set_task_down_link(tid, change.downLinkKiB):
        raise HTTPException(404, f"task {tid} not found")
    await audit_admin(request, actor, "task.limits.changed", task_id=tid, target=tid,
                      detail={"downLinkKiB": change.downLinkKiB})
    return await _task_view(request, tid)
