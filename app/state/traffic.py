"""Bytes clients received, by where they came from ("source class").

* ``peer``: a piece fetched from another dfget's uploader;
* ``seed``: a piece fetched from the seed cache (a ``cdnnode:...`` source);
* ``source``: a download that went back to the origin.

Pieces are counted inside the Lua of the report that first tells the cluster a client has a piece
(``record_success`` in ``_prelude.lua``, reached from ``/peer/task`` 701/503 and ``/peer/piece/suc``),
once per (client, piece), at the framed size the seed cache holds. So it costs no extra round trip.
Back-to-source bytes are only ever reported by dfget 1.0.x, in ``POST /task/metrics``
(``fileLength`` with a non-zero ``backsourceReason``): a 0.4.x client that goes to the source tells
the supernode nothing, and those bytes cannot be known. ``source`` therefore counts 1.0.x only.

Counters are kept per task (with the task's TTL), cluster-wide, and per minute (buckets that expire
after ``TRAFFIC_BUCKET_TTL_SECONDS``) for history charts. All are plain HINCRBYs: atomic, and every
replica reads the same numbers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as aioredis

from app.state import schema

SOURCE_CLASSES = ("peer", "seed", "source")
MAX_HISTORY_MINUTES = (schema.TRAFFIC_BUCKET_TTL_SECONDS - schema.TRAFFIC_BUCKET_SECONDS) // 60


@dataclass(frozen=True)
class Traffic:
    peer: int
    seed: int
    source: int

    @property
    def total(self) -> int:
        return self.peer + self.seed + self.source

    @property
    def p2p_ratio(self) -> float | None:
        """Share of the bytes that did not come from the origin or the seed cache; None with no bytes."""
        return None if self.total == 0 else self.peer / self.total

    def as_dict(self) -> dict[str, int]:
        return {"peer": self.peer, "seed": self.seed, "source": self.source}


ZERO = Traffic(0, 0, 0)


def _traffic(values: Sequence[object]) -> Traffic:
    peer, seed, source = (int(str(v)) if v is not None else 0 for v in values)
    return Traffic(peer=peer, seed=seed, source=source)


async def task_traffic(redis: aioredis.Redis, task_id: str) -> Traffic:
    return _traffic(await redis.hmget(schema.traffic_key(task_id), list(SOURCE_CLASSES)))


async def tasks_traffic(redis: aioredis.Redis, task_ids: list[str]) -> list[Traffic]:
    """Several tasks in one round trip (a page of the task list)."""
    if not task_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for tid in task_ids:
            pipe.hmget(schema.traffic_key(tid), list(SOURCE_CLASSES))
        rows = await pipe.execute()
    return [_traffic(row) for row in rows]


async def cluster_traffic(redis: aioredis.Redis) -> Traffic:
    return _traffic(await redis.hmget(schema.TRAFFIC_TOTAL, list(SOURCE_CLASSES)))


def current_minute(now_ms: int | None = None) -> int:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return now // (schema.TRAFFIC_BUCKET_SECONDS * 1000)


async def traffic_history(redis: aioredis.Redis, minutes: int) -> list[tuple[int, Traffic]]:
    """The last ``minutes`` per-minute buckets, oldest first, including the current (partial) minute.

    Each item is (bucket start in epoch seconds, bytes in that minute); a minute without traffic is
    zeros. ``minutes`` is clamped to 1..MAX_HISTORY_MINUTES (older buckets have expired).
    """
    minutes = max(1, min(minutes, MAX_HISTORY_MINUTES))
    last = current_minute()
    starts = list(range(last - minutes + 1, last + 1))
    async with redis.pipeline(transaction=False) as pipe:
        for minute in starts:
            pipe.hmget(schema.traffic_bucket_key(minute), list(SOURCE_CLASSES))
        rows = await pipe.execute()
    return [(minute * schema.TRAFFIC_BUCKET_SECONDS, _traffic(row)) for minute, row in zip(starts, rows, strict=True)]


def window_total(history: list[tuple[int, Traffic]]) -> Traffic:
    """The sum of a history window (bytes in the last N minutes)."""
    return Traffic(
        peer=sum(t.peer for _, t in history),
        seed=sum(t.seed for _, t in history),
        source=sum(t.source for _, t in history),
    )
