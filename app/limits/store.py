"""Live limits in Redis (``df:limits``, one task's ``downLinkKiB`` in its task hash), read by every
replica through a short local cache.

Bound: a change made on any replica is applied by every other one within ``DF_LIMITS_CACHE_SECONDS``
(1 s by default) plus the time of the request that reads it, since each replica re-reads the hash
once its copy is that old. Overrides survive replica restarts (they live in Redis, not in a
process); absent fields mean the DF_* setting. A Redis outage keeps the last values read.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from app.core.config import Settings
from app.core.redis import is_outage
from app.limits.model import FIELDS, Limits, parse_stored
from app.state import schema

log = logging.getLogger("app.limits")

TASK_DOWN_LINK_FIELD = "downLinkKiB"  # in df:{T}:task (set by task_limit.lua); pull.lua hands it on


class LiveLimits:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.defaults = Limits.defaults(settings)
        self.cache_seconds = settings.limits_cache_seconds
        self._value = self.defaults
        self._overrides: dict[str, int] = {}
        self._live_replicas = 1
        self._read_at = -float("inf")
        self._lock = asyncio.Lock()

    @property
    def cached(self) -> Limits:
        """The last values read, without a round trip (for code that cannot await)."""
        return self._value

    @property
    def live_replicas(self) -> int:
        return self._live_replicas

    async def current(self) -> Limits:
        """The limits in force, re-read from Redis once the local copy is older than the bound."""
        if time.monotonic() - self._read_at < self.cache_seconds:
            return self._value
        async with self._lock:  # one refresh at a time; the others use the value it reads
            if time.monotonic() - self._read_at >= self.cache_seconds:
                await self._refresh()
        return self._value

    async def _refresh(self) -> None:
        started = time.monotonic()
        horizon = int(time.time() * 1000 - self.settings.replica_heartbeat_seconds * 3000)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hgetall(schema.LIMITS)
                pipe.zcount(schema.REPLICAS, horizon, "+inf")
                raw, live = await pipe.execute()
        except Exception as exc:
            if not is_outage(exc):
                raise
            self._read_at = started  # keep the last values; try again after the cache time
            return
        self._overrides = parse_stored(raw)
        self._value = self.defaults.with_overrides(self._overrides)
        self._live_replicas = max(1, int(live))
        self._read_at = started

    async def overrides(self) -> dict[str, int]:
        """What an operator set (fresh from Redis, for the API)."""
        return parse_stored(await self.redis.hgetall(schema.LIMITS))  # type: ignore[arg-type]

    async def apply(self, change: dict[str, int | None]) -> Limits:
        """Set (or reset, None) the named limits in one MULTI; returns the limits now in force."""
        to_set = {name: value for name, value in change.items() if value is not None}
        to_reset = [name for name, value in change.items() if value is None]
        async with self.redis.pipeline(transaction=True) as pipe:
            if to_set:
                pipe.hset(schema.LIMITS, mapping=to_set)  # type: ignore[arg-type]
            if to_reset:
                pipe.hdel(schema.LIMITS, *to_reset)
            pipe.hgetall(schema.LIMITS)
            replies = await pipe.execute()
        self._overrides = parse_stored(replies[-1])
        self._value = self.defaults.with_overrides(self._overrides)
        self._read_at = time.monotonic()
        return self._value

    async def task_down_link(self, tid: str) -> int | None:
        raw = await self.redis.hget(schema.task_key(tid), TASK_DOWN_LINK_FIELD)
        if raw is None:
            return None
        parsed = parse_stored({TASK_DOWN_LINK_FIELD: str(raw)})
        return parsed.get(TASK_DOWN_LINK_FIELD)


def effective_down_link(cluster: Limits, task_value: object) -> int:
    """The downLink a piece task carries: the task's own when set and valid, else the cluster's."""
    if task_value not in (None, ""):
        parsed = parse_stored({TASK_DOWN_LINK_FIELD: str(task_value)})
        if TASK_DOWN_LINK_FIELD in parsed:
            return parsed[TASK_DOWN_LINK_FIELD]
    return cluster.down_link_kib


async def upload_share_bytes(live: LiveLimits) -> int:
    """This replica's share of the seed-cache upload bandwidth, in bytes per second (0 = unlimited)."""
    limits = await live.current()
    return limits.seed_upload_share_kibps(live.live_replicas) * 1024


__all__ = ["FIELDS", "LiveLimits", "effective_down_link", "upload_share_bytes"]
