"""The audit consumer: ``df:audit`` stream -> ``audit_events`` table, each event exactly once.

Every replica (and ``python -m workers.audit``) runs one, as a named consumer of the one group
``audit-writers``, so each entry is delivered to one of them. A batch is inserted with ON CONFLICT
(stream_id) DO NOTHING and committed, and only then XACKed and XDELed. So:

* the database down: the batch is retried with capped exponential backoff, never acknowledged, and
  everything behind it waits in the stream (bounded by ``DF_AUDIT_STREAM_MAXLEN``): nothing is lost;
* a crash between commit and XACK: the entry is delivered again and the unique stream id skips it;
* a consumer that dies holding entries: another one takes them over with XAUTOCLAIM once they have been
  idle for ``claim_idle_ms``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import Insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from app.audit.migrate import upgrade_to_head
from app.audit.models import AuditRow
from app.audit.rows import to_row
from app.core.redis import OutageLog
from app.state import schema

log = logging.getLogger("app.audit.writer")

Entry = tuple[str, dict[str, str] | None]

BATCH = 500
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000  # far above one batch's commit time, so live consumers are not robbed
CLAIM_EVERY_SECONDS = 30.0
REPORT_EVERY_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 10.0  # how long writing may lag behind a recovered database, at most
REDIS_BACKOFF_CAP_SECONDS = 1.0  # how long reading may lag behind a recovered Redis, at most
DEAD_CONSUMER_IDLE_MS = 3_600_000  # replicas get a new consumer name per process; forget old empty ones
WRITE_TIMEOUT_SECONDS = 60.0


def insert_statement(dialect: str) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(AuditRow).on_conflict_do_nothing(index_elements=["stream_id"])
    if dialect == "sqlite":
        return sqlite.insert(AuditRow).on_conflict_do_nothing(index_elements=["stream_id"])
    raise ValueError(f"audit log: unsupported database {dialect!r} (use PostgreSQL or SQLite)")


class AuditWriter:
    def __init__(
        self, redis: aioredis.Redis, engine: AsyncEngine, consumer: str, *, batch: int = BATCH,
        block_ms: int = BLOCK_MS, claim_idle_ms: int = CLAIM_IDLE_MS, claim_every: float = CLAIM_EVERY_SECONDS,
        report_every: float = REPORT_EVERY_SECONDS, max_backoff: float = MAX_BACKOFF_SECONDS,
    ) -> None:
        self.redis = redis
        self.engine = engine
        self.consumer = consumer
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.claim_every = claim_every
        self.report_every = report_every
        self.max_backoff = max_backoff
        self.insert = insert_statement(engine.dialect.name)
        self.ready = asyncio.Event()  # set once the schema is at head: the audit API may query
        self.written = 0  # events committed by this consumer (skipped duplicates included)
        self.batches = 0
        self._own_pending = True  # our PEL may hold entries (restart under the same name, failed XACK)
        self._next_claim = 0.0
        self._reported = (time.monotonic(), 0, 0)

    # --- the loop ---------------------------------------------------------------------------------

    async def run(self) -> None:
        await self._retrying("prepare", self._prepare)
        self.ready.set()
        log.info("audit consumer %s writing %s to %s", self.consumer, schema.AUDIT_STREAM, self._db())
        outage = OutageLog(log, f"audit consumer {self.consumer}: reading {schema.AUDIT_STREAM}")
        while True:
            try:
                entries = await self._next_entries()
                outage.succeeded()
                if entries:
                    await self._store(entries)
                await self._report()
            except Exception as exc:  # Redis away, mostly (an outage, a failover); the loop must never die
                # A reply lost with its connection may have delivered entries to us: read our own
                # pending entries first, or they would wait for a takeover.
                self._own_pending = True
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    # The stream or its group is gone: a FLUSHDB, or a failover to a replica that never
                    # got them. Create it again (from id 0: whatever the stream still holds is written).
                    log.warning("audit consumer: group %s of %s missing; creating it again",
                                schema.AUDIT_GROUP, schema.AUDIT_STREAM)
                    await self._retrying("group", self._ensure_group)
                    continue
                outage.failed(exc)
                # Redis is cheap to ask: wait at most a second, so that writing resumes right after it.
                await asyncio.sleep(min(REDIS_BACKOFF_CAP_SECONDS, 0.05 * 2 ** min(outage.failures, 5)))

    async def _next_entries(self) -> list[Entry]:
        if self._own_pending:
            entries = await self._read("0")  # "0": our own delivered but unacknowledged entries
            self._own_pending = bool(entries)
            if entries:
                return entries
        if time.monotonic() >= self._next_claim:
            claimed = await self._claim()
            # A full batch: more may be waiting; claim again right after writing this one.
            self._next_claim = 0.0 if len(claimed) >= self.batch else time.monotonic() + self.claim_every
            if claimed:
                return claimed
        return await self._read(">")

    async def _read(self, start: str) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            schema.AUDIT_GROUP, self.consumer, {schema.AUDIT_STREAM: start}, count=self.batch,
            block=self.block_ms if start == ">" else None,
        )
        entries: list[Entry] = []
        for _stream, items in reply or []:
            entries.extend((entry_id, fields or None) for entry_id, fields in items)
        return entries

    async def _claim(self) -> list[Entry]:
        """Entries of consumers that died holding them; also forgets long-gone consumers with none."""
        reply: list[Any] = await self.redis.xautoclaim(
            schema.AUDIT_STREAM, schema.AUDIT_GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch
        )
        entries: list[Entry] = [(entry_id, fields or None) for entry_id, fields in reply[1]]
        if entries:
            log.info("audit consumer %s took over %d entries of a silent consumer", self.consumer, len(entries))
        consumers: list[dict[str, Any]] = await self.redis.xinfo_consumers(schema.AUDIT_STREAM, schema.AUDIT_GROUP)
        for info in consumers:
            if info["name"] != self.consumer and not info["pending"] and info["idle"] > DEAD_CONSUMER_IDLE_MS:
                await self.redis.xgroup_delconsumer(schema.AUDIT_STREAM, schema.AUDIT_GROUP, info["name"])
        return entries

    # --- writing ----------------------------------------------------------------------------------

    async def _store(self, entries: list[Entry]) -> None:
        rows = [to_row(entry_id, fields) for entry_id, fields in entries if fields is not None]
        if len(rows) < len(entries):
            # Trimmed from the stream (MAXLEN) before anyone wrote them: only possible with a backlog
            # beyond DF_AUDIT_STREAM_MAXLEN.
            log.error("audit consumer: %d events were trimmed from the stream unwritten", len(entries) - len(rows))
        if rows:
            await self._retrying("write", partial(self._insert, rows))
        ids = [entry_id for entry_id, _ in entries]
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(schema.AUDIT_STREAM, schema.AUDIT_GROUP, *ids)
                pipe.xdel(schema.AUDIT_STREAM, *ids)  # written: the buffer need not keep it
                await pipe.execute()
        except (RedisError, OSError):
            self._own_pending = True  # read them again; the insert skips them, then the ack is retried
            raise
        self.written += len(rows)
        self.batches += 1

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS), self.engine.begin() as conn:
            await conn.execute(self.insert, rows)

    async def _prepare(self) -> None:
        await self._ensure_group()
        await upgrade_to_head(self.engine)

    async def _ensure_group(self) -> None:
        try:
            # id 0: events buffered before the first consumer ever started are written too.
            await self.redis.xgroup_create(schema.AUDIT_STREAM, schema.AUDIT_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _retrying(self, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run ``step`` until it succeeds: the database (or Redis) being away only delays the log.

        One WARNING when it starts failing and one INFO when it succeeds, not a line per attempt."""
        attempt = 0
        while True:
            try:
                await step()
            except Exception as exc:  # driver errors are not one hierarchy (asyncpg, sqlite3, OSError, ...)
                attempt += 1
                delay = self._backoff(attempt)
                level = logging.WARNING if attempt == 1 else logging.DEBUG
                log.log(
                    level, "audit consumer: %s failed (attempt %d, %s: %s); retrying in %.1fs",
                    what, attempt, type(exc).__name__, str(exc)[:300], delay,
                )
                await asyncio.sleep(delay)
                continue
            if attempt:
                log.info("audit consumer: %s succeeded after %d failed attempts", what, attempt)
            return

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, 0.25 * 2 ** min(attempt, 16)))

    # --- progress ---------------------------------------------------------------------------------

    async def _report(self) -> None:
        since, written, batches = self._reported
        if time.monotonic() - since < self.report_every:
            return
        self._reported = (time.monotonic(), self.written, self.batches)
        backlog = await self.redis.xlen(schema.AUDIT_STREAM)
        if self.written > written or backlog:
            log.info(
                "audit consumer %s: %d events in %d batches since the last report, backlog %d",
                self.consumer, self.written - written, self.batches - batches, backlog,
            )

    def _db(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)
