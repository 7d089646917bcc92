"""Reading the audit log for ``GET /api/v1/audit``: filters, newest first, offset pagination."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.audit.models import AuditRow
from app.core.timefmt import rfc3339_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_DIGITS = re.compile(r"^-?\d{1,20}$")


class AuditEntry(BaseModel):
    id: int
    streamId: str = Field(description="The Redis stream entry the event was buffered as.")
    at: str = Field(description="When it happened (RFC3339, ms, UTC).")
    actor: str = Field(description='Token name, "dfget", "seeder", "harbor-webhook", "anonymous", ...')
    action: str = Field(description='"task.created", "seed.finished", "peer.registered", "task.deleted", ...')
    outcome: str = Field(description='"ok", "failed", "refused", ...')
    taskId: str
    target: str = Field(description="What the action was about: a URL, a preheat id, a peer id.")
    sourceIp: str
    detail: dict[str, Any]


class AuditPage(BaseModel):
    total: int = Field(description="Events matching the filters.")
    offset: int
    limit: int
    events: list[AuditEntry] = Field(description="Newest first.")


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    actor: str | None = None
    action: str | None = None
    task_id: str | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.since is not None:
            out.append(AuditRow.at >= self.since)
        if self.until is not None:
            out.append(AuditRow.at < self.until)
        if self.actor is not None:
            out.append(AuditRow.actor == self.actor)
        if self.action is not None:
            out.append(AuditRow.action == self.action)
        if self.task_id is not None:
            out.append(AuditRow.task_id == self.task_id)
        return out


def parse_time(value: str, name: str) -> datetime:
    """RFC3339 (``2025-11-28T10:00:00Z``; no offset = UTC) or Unix epoch milliseconds."""
    text = value.strip()
    if _DIGITS.match(text):
        ms = int(text)
        if not 0 <= ms <= _MAX_MS:
            raise ValueError(f"{name}: epoch milliseconds out of range")
        return EPOCH + timedelta(milliseconds=ms)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{name}: expected RFC3339 (2025-11-28T10:00:00Z) or epoch milliseconds") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _ms(moment: datetime) -> int:
    # SQLite hands back naive datetimes; the consumer only ever writes UTC.
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return (aware - EPOCH) // timedelta(milliseconds=1)


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        id=row.id, streamId=row.stream_id, at=rfc3339_ms(_ms(row.at)), actor=row.actor, action=row.action,
        outcome=row.outcome, taskId=row.task_id, target=row.target, sourceIp=row.source_ip, detail=row.detail,
    )


async def query_audit(engine: AsyncEngine, where: AuditFilter, limit: int, offset: int) -> AuditPage:
    conditions = where.conditions()
    page = select(AuditRow).where(*conditions).order_by(AuditRow.at.desc(), AuditRow.id.desc())
    async with AsyncSession(engine) as session:
        total = (await session.execute(select(func.count()).select_from(AuditRow).where(*conditions))).scalar_one()
        rows = (await session.scalars(page.limit(limit).offset(offset))).all()
        return AuditPage(total=total, offset=offset, limit=limit, events=[_entry(row) for row in rows])
