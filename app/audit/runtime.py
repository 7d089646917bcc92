"""What one process owns of the audit log: the database engine and its consumer task.

Started by every replica's lifespan (cluster and embedded mode) and by ``python -m workers.audit``.
Nothing here may stop the supernode from serving dfget: a bad or unreachable database only leaves the
events waiting in Redis, and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.db import AuditNotConfigured, create_engine, database_url
from app.audit.writer import BLOCK_MS, AuditWriter
from app.core.config import Settings

log = logging.getLogger("app.audit")


class AuditRuntime:
    def __init__(
        self, engine: AsyncEngine | None, writer: AuditWriter | None, error: str = "", configured: bool = True
    ) -> None:
        self.engine = engine
        self.writer = writer
        self.error = error
        self.configured = configured
        self._task = asyncio.create_task(writer.run(), name="audit-consumer") if writer is not None else None

    @classmethod
    def start(cls, redis: aioredis.Redis, settings: Settings, consumer: str) -> AuditRuntime:
        try:
            url = database_url(settings)
        except AuditNotConfigured as exc:
            log.warning("audit log not written: %s", exc)
            return cls(None, None, str(exc), configured=False)
        try:
            engine = create_engine(url)
            # A blocked XREADGROUP waits for its reply like any command: it must end well inside the
            # socket timeout, or every idle read would count as Redis gone.
            block_ms = min(BLOCK_MS, int(settings.redis_socket_timeout_seconds * 1000 / 2))
            writer = AuditWriter(redis, engine, consumer, block_ms=max(1, block_ms))
        except Exception as exc:  # a malformed URL or a missing driver: say so, keep serving dfget
            # The message may quote the URL, password included.
            reason = f"{type(exc).__name__}: {exc}"
            if settings.database_url:
                reason = reason.replace(settings.database_url, "<DF_DATABASE_URL>")
            log.error("audit log disabled, events stay in Redis: %s", reason)
            return cls(None, None, reason)
        return cls(engine, writer)

    async def ready(self, wait_seconds: float) -> bool:
        """Whether the schema is migrated (waiting up to ``wait_seconds`` for the consumer to get there)."""
        if self.writer is None:
            return False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                await self.writer.ready.wait()
        return self.writer.ready.is_set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.engine is not None:
            await self.engine.dispose()

    async def wait(self) -> None:
        """Until the consumer ends (it only ends when cancelled): for the standalone process."""
        if self._task is not None:
            await self._task
