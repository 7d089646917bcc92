"""Preheats for operators (issue 8): both contracts in one list with per-layer progress, and a retry
that reuses the stored request (headers and registry credentials never leave the server)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, Field

from app.api.auth import Admin, Reader
from app.api.errors import ERRORS, NOT_FOUND
from app.api.routes.preheat import client_ip, preheat_service
from app.core.masking import mask_text, mask_url
from app.core.timefmt import rfc3339_ms
from app.preheat import docs, views
from app.preheat.model import PreheatRecord
from app.preheat.service import PreheatRefused

router = APIRouter(tags=["preheat"], responses=ERRORS)
PreheatId = Annotated[str, Path(alias="pid", min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_-]+$")]


class PreheatRow(BaseModel):
    ID: str
    origin: str = Field(description="legacy (/preheats), oapi (/oapi/v1/jobs) or webhook (Harbor).")
    type: str = Field(description="image or file.")
    url: str = Field(description="Credentials masked.")
    status: str = Field(description="WAITING, RUNNING, SUCCESS or FAILED.")
    errorMsg: str
    actor: str
    startTime: str
    finishTime: str | None = None
    progress: list[docs.LayerProgress] = Field(description="Per layer (blob): state and seeded bytes.")


class PreheatRetried(BaseModel):
    ID: str


def row(record: PreheatRecord) -> PreheatRow:
    return PreheatRow(
        ID=record.id, origin=record.origin, type=record.request.type, url=mask_url(record.request.url),
        status=record.status, errorMsg=mask_text(record.error), actor=record.actor,
        startTime=rfc3339_ms(record.start_ms), finishTime=rfc3339_ms(record.finish_ms) if record.finished else None,
        progress=[docs.LayerProgress(**layer) for layer in views.progress(record)],
    )


@router.get("/api/v1/preheat-progress", response_model=list[PreheatRow], response_model_exclude_none=True)
async def preheat_progress(
    request: Request,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=1000, description="Most recent first; at most this many.")] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[PreheatRow]:
    """Every preheat, whichever contract started it (legacy, Open API job, Harbor webhook), newest first,
    with its per-layer progress and error."""
    return [row(record) for record in await preheat_service(request).list_page(limit, offset)]


@router.post("/api/v1/preheats/{pid}/retry", response_model=PreheatRetried, responses=NOT_FOUND)
async def retry_preheat(request: Request, actor: Admin, pid: PreheatId) -> PreheatRetried:
    """Run the preheat again with its stored request (blobs already seeded are reused); a preheat that is
    still running is joined, not restarted. Audited as preheat.restarted (or joined)."""
    service = preheat_service(request)
    record = await service.get(pid)
    if record is None:
        raise HTTPException(404, f"preheat {pid} not found")
    try:
        new_id = await service.create(record.request, actor, record.origin, client_ip(request))
    except PreheatRefused as exc:
        raise HTTPException(400, exc.message) from None
    return PreheatRetried(ID=new_id)
