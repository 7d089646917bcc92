"""``/api/v1/tasks`` (PROTOCOL §6.3 plus listing, progress and pieces). Thin: the work is in app.tasks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from starlette.responses import Response

from app.api.admin_audit import audit_admin
from app.api.auth import Admin, Reader
from app.api.bodies import any_case, json_object
from app.api.errors import ERRORS, NOT_FOUND
from app.api.route_index import MUTATING_GET
from app.ops.models import TaskRow, TaskRowPage
from app.ops.swarm import task_rows
from app.peers.service import PeerService
from app.tasks.models import PiecePage, TaskStatus, TaskView
from app.tasks.service import TASK_ID_PATTERN, TaskService

router = APIRouter(tags=["tasks"], responses=ERRORS)

# Go's PieceErrorRequest, keys in any case (read by hand below).
PIECE_ERROR_BODY = {"required": True, "content": {"application/json": {"schema": any_case({
    "type": "object", "required": ["dstPid"], "additionalProperties": True,
    "properties": {"dstPid": {"type": "string", "minLength": 1}, "srcCid": {"type": "string"},
                   "errorType": {"type": "string"}},
})}}}


async def get_tasks(request: Request) -> TaskService:
    return TaskService(request.app.state.redis, request.app.state.storage, request.app.state.settings.task_ttl_seconds)


Tasks = Annotated[TaskService, Depends(get_tasks)]
TaskId = Annotated[str, Path(alias="id", pattern=TASK_ID_PATTERN, description="Task id: 64 lowercase hex.")]


async def _task_or_404(tasks: TaskService, tid: str) -> TaskView:
    task = await tasks.get(tid)
    if task is None:
        # Go answered HTTP 500 for an unknown task; a 404 says what happened.
        raise HTTPException(404, f"task {tid} not found")
    return task


@router.get("/api/v1/tasks", response_model=TaskRowPage, response_model_exclude_none=True)
async def list_tasks(
    request: Request,
    _: Reader,
    tasks: Tasks,
    status: Annotated[TaskStatus | None, Query(description="cdnStatus to keep.")] = None,
    url: Annotated[str | None, Query(max_length=4096, description="Substring of taskURL or rawURL.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> TaskRowPage:
    """Tasks with state in Redis, most recently accessed first, each with its peers running and done and
    the bytes its clients received by source class."""
    page = await tasks.list(status, url, limit, offset)
    rows = await task_rows(request.app.state.redis, page.tasks)
    return TaskRowPage(total=page.total, offset=page.offset, limit=page.limit, tasks=rows)


@router.get("/api/v1/tasks/{id}", response_model=TaskRow, response_model_exclude_none=True, responses=NOT_FOUND)
async def get_task(request: Request, _: Reader, tasks: Tasks, tid: TaskId) -> TaskRow:
    """TaskInfo (Go field names, zero/empty omitted) plus live seeding progress. A task id whose
    registrations the source policy refused (so the task was never created) answers 200 with
    ``cdnStatus: "REFUSED"`` and ``sourceRefusal`` (reason, message, url, count, first, last)."""
    return (await task_rows(request.app.state.redis, [await _task_or_404(tasks, tid)]))[0]


@router.delete("/api/v1/tasks/{id}", response_class=Response, responses=NOT_FOUND)
async def delete_task(
    request: Request,
    actor: Admin,
    tasks: Tasks,
    tid: TaskId,
    full: Annotated[bool, Query(description="Also delete the seed-cache files.")] = False,
) -> Response:
    """Forget the task (all its Redis state); ``full=true`` also deletes its seed files. 200, empty."""
    if not await tasks.delete(tid, full):
        raise HTTPException(404, f"task {tid} not found")
    await audit_admin(request, actor, "task.deleted", task_id=tid, target=tid, detail={"full": full})
    return Response(status_code=200)


@router.get(
    "/api/v1/tasks/{id}/pieces", response_model=PiecePage, response_model_exclude_none=True, responses=NOT_FOUND
)
async def task_pieces(
    _: Reader,
    tasks: Tasks,
    tid: TaskId,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    offset: Annotated[int, Query(ge=0, le=1 << 20)] = 0,
) -> PiecePage:
    """Per piece: seeded or not, md5, and the peers holding it (cid, ip:port)."""
    page = await tasks.pieces(tid, offset, limit)
    if page is None:
        raise HTTPException(404, f"task {tid} not found")
    return page


# A GET that changes state (Go's route): marked so that the auth tests treat it as mutating.
@router.get(
    "/api/v1/tasks/{id}/pieces/{pieceRange}/error", response_class=Response, responses=NOT_FOUND,
    openapi_extra={MUTATING_GET: True, "requestBody": PIECE_ERROR_BODY},
)
async def report_piece_error(
    request: Request,
    actor: Admin,
    tid: TaskId,
    piece_range: Annotated[str, Path(alias="pieceRange", max_length=64)],
) -> Response:
    """Go 1.0.x's REST twin of /peer/piece/error. The JSON body (a GET body, as Go) is PieceErrorRequest
    ``{"dstPid" (required), "srcCid", "errorType", ...}``; 200 with an empty body."""
    body = json_object(await request.body())
    dst_pid = body.get("dstpid")
    if not isinstance(dst_pid, str) or not dst_pid:
        raise HTTPException(400, "dstPid is required")
    for key in ("srccid", "errortype"):
        if not isinstance(body.get(key, ""), str):
            raise HTTPException(400, f"{key} must be a string")
    dst = await PeerService(request.app.state.redis, request.app.state.settings).cid_in_task(dst_pid, tid)
    if dst is not None:  # the seed cache's peer and unknown peers: nothing to record (as Go)
        src, error_type = str(body.get("srccid") or ""), str(body.get("errortype") or "")
        await request.app.state.cluster_state.piece_error(tid, src, dst, error_type)
        await audit_admin(request, actor, "piece.error", task_id=tid, target=dst_pid,
                          detail={"range": piece_range, "errorType": error_type, "srcCid": src})
    return Response(status_code=200)

