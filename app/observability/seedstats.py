"""The legacy ``cdn_*`` counters (seed jobs), kept cluster-wide in Redis (``df:seedstats``).

Seeding runs wherever a seed job lands: on a Celery worker in cluster mode, which Prometheus does not
scrape, or in a replica in embedded mode. So the process that runs a job adds to one shared hash
(HINCRBY: atomic, no read-modify-write), and every replica exports the totals with the other
cluster-wide series (app/observability/shared.py): the same on every replica, aggregated with max.

A count that cannot be written (Redis away) is logged and lost: it never fails or delays the seed.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.state import schema

log = logging.getLogger("app.observability.seedstats")

# Hash field -> legacy metric name (without ``dragonfly_supernode_`` and ``_total``).
FIELDS = {
    "trigger": "cdn_trigger",
    "triggerFailed": "cdn_trigger_failed",
    "cacheHit": "cdn_cache_hit",
    "download": "cdn_download",
    "downloadFailed": "cdn_download_failed",
}
_WRITE_TIMEOUT_SECONDS = 1.0


async def _add(redis: aioredis.Redis, fields: list[str]) -> None:
    try:
        async with asyncio.timeout(_WRITE_TIMEOUT_SECONDS):
            async with redis.pipeline(transaction=False) as pipe:
                for name in fields:
                    pipe.hincrby(schema.SEED_STATS, name, 1)
                await pipe.execute()
    except (RedisError, TimeoutError) as exc:
        log.warning("seed job counts %s not recorded: %r", fields, exc)


async def started(redis: aioredis.Redis) -> None:
    await _add(redis, ["trigger"])


async def finished(redis: aioredis.Redis, *, success: bool, cached: bool) -> None:
    """A job's end: answered from the seed cache (``cached``), or downloaded from the source."""
    fields = ["cacheHit"] if cached else ["download"] + ([] if success else ["downloadFailed"])
    if not success:
        fields.append("triggerFailed")
    await _add(redis, fields)


async def read(redis: aioredis.Redis) -> dict[str, int]:
    raw: dict[str, str] = await redis.hgetall(schema.SEED_STATS)  # type: ignore[assignment]
    return {name: int(raw.get(name, 0) or 0) for name in FIELDS}
