"""Cluster-wide gauges on /metrics: tasks by seed status (the legacy ``dragonfly_supernode_tasks``),
seeding progress and preheats by status.

They are computed from the shared Redis state, not counted per replica: a replica's own counts would
be a fraction of the truth, and summing replicas would double count (METRICS-AND-HELM.md §5). Every
replica shows the same values, so dashboards take ``max`` over replicas. Seeding runs on the Celery
workers, which Prometheus does not scrape; this is where its progress becomes visible.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import redis.asyncio as aioredis
from prometheus_client import Gauge
from redis.exceptions import RedisError

from app.preheat.model import Status
from app.state import schema

log = logging.getLogger("app.cluster.gauges")

_NS, _SUB = "dragonfly", "supernode"
_CDN_STATUSES = (schema.CdnStatus.WAITING, schema.CdnStatus.RUNNING, schema.CdnStatus.SUCCESS,
                 schema.CdnStatus.FAILED)
_PREHEAT_STATUSES = (Status.WAITING, Status.RUNNING, Status.SUCCESS, Status.FAILED)

tasks = Gauge("tasks", "Tasks in the cluster by the status of their seed.", ["cdnstatus"],
              namespace=_NS, subsystem=_SUB)
seeding_bytes = Gauge("seeding_bytes", "Source bytes in the seed cache so far, summed over the seeds running now.",
                      namespace=_NS, subsystem=_SUB)
seeding_total_bytes = Gauge(
    "seeding_total_bytes", "Source length of the tasks being seeded now (seeding_bytes / this = progress).",
    namespace=_NS, subsystem=_SUB,
)
preheats = Gauge("preheats", "Preheat jobs kept in the cluster, by status.", ["status"], namespace=_NS, subsystem=_SUB)


def _int(value: str | None) -> int:
    return int(value) if value and value.lstrip("-").isdigit() else 0


async def refresh(redis: aioredis.Redis) -> None:
    tids: list[str] = await redis.zrange(schema.TASK_INDEX, 0, -1)  # type: ignore[assignment]
    pids: list[str] = await redis.zrange(schema.PREHEAT_INDEX, 0, -1)  # type: ignore[assignment]
    async with redis.pipeline(transaction=False) as pipe:
        for tid in tids:
            pipe.hmget(schema.task_key(tid), "cdnStatus", "seedBytes", "httpFileLength")
        for pid in pids:
            pipe.hget(schema.preheat_key(pid), "status")
        replies: list[object] = await pipe.execute()
    task_fields: list[list[str | None]] = replies[: len(tids)]  # type: ignore[assignment]
    by_status: Counter[str] = Counter()
    done = total = 0
    for status, seeded, length in task_fields:
        if status is None:
            continue  # expired since the index was read
        by_status[status] += 1
        if status == schema.CdnStatus.RUNNING:
            done += _int(seeded)
            total += max(_int(length), 0)
    for status in _CDN_STATUSES:
        tasks.labels(status).set(by_status[status])
    seeding_bytes.set(done)
    seeding_total_bytes.set(total)
    preheat_counts = Counter(status for status in replies[len(tids):] if isinstance(status, str))
    for status in _PREHEAT_STATUSES:
        preheats.labels(status).set(preheat_counts[status])


async def run_gauge_loop(redis: aioredis.Redis, interval: float) -> None:
    while True:
        try:
            await refresh(redis)
        except (RedisError, OSError) as exc:  # a Redis blip: the gauges keep their last values
            log.warning("cluster gauges not refreshed: %s", exc)
        await asyncio.sleep(interval)
