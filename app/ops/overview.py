"""``GET /api/v1/overview``: cluster health, totals, bytes by source class and the P2P ratio.

One census of the task index inside Redis (app.state.listing; the cluster view's count of running
seeds reuses it): a few milliseconds of Redis time at 10,000 tasks. benchmarks/bench_dashboard.py
measures a replica with dashboards polling.
"""

from __future__ import annotations

import time
from datetime import datetime

import redis.asyncio as aioredis

from app.cluster.service import ClusterService
from app.limits.model import Limits
from app.limits.views import LimitValues
from app.ops.models import Overview, ReplicaAge, Totals, TrafficPoint, TrafficSummary, TrafficView
from app.state import schema
from app.state.listing import IndexCensus, census
from app.state.traffic import cluster_traffic, traffic_history, window_total


class _CensusCluster(ClusterService):
    """The cluster view, with its running-seed count taken from a census already made."""

    counted: IndexCensus | None = None

    async def running_seeds(self) -> int:
        if self.counted is None:
            return await super().running_seeds()
        return self.counted.tasks[schema.CdnStatus.RUNNING]


def _age(heartbeat: str, now: float) -> float | None:
    try:
        return round(max(0.0, now - datetime.fromisoformat(heartbeat).timestamp()), 3)
    except ValueError:
        return None


async def traffic_summary(redis: aioredis.Redis, minutes: int) -> TrafficSummary:
    history = await traffic_history(redis, minutes)
    window = window_total(history)
    return TrafficSummary(
        total=TrafficView.of(await cluster_traffic(redis)),
        window=TrafficView.of(window),
        minutes=len(history),
        p2pRatio=None if window.p2p_ratio is None else round(window.p2p_ratio, 4),
        history=[TrafficPoint(start=start, peer=t.peer, seed=t.seed, source=t.source) for start, t in history],
    )


async def overview(service: ClusterService, limits: Limits, minutes: int) -> Overview:
    redis = service.redis
    counted = await census(redis, service.settings.task_ttl_seconds)
    cluster_service = _CensusCluster(
        redis, service.settings, service.storage, service.dispatcher, service.self_id, service.audit
    )
    cluster_service.counted = counted
    cluster = await cluster_service.view()
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(schema.TASK_INDEX)
        pipe.zcount(schema.TASK_INDEX, int((now - minutes * 60) * 1000), "+inf")
        pipe.hlen(schema.PEERS)
        indexed, active, peers = await pipe.execute()
    return Overview(
        cluster=cluster,
        replicaAges=[ReplicaAge(id=r.id, heartbeatAgeSeconds=_age(r.heartbeat, now)) for r in cluster.replicas],
        totals=Totals(
            tasks=sum(counted.tasks.values()), activeTasks=min(int(active), int(indexed)),
            tasksByStatus=dict(counted.tasks), peers=int(peers), preheatsByStatus=dict(counted.preheats),
        ),
        traffic=await traffic_summary(redis, minutes),
        limits=LimitValues(**limits.as_wire()),
    )
