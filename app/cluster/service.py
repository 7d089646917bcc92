"""``GET /api/v1/cluster``: live replicas, seeding workers, Redis, Postgres and the seed cache.

Every probe has a short timeout and runs concurrently with the others, and a failing probe is reported,
never raised: this is the page an operator opens when something is broken.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from typing import Any

import orjson
import redis.asyncio as aioredis
from sqlalchemy import text

from app.audit.runtime import AuditRuntime
from app.cdn.dispatch import SeedDispatcher
from app.cdn.storage import LocalSeedStorage
from app.cluster.gauges import census
from app.cluster.models import ClusterView, DatabaseHealth, RedisHealth, Replica, SeedCache, Workers
from app.core.config import Settings
from app.core.jobs import CeleryJobs
from app.core.timefmt import rfc3339_ms
from app.state import schema

PING_TIMEOUT_SECONDS = 0.5  # Celery control.ping collects replies for exactly this long
PROBE_TIMEOUT_SECONDS = 2.0


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300] if str(exc) else type(exc).__name__


class ClusterService:
    def __init__(
        self, redis: aioredis.Redis, settings: Settings, storage: LocalSeedStorage, dispatcher: SeedDispatcher,
        self_id: str, audit: AuditRuntime | None = None,
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.storage = storage
        self.dispatcher = dispatcher
        self.self_id = self_id
        self.audit = audit

    async def view(self) -> ClusterView:
        replicas, workers, redis_health, database, seed_cache = await asyncio.gather(
            self.replicas(), self.workers(), self.redis_health(), self.database(), self.seed_cache()
        )
        return ClusterView(
            replicas=replicas, workers=workers, redis=redis_health, database=database, seedCache=seed_cache
        )

    async def replicas(self) -> list[Replica]:
        ids: list[str] = await self.redis.zrange(schema.REPLICAS, 0, -1)  # type: ignore[assignment]
        if not ids:
            return []
        # Pipelined GETs, not MGET: on a Redis Cluster the heartbeat keys are in different slots.
        async with self.redis.pipeline(transaction=False) as pipe:
            for i in ids:
                pipe.get(schema.replica_key(i))
            raw: list[str | None] = await pipe.execute()
        gone = [i for i, value in zip(ids, raw, strict=True) if value is None]
        if gone:  # their heartbeat key expired: the replica is dead or partitioned
            await self.redis.zrem(schema.REPLICAS, *gone)
        out = []
        for value in raw:
            if value is None:
                continue
            try:
                record: dict[str, Any] = orjson.loads(value)
                out.append(
                    Replica(
                        **{k: v for k, v in record.items() if k not in ("started", "heartbeat", "self")},
                        started=rfc3339_ms(int(record["started"])), heartbeat=rfc3339_ms(int(record["heartbeat"])),
                        self=record["id"] == self.self_id,
                    )
                )
            except (ValueError, KeyError, TypeError):
                continue  # written by a replica of another version; it shows up again once upgraded
        return sorted(out, key=lambda r: r.id)

    async def running_seeds(self) -> int:
        return (await census(self.redis)).tasks[schema.CdnStatus.RUNNING]

    async def workers(self) -> Workers:
        running = await self.running_seeds()
        if not isinstance(self.dispatcher, CeleryJobs):
            return Workers(mode="in-process", ok=True, runningSeeds=running)
        control = self.dispatcher.celery.control

        def ping() -> list[dict[str, Any]]:
            return control.ping(timeout=PING_TIMEOUT_SECONDS) or []

        try:
            # control.ping blocks for its whole timeout; the outer bound covers an unreachable broker.
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS + 1):
                replies = await asyncio.to_thread(ping)
        except Exception as exc:
            return Workers(mode="celery", ok=False, runningSeeds=running, error=_error(exc))
        names = sorted(name for reply in replies for name in reply)
        return Workers(
            mode="celery", ok=bool(names), workers=names, runningSeeds=running,
            error=None if names else "no worker answered the ping",
        )

    async def redis_health(self) -> RedisHealth:
        embedded = self.settings.embedded
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                started = time.perf_counter()
                await self.redis.ping()
                latency = round((time.perf_counter() - started) * 1000, 3)
        except Exception as exc:
            return RedisHealth(ok=False, embedded=embedded, error=_error(exc))
        info: dict[str, Any] = {}
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                info = await self.redis.info("memory")
        except Exception:
            pass  # the embedded server has no INFO; memory stays unknown, PING said enough
        used = info.get("used_memory")
        return RedisHealth(
            ok=True, latencyMs=latency, embedded=embedded, usedMemoryBytes=int(used) if used is not None else None,
            usedMemoryHuman=info.get("used_memory_human"),
        )

    async def database(self) -> DatabaseHealth:
        """The audit database, probed through the engine the audit consumer uses (its pool, its URL:
        DF_DATABASE_URL, or in embedded mode the SQLite file under DF_HOME when that is empty)."""
        if self.audit is None:
            return DatabaseHealth(status="not configured")
        engine = self.audit.engine
        if engine is None and not self.audit.configured:
            return DatabaseHealth(status="not configured", ok=False, error=self.audit.error)
        if engine is None:
            return DatabaseHealth(status="error", ok=False, error=self.audit.error or "audit database unusable")
        shown = engine.url.render_as_string(hide_password=True)
        status = "sqlite" if engine.url.get_backend_name() == "sqlite" else "ok"
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
                started = time.perf_counter()
                async with engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
                latency = round((time.perf_counter() - started) * 1000, 3)
        except Exception as exc:
            error, password = _error(exc), engine.url.password
            if password:  # a driver may quote its DSN; the password must not reach a read API
                error = error.replace(str(password), "***")
            return DatabaseHealth(status="error", ok=False, url=shown, error=error)
        return DatabaseHealth(status=status, ok=True, latencyMs=latency, url=shown)

    async def seed_cache(self) -> SeedCache:
        used = await asyncio.to_thread(self.storage.disk_usage)
        disk = await asyncio.to_thread(shutil.disk_usage, self.storage.base)
        return SeedCache(path=str(self.storage.base), usedBytes=used, freeBytes=disk.free, totalBytes=disk.total)
