"""Response shapes of the tasks API.

``TaskInfo`` keeps the Go field names of PROTOCOL §6.3 (legacy tools decode them); everything we add
lives in fields Go never had, so a Go-style decoder ignores it. Routes serialise with
``exclude_none``: a zero or empty legacy value is ``None`` here and is omitted, as Go's ``omitempty``.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class TaskStatus(StrEnum):
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"


class SeedProgress(BaseModel):
    """Live progress of the task's one seed job (the shared seed cache)."""

    piecesSeeded: int = Field(description="Pieces durable in the seed cache.")
    pieceTotal: int | None = Field(None, description="Pieces of the file; provisional until the seed succeeds.")
    bytes: int = Field(description="Source bytes written to the seed cache so far.")
    percent: float | None = Field(None, description="bytes / httpFileLength × 100, when the length is known.")
    rateBytesPerSecond: float | None = Field(None, description="Average seeding rate since the seed started.")
    started: str | None = Field(None, description="When the current seed job started (RFC3339 ms).")
    finished: str | None = Field(None, description="When it ended (RFC3339 ms).")
    error: str | None = Field(None, description="Why the last seed failed.")
    reason: str | None = Field(None, description="Machine-readable failure class (not_found, truncated, ...).")


# cdnStatus of a task id that only has a source-policy refusal (never one of Go's values: the task was
# never created). Not a listing filter: refused task ids are not in the task index.
REFUSED_STATUS = "REFUSED"


class SourceRefusal(BaseModel):
    """The last time the source policy refused a registration for this task id (app.cdn.policy)."""

    reason: str = Field(description="metadata, link_local, loopback, special, denylist or url (as on /metrics).")
    message: str = Field(description="What the client was told (code 607); never a resolved address.")
    url: str | None = Field(None, description="The refused URL (rawUrl), credentials masked.")
    count: int = Field(description="Refused registrations for this task id while the record lived.")
    first: str | None = Field(None, description="First refusal (RFC3339 ms).")
    last: str | None = Field(None, description="Latest refusal (RFC3339 ms).")


class TaskInfo(BaseModel):
    """PROTOCOL §6.3 TaskInfo (``apis/types/task_info.go@v1.0.6``); zero/empty values are omitted."""

    ID: str
    cdnStatus: str | None = None
    fileLength: int | None = Field(None, description="Framed length of the seed file (after success).")
    httpFileLength: int | None = Field(None, description="Source length; -1 while unknown.")
    pieceSize: int | None = None
    pieceTotal: int | None = None
    rawURL: str | None = None
    taskURL: str | None = None
    md5: str | None = None
    realMd5: str | None = None
    identifier: str | None = None
    headers: dict[str, str] | None = Field(None, description="Registration headers; credentials are masked.")
    asSeed: bool | None = Field(None, description="Never set: the seed cache is always the first seed.")


class TaskView(TaskInfo):
    """TaskInfo plus what an operator needs to see (our fields)."""

    created: str | None = Field(None, description="First registration (RFC3339 ms).")
    accessed: str | None = Field(None, description="Last registration or pull (RFC3339 ms).")
    peers: int = Field(0, description="dfget clients registered for the task.")
    progress: SeedProgress
    sourceRefusal: SourceRefusal | None = Field(
        None, description="The source policy's last refusal of a registration for this task id, if kept."
    )


class TaskPage(BaseModel):
    total: int = Field(description="Tasks matching the filters.")
    offset: int
    limit: int
    tasks: list[TaskView] = Field(description="Most recently accessed first.")


class PieceHolder(BaseModel):
    cid: str
    ip: str | None = None
    port: int | None = None
    peerId: str | None = None


class PieceInfo(BaseModel):
    pieceNum: int
    seeded: bool = Field(description="The seed cache holds the piece.")
    md5: str | None = Field(None, description="md5 of the framed piece (seeded pieces only).")
    length: int | None = Field(None, description="Framed length of the piece (seeded pieces only).")
    holders: list[PieceHolder] = Field(description="Peers that reported the piece (/peer/piece/suc).")


class PiecePage(BaseModel):
    taskId: str
    pieceTotal: int = Field(description="Pieces known so far (provisional while seeding).")
    offset: int
    limit: int
    pieces: list[PieceInfo]
