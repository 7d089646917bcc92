"""The global indexes drop entries past their lifetime without waiting for the next registration
(app.cluster.maintenance), so that Redis returns to its baseline after the TTLs."""

from __future__ import annotations

import time

import redis.asyncio as aioredis

from app.cluster.maintenance import prune_once
from app.core.config import Settings
from app.state import schema
from app.state.store import ClusterState


async def test_stale_tasks_peers_and_replicas_go_fresh_ones_stay(redis: aioredis.Redis, settings: Settings) -> None:
    state = ClusterState(redis, settings)
    now = int(time.time() * 1000)
    old = now - settings.task_ttl_seconds * 1000 - 1
    await redis.zadd(schema.TASK_INDEX, {"stale-task": old, "live-task": now})
    for n in range(2500):  # more than one prune batch
        await redis.hset(schema.PEERS, f"stale-{n}", "{}")
    await redis.zadd(schema.PEERS_SEEN, {f"stale-{n}": old for n in range(2500)})
    await redis.hset(schema.PEERS, "live", "{}")
    await redis.zadd(schema.PEERS_SEEN, {"live": now})
    await redis.zadd(schema.REPLICAS, {"gone": now - int(settings.replica_heartbeat_seconds * 3000) - 1, "here": now})

    assert await prune_once(redis, state, settings) == 1 + 2500 + 1
    assert await redis.zrange(schema.TASK_INDEX, 0, -1) == ["live-task"]
    assert await redis.hkeys(schema.PEERS) == ["live"]
    assert await redis.zrange(schema.PEERS_SEEN, 0, -1) == ["live"]
    assert await redis.zrange(schema.REPLICAS, 0, -1) == ["here"]
    assert await prune_once(redis, state, settings) == 0
