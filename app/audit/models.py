"""The audit table: one append-only row per event, written only by the audit consumer.

The same model runs on Postgres (asyncpg) and on SQLite (aiosqlite, embedded mode); the column types
below carry per-dialect variants so that one alembic migration creates both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias); BIGINT there would need ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on Postgres: compact and indexable should someone want to query inside ``detail`` later.
Detail = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class AuditRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # The Redis stream entry id: a redelivered entry (crash between commit and XACK) hits this unique
    # constraint and is skipped, so each event is stored exactly once.
    stream_id: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)
    task_id: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(Text)
    source_ip: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(Detail)

    # One index per filter of GET /api/v1/audit, each ending in ``at`` because results are newest first
    # and usually bounded in time.
    __table_args__ = (
        UniqueConstraint("stream_id", name="uq_audit_events_stream_id"),
        Index("ix_audit_events_at", "at"),
        Index("ix_audit_events_actor_at", "actor", "at"),
        Index("ix_audit_events_action_at", "action", "at"),
        Index("ix_audit_events_task_id_at", "task_id", "at"),
    )
