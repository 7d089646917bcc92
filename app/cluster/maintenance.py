"""The cluster's index upkeep, run by one worker of every replica (the primary, app.core.process).

Per-task keys expire by themselves; the global indexes that list them (the task index, the peer list,
the replica list) hold one entry per task, peer or replica and cannot: their entries are dropped here
once past their lifetime, so that after the TTLs Redis holds no more than before the swarm
(benchmarks/SCALE-RESULTS.md, "keys that outlive their TTL"). Idempotent and cheap, so every
replica may run it; the prunes are single commands or one-slot scripts.
"""

from __future__ import annotations

import asyncio
import logging
import time

import redis.asyncio as aioredis

from app.core.config import Settings
from app.core.redis import OutageLog
from app.state import schema
from app.state.store import ClusterState

log = logging.getLogger("app.cluster.maintenance")

INTERVAL_SECONDS = 30.0


async def prune_once(redis: aioredis.Redis, state: ClusterState, settings: Settings) -> int:
    removed = await state.prune_indexes()
    heartbeat_ttl_ms = int(settings.replica_heartbeat_seconds * 3 * 1000)
    replicas: int = await redis.zremrangebyscore(
        schema.REPLICAS, "-inf", int(time.time() * 1000) - heartbeat_ttl_ms
    )
    return removed + replicas


async def run_index_prune(
    redis: aioredis.Redis, state: ClusterState, settings: Settings, interval: float = INTERVAL_SECONDS
) -> None:
    outage = OutageLog(log, "index prune")
    while True:
        try:
            removed = await prune_once(redis, state, settings)
        except Exception as exc:  # a Redis outage: try again next time
            outage.failed(exc)
        else:
            outage.succeeded()
            if removed:
                log.info("pruned %d index entries past their lifetime", removed)
        await asyncio.sleep(interval)
