"""Whole-index reads done inside Redis (task_list.lua, task_census.lua): with 10,000 tasks one call
costs Redis a few milliseconds, where a pipelined read per task costs the replica about a second of
reply parsing. Both read the live index only: tasks accessed within the task TTL (older entries
have no task hash any more and are pruned by the next registration).

On a Redis Cluster the task hashes are spread over the slots, out of one script's reach: the same
answers are computed here from the index and pipelined reads (redis-py sends each node its share),
at the parsing cost above. A cluster is for states that outgrow one Redis; its listings cost more."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from app.core.redis import is_cluster
from app.state import schema
from app.state.scripts import script_source


@dataclass
class IndexCensus:
    tasks: Counter[str] = field(default_factory=Counter)  # by cdnStatus
    seeding_bytes: int = 0  # source bytes seeded so far by the RUNNING seeds
    preheats: Counter[str] = field(default_factory=Counter)  # by status


async def _call(redis: aioredis.Redis, name: str, keys: list[str], ttl_seconds: int, *args: str | int) -> object:
    script = redis.register_script(script_source(name))
    return await script(keys=keys, args=["", ttl_seconds, int(time.time() * 1000), *args])


async def _live_tasks(redis: aioredis.Redis, ttl_seconds: int, fields: list[str]) -> list[tuple[str, list[str | None]]]:
    """[Redis Cluster] (task id, ``fields`` of its hash) of the live index, newest first; expired ones left out."""
    horizon = int(time.time() * 1000) - ttl_seconds * 1000
    tids: list[str] = await redis.zrevrangebyscore(schema.TASK_INDEX, "+inf", horizon)  # type: ignore[assignment]
    rows: list[tuple[str, list[str | None]]] = []
    for start in range(0, len(tids), _CHUNK):
        chunk = tids[start : start + _CHUNK]
        async with redis.pipeline(transaction=False) as pipe:
            for tid in chunk:
                pipe.hmget(schema.task_key(tid), fields)
            replies: list[list[str | None]] = await pipe.execute()
        rows += [(tid, values) for tid, values in zip(chunk, replies, strict=True) if values[0] is not None]
    return rows


_CHUNK = 1000  # task hashes read per pipeline on a Redis Cluster


async def task_page(
    redis: aioredis.Redis, ttl_seconds: int, status: str | None, offset: int, limit: int
) -> tuple[int, list[str]]:
    """(how many live tasks match ``status`` (None: all), the ids of the page), newest first."""
    if is_cluster(redis):
        live = await _live_tasks(redis, ttl_seconds, ["cdnStatus"])
        matching = [tid for tid, (s,) in live if not status or s == status]
        return len(matching), matching[offset : offset + limit]
    reply = await _call(redis, "task_list", [schema.TASK_INDEX], ttl_seconds, status or "", offset, limit)
    assert isinstance(reply, list)
    total, page = reply
    return int(total), [str(tid) for tid in page]


async def census(redis: aioredis.Redis, ttl_seconds: int) -> IndexCensus:
    if is_cluster(redis):
        return await _cluster_census(redis, ttl_seconds)
    reply = await _call(redis, "task_census", [schema.TASK_INDEX, schema.PREHEAT_INDEX], ttl_seconds)
    assert isinstance(reply, list)
    out = IndexCensus()
    for name, count in zip(reply[::2], reply[1::2], strict=True):
        kind, _, value = str(name).partition(":")
        if kind == "task":
            out.tasks[value] = int(count)
        elif kind == "preheat":
            out.preheats[value] = int(count)
        elif kind == "seedBytes":
            out.seeding_bytes = int(count)
    return out


async def _cluster_census(redis: aioredis.Redis, ttl_seconds: int) -> IndexCensus:
    out = IndexCensus()
    for _, (status, seeded) in await _live_tasks(redis, ttl_seconds, ["cdnStatus", "seedBytes"]):
        out.tasks[str(status)] += 1
        if status == "RUNNING":
            out.seeding_bytes += int(seeded or 0)
    # The preheat records share their index's slot: the same script as on one Redis would do, but one
    # read each is as simple and preheats are few.
    pids: list[str] = await redis.zrange(schema.PREHEAT_INDEX, 0, -1)  # type: ignore[assignment]
    async with redis.pipeline(transaction=False) as pipe:
        for pid in pids:
            pipe.hget(schema.preheat_key(pid), "status")
        statuses: list[str | None] = await pipe.execute()
    for status in statuses:
        if status:
            out.preheats[status] += 1
    return out
