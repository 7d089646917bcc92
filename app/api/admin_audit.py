"""Audit of admin calls: every REST call that changes something records who (the token's name) did what."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from app.audit.events import AuditEvent


async def audit_admin(
    request: Request, actor: str, action: str, *, target: str = "", task_id: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    await request.app.state.audit.record(
        AuditEvent(
            actor=actor, action=action, task_id=task_id, target=target,
            source_ip=request.client.host if request.client else "", detail=detail or {},
        )
    )
