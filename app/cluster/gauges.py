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
import time
from collections import Counter
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from prometheus_client import Gauge

from app.core.config import Settings
from app.core.redis import OutageLog
from app.observability import shared
from app.observability.workers import WorkerProbe
from app.preheat.model import Status
from app.state import schema

log = logging.getLogger("app.cluster.gauges")

_NS, _SUB = "dragonfly", "supernode"
_CDN_STATUSES = (schema.CdnStatus.WAITING, schema.CdnStatus.RUNNING, schema.CdnStatus.SUCCESS,
                 schema.CdnStatus.FAILED)
_PREHEAT_STATUSES = (Status.WAITING, Status.RUNNING, Status.SUCCESS, Status.FAILED)
_CHUNK = 1000
WORK_SHARE_INVERSE = 4  # pause >= 4 x the refresh's own time: at most 1/5 of the loop

tasks = Gauge("tasks", "Tasks in the cluster by the status of their seed." + shared.SAME, ["cdnstatus"],
              namespace=_NS, subsystem=_SUB, multiprocess_mode="mostrecent",
)
seeding_bytes = Gauge(
    "seeding_bytes", "Source bytes in the seed cache so far, summed over the seeds running now." + shared.SAME,
    namespace=_NS, subsystem=_SUB, multiprocess_mode="mostrecent",
)
seeding_total_bytes = Gauge(
    "seeding_total_bytes",
    "Source length of the tasks being seeded now (seeding_bytes / this = progress)." + shared.SAME,
    namespace=_NS, subsystem=_SUB, multiprocess_mode="mostrecent",
)
preheats = Gauge("preheats", "Preheat jobs kept in the cluster, by status." + shared.SAME, ["status"],
                 namespace=_NS, subsystem=_SUB, multiprocess_mode="mostrecent",
)


def _int(value: str | None) -> int:
    return int(value) if value and value.lstrip("-").isdigit() else 0


@dataclass
class Census:
    """Tasks and preheats of the cluster as Redis holds them now."""

    tasks: Counter[str] = field(default_factory=Counter)  # by cdnStatus
    seeding_bytes: int = 0  # source bytes seeded so far by the RUNNING seeds
    seeding_total_bytes: int = 0  # their source lengths (unknown lengths count 0)
    preheats: Counter[str] = field(default_factory=Counter)  # by status


async def census(redis: aioredis.Redis) -> Census:
    """Pipelined passes over the task and preheat indexes, a chunk at a time so that a large index never
    becomes one huge reply (also the cluster view's count of running seeds)."""
    out = Census()
    tids: list[str] = await redis.zrange(schema.TASK_INDEX, 0, -1)  # type: ignore[assignment]
    for start in range(0, len(tids), _CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for tid in tids[start : start + _CHUNK]:
                pipe.hmget(schema.task_key(tid), "cdnStatus", "seedBytes", "httpFileLength")
            task_fields: list[list[str | None]] = await pipe.execute()
        for status, seeded, length in task_fields:
            if status is None:
                continue  # expired since the index was read
            out.tasks[status] += 1
            if status == schema.CdnStatus.RUNNING:
                out.seeding_bytes += _int(seeded)
                out.seeding_total_bytes += max(_int(length), 0)
    pids: list[str] = await redis.zrange(schema.PREHEAT_INDEX, 0, -1)  # type: ignore[assignment]
    for start in range(0, len(pids), _CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for pid in pids[start : start + _CHUNK]:
                pipe.hget(schema.preheat_key(pid), "status")
            statuses: list[str | None] = await pipe.execute()
        out.preheats.update(status for status in statuses if status is not None)
    return out


async def refresh(redis: aioredis.Redis) -> None:
    now = await census(redis)
    for status in _CDN_STATUSES:
        tasks.labels(status).set(now.tasks[status])
    seeding_bytes.set(now.seeding_bytes)
    seeding_total_bytes.set(now.seeding_total_bytes)
    for status in _PREHEAT_STATUSES:
        preheats.labels(status).set(now.preheats[status])


async def refresh_shared(redis: aioredis.Redis, settings: Settings, workers: WorkerProbe | None) -> float:
    """Returns the seconds of work it took, without the worker ping (which waits in a thread)."""
    started = time.monotonic()
    now = await shared.snapshot(redis, settings.metrics_peer_label, settings.metrics_task_series)
    work = time.monotonic() - started
    now.workers = await workers.count() if workers is not None else None
    shared.collector.publish(now)
    return work


async def run_gauge_loop(
    redis: aioredis.Redis, interval: float, settings: Settings | None = None, workers: WorkerProbe | None = None
) -> None:
    """Recompute every cluster-wide gauge each ``interval``; with ``settings``, also those of
    app.observability.shared (peers, dfgettasks, byte split, replicas, workers, audit backlog).

    The work grows with the cluster's tasks (about 1.1 s for 10,000 tasks of 10 peers each on a loaded
    2-core machine: benchmarks/bench_gauges.py), so the pause after a refresh is at least
    ``WORK_SHARE_INVERSE`` times what it took: the gauges then lag by more than ``interval``, but
    never take more than a fifth of the replica's event loop."""
    outage = OutageLog(log, "cluster gauges refresh")
    while True:
        work = 0.0
        try:
            started = time.monotonic()
            await refresh(redis)
            work = time.monotonic() - started
            if settings is not None:
                work += await refresh_shared(redis, settings, workers)
        except Exception as exc:  # a Redis outage: the gauges keep their last values, the loop goes on
            outage.failed(exc)
        else:
            outage.succeeded()
        await asyncio.sleep(max(interval, WORK_SHARE_INVERSE * work))
