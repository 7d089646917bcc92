"""``GET /api/v1/audit``: the audit log, filtered by time, actor, action and task, newest first."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from app.api.auth import Reader
from app.api.errors import ERRORS, ApiError
from app.audit.query import AuditFilter, AuditPage, parse_time, query_audit
from app.audit.runtime import AuditRuntime

log = logging.getLogger("app.api.audit")

router = APIRouter(tags=["audit"], responses=ERRORS)

# At start the consumer may still be migrating the schema; a query waits for it this long.
READY_WAIT_SECONDS = 3.0
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ApiError, "description": "The audit database is unreachable or not migrated yet"}
}
_TIME_HELP = "RFC3339 (2025-11-28T10:00:00Z; no offset means UTC) or Unix epoch milliseconds."
# Exactly the times parse_time accepts, so that the schema is true both ways (schemathesis sends what it
# allows and expects a 200): years 1000-8999 (no overflow with an offset), a day that exists in every year
# (so no February 29), an offset within ±23:59, at most 14 digits of epoch milliseconds.
_DAY = r"(?:(?:0[1-9]|1[0-2])-(?:0[1-9]|1\d|2[0-8])|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
TIME_PATTERN = (rf"^(?:[0-9]{{1,14}}|[1-8][0-9]{{3}}-{_DAY}T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                r"(?:\.[0-9]{1,6})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?)$")
NO_NUL = r"^[^\x00]*$"


def _text(value: str | None, name: str) -> str | None:
    if value is not None and "\x00" in value:
        raise HTTPException(400, f"{name}: NUL characters are not allowed")
    return value


@router.get("/api/v1/audit", response_model=AuditPage, responses=UNAVAILABLE)
async def audit_log(
    request: Request,
    _: Reader,
    since: Annotated[str | None, Query(max_length=64, pattern=TIME_PATTERN,
                                       description=f"From this time on (inclusive). {_TIME_HELP}")] = None,
    until: Annotated[str | None, Query(max_length=64, pattern=TIME_PATTERN,
                                       description=f"Before this time (exclusive). {_TIME_HELP}")] = None,
    actor: Annotated[str | None, Query(max_length=256, pattern=NO_NUL,
                                       description='Token name, "dfget", "seeder", ...')] = None,
    action: Annotated[str | None, Query(max_length=256, pattern=NO_NUL,
                                        description='e.g. "task.created", "seed.failed".')] = None,
    task_id: Annotated[str | None, Query(max_length=256, pattern=NO_NUL, description="Task id (64 hex).")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> AuditPage:
    """Who did what, when, from where and with which outcome: dfget registrations, seeds, admin calls."""
    try:
        where = AuditFilter(
            since=parse_time(since, "since") if since is not None else None,
            until=parse_time(until, "until") if until is not None else None,
            actor=_text(actor, "actor"), action=_text(action, "action"), task_id=_text(task_id, "task_id"),
        )
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    runtime: AuditRuntime = request.app.state.audit_runtime
    if runtime.engine is None:
        raise HTTPException(503, f"audit database not configured correctly: {runtime.error}")
    if not await runtime.ready(READY_WAIT_SECONDS):
        raise HTTPException(503, "audit database not reachable (or not migrated) yet")
    try:
        return await query_audit(runtime.engine, where, limit, offset)
    except Exception as exc:  # the database away: an answer in the error shape, not a 500
        log.warning("audit query failed: %s: %s", type(exc).__name__, exc)
        raise HTTPException(503, f"audit database unavailable: {type(exc).__name__}") from None
