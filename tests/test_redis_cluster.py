"""End to end on a Redis Cluster: two replica processes and a Celery worker with
DF_REDIS_URL=redis+cluster://... (3 masters, 3 replicas on loopback, tests/redis_cluster.py), the
worker's broker on the machine's plain Redis (a leased db), a swarm of emulated dfgets downloading
real bytes from a local source, every output checked by sha256. Then the same with the master holding
the task's slot killed (SIGKILL) mid-swarm: its replica is promoted and every download completes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode as Node
from redis.cluster import RedisCluster as SyncCluster

from app.protocol.taskid import task_id
from app.state import schema
from app.swarm import Swarm
from tests.cluster import Cluster, check_swarm
from tests.redis_cluster import RedisCluster
from tests.sources import SourceProcess, random_file

pytestmark = pytest.mark.slow

SIZE = 32 * 1024 * 1024


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    return random_file(tmp_path / "source.bin", SIZE)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    with RedisCluster(tmp_path / "redis-cluster") as cluster:
        yield cluster


@pytest.fixture
def nodes(tmp_path: Path, redis_cluster: RedisCluster, broker_url: str) -> Iterator[Cluster]:
    redis.Redis.from_url(broker_url).flushdb()
    # Piece leases far beyond the swarm's timeout: a piece left "running" is a failure, not a pause.
    cluster = Cluster(tmp_path / "nodes", redis_cluster.url(), broker_url,
                      extra_env={"DF_PIECE_LEASE_SECONDS": "900"})
    cluster.workdir.mkdir()
    try:
        cluster.start_replica()
        cluster.start_replica()
        cluster.start_worker()
        yield cluster
    finally:
        cluster.stop()
        redis.Redis.from_url(broker_url).flushdb()


def state_client(redis_cluster: RedisCluster) -> SyncCluster:
    live = [n for n in redis_cluster.nodes if n.running]
    return SyncCluster(startup_nodes=[Node("127.0.0.1", n.port) for n in live], decode_responses=True,
                       socket_timeout=1, socket_connect_timeout=1)


async def test_a_swarm_downloads_through_replicas_on_a_redis_cluster(
    nodes: Cluster, redis_cluster: RedisCluster, payload: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = payload
    with SourceProcess({"blob.bin": path}) as source:
        url = source.url("blob.bin")
        async with Swarm(6, [r.node for r in nodes.replicas], url, tmp_path / "out", sleep_scale=0.25,
                         versions=["1.0.6", "0.4.1"]) as swarm:
            results = await swarm.run()
        stats = source.stats("blob.bin")
    check_swarm(results, sha256)
    assert stats["full_gets"] == 1, stats  # one seed, by the worker
    assert sum(r.pieces_from_peers for r in results) > 0
    tid = task_id(url)
    state = state_client(redis_cluster)
    try:
        # The task's keys on its slot's master, the global ones written by the deferred commands.
        assert state.hget(schema.task_key(tid), "cdnStatus") == "SUCCESS"
        assert state.zscore(schema.TASK_INDEX, tid) is not None
        assert int(state.hget(schema.TRAFFIC_TOTAL, "seed") or 0) > 0
        assert state.hlen(schema.PEERS) >= 6
    finally:
        state.close()
    assert "seed end" in nodes.workers[0].tail(400)


async def test_a_master_killed_mid_swarm_is_replaced_and_every_download_completes(
    nodes: Cluster, redis_cluster: RedisCluster, payload: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = payload
    with SourceProcess({"blob.bin": path}) as source:
        source.configure("blob.bin", pace=0.01)  # a seed of a few seconds: the kill lands mid-swarm
        url = source.url("blob.bin")
        tid = task_id(url)
        victim = redis_cluster.master_for(schema.task_key(tid))
        state = state_client(redis_cluster)
        async with Swarm(6, [r.node for r in nodes.replicas], url, tmp_path / "out", sleep_scale=0.25,
                         versions=["1.0.6", "0.4.1"], timeout=90) as swarm:
            running = asyncio.create_task(swarm.run())
            for _ in range(1000):
                if running.done() or state.scard(schema.holders_key(tid, 0)) >= 1:
                    break
                await asyncio.sleep(0.02)
            assert not running.done(), "the swarm ended before any peer held a piece"
            seeded_before, piece_total = state.hmget(schema.task_key(tid), ["seedPieces", "pieceTotal"])
            killed_at = time.monotonic()
            redis_cluster.kill(victim)
            promoted = await asyncio.to_thread(redis_cluster.wait_promoted, victim, schema.task_key(tid))
            took = time.monotonic() - killed_at
            results = await running
        state.close()
    check_swarm(results, sha256)
    assert promoted is not victim and promoted.running
    assert int(seeded_before or 0) < int(piece_total or 0), "the seed was over before the kill: not mid-swarm"
    after = state_client(redis_cluster)
    try:
        assert after.hget(schema.task_key(tid), "cdnStatus") == "SUCCESS"
    finally:
        after.close()
    print(f"slot master {victim.port} killed; {promoted.port} serves the slot after {took:.1f} s")
