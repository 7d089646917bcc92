"""End to end: separate supernode replica processes, a Celery worker, real Redis, a local source and
a swarm of emulated dfgets on loopback. Every output is checked by sha256."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.observability.processes import children
from app.protocol.taskid import task_id
from app.state import schema
from app.swarm import DfgetResult, Swarm
from tests.cluster import Cluster, Proc, check_swarm
from tests.haproxy import VipCluster
from tests.sources import SourceProcess, closed_port, random_file

pytestmark = pytest.mark.slow

SIZE = 64 * 1024 * 1024


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    return random_file(tmp_path / "source.bin", SIZE)


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, broker_url: str) -> Iterator[Cluster]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    redis.Redis.from_url(broker_url).flushdb()
    # Piece leases far beyond any download timeout below: a piece that stays "running" for a client that
    # will never report it is a stall the swarm's timeout turns into a failure, not a pause of one lease.
    # The worker niced as on a host shared with replicas (checked in the racing-registrations test).
    nodes = Cluster(tmp_path / "cluster", redis_url, broker_url,
                    extra_env={"DF_PIECE_LEASE_SECONDS": "900", "DF_SEED_WORKER_NICE": "19"})
    nodes.workdir.mkdir()
    try:
        nodes.start_replica()
        nodes.start_replica()
        nodes.start_worker()
        yield nodes
    finally:
        nodes.stop()
        client.flushdb()


def p2p_share(results: list[DfgetResult]) -> float:
    peers = sum(r.pieces_from_peers for r in results)
    cdn = sum(r.pieces_from_cdn for r in results)
    return peers / (peers + cdn)


@pytest.fixture
def vip(tmp_path: Path, redis_url: str, broker_url: str) -> Iterator[VipCluster]:
    """Three replicas and a worker behind the real haproxy, from deploy/haproxy/haproxy.cfg."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    redis.Redis.from_url(broker_url).flushdb()
    nodes = Cluster(tmp_path / "cluster", redis_url, broker_url, extra_env={"DF_PIECE_LEASE_SECONDS": "900"})
    nodes.workdir.mkdir()
    behind = VipCluster(nodes)
    try:
        behind.start()
        nodes.start_worker()
        yield behind
    finally:
        behind.stop()
        client.flushdb()


async def test_eight_peers_download_through_the_vip_from_three_replicas_and_one_worker(
    vip: VipCluster, payload: tuple[Path, str], tmp_path: Path
) -> None:
    path, sha256 = payload
    with SourceProcess({"blob.bin": path}) as source:
        # haproxy round-robins every request over the replicas: one client's registration, pulls and
        # reports land on different replicas, and its CDN pieces come through the VIP's piece port.
        async with Swarm(8, [vip.api_vip] * 3, source.url("blob.bin"), tmp_path / "out", sleep_scale=0.25,
                         versions=["1.0.6"]) as swarm:
            results = await swarm.run()
        stats = source.stats("blob.bin")
    check_swarm(results, sha256)
    served = vip.lb.served("df_api")
    assert all(served[f"r{i}"] > 0 for i in (1, 2, 3)), served
    assert sum(vip.lb.served("df_pieces").values()) > 0
    for result in results:
        assert {f.peer for f in result.piece_fetches if f.src_cid.startswith("cdnnode:")} <= {vip.lb.piece_vip}
    assert stats["full_gets"] == 1, stats
    assert p2p_share(results) >= 0.5, [dict(r.pieces_by_cid) for r in results]
    assert "seed end" in vip.cluster.workers[0].tail(400)


async def _kill_once_peers_hold_pieces(
    running: asyncio.Task[list[DfgetResult]], redis_url: str, url: str, victim: Proc
) -> None:
    state = redis.Redis.from_url(redis_url, decode_responses=True)
    tid = task_id(url)
    for _ in range(400):
        holders = state.scard(schema.holders_key(tid, 0)) if state.exists(schema.task_key(tid)) else 0
        if holders >= 1 or running.done():
            break
        await asyncio.sleep(0.02)
    assert not running.done()
    victim.kill()


async def test_a_replica_killed_mid_download_loses_no_download(
    cluster: Cluster, payload: tuple[Path, str], tmp_path: Path, redis_url: str
) -> None:
    """Without a load balancer: dfget itself migrates to its next listed node."""
    path, sha256 = payload
    first, second = (r.node for r in cluster.replicas)
    with SourceProcess({"blob.bin": path}) as source:
        url = source.url("blob.bin")
        # Each node listed twice (dfget 0.4.x doubles the list again; 1.0.5+ never re-registers to the
        # entry it last used).
        lists = [[first, second, first, second], [second, first, second, first]]
        # timeout: dfget 1.0.x goes to the source after it, which check_swarm refuses. A migrated client
        # must not wait on pieces the killed replica handed out (their reports died with it).
        async with Swarm(8, [first, second], url, tmp_path / "out", node_lists=lambda i: lists[i % 2],
                         sleep_scale=0.25, timeout=60) as swarm:
            running = asyncio.create_task(swarm.run())
            await _kill_once_peers_hold_pieces(running, redis_url, url, cluster.replicas[1])
            results = await running
    check_swarm(results, sha256)
    assert any(r.migrations for r in results), "nobody was talking to the killed replica"


async def test_a_replica_killed_behind_the_vip_costs_no_migration(
    vip: VipCluster, payload: tuple[Path, str], tmp_path: Path, redis_url: str
) -> None:
    """Behind the real haproxy the death is invisible: it retries on another replica, dfget never migrates."""
    path, sha256 = payload
    with SourceProcess({"blob.bin": path}) as source:
        url = source.url("blob.bin")
        async with Swarm(8, [vip.api_vip] * 3, url, tmp_path / "out", sleep_scale=0.25, versions=["1.0.6"],
                         timeout=60) as swarm:
            running = asyncio.create_task(swarm.run())
            await _kill_once_peers_hold_pieces(running, redis_url, url, vip.cluster.replicas[1])
            results = await running
        stats = source.stats("blob.bin")
    check_swarm(results, sha256)
    assert [r.migrations for r in results] == [0] * 8, vip.lb.counters()
    assert vip.lb.states("df_api")["r2"] == "DOWN"
    assert stats["full_gets"] == 1, stats


async def test_twenty_racing_registrations_on_both_replicas_start_one_seed(
    cluster: Cluster, payload: tuple[Path, str], redis_url: str
) -> None:
    path, _ = payload
    with SourceProcess({"blob.bin": path}) as source:
        url = source.url("blob.bin")

        async def register(http: httpx.AsyncClient, index: int) -> dict[str, object]:
            node = cluster.replicas[index % 2].node
            body = {"superNodeIp": "127.0.0.1", "rawUrl": url, "taskUrl": url, "cid": f"127.0.0.1-{index}-1.000",
                    "ip": "127.0.0.1", "hostName": "h", "port": 40000 + index, "path": f"/peer/file/f-{index}",
                    "version": "1.0.6"}
            response = await http.post(f"http://{node}/peer/registry", json=body)
            assert response.status_code == 200
            answer: dict[str, object] = response.json()
            return answer

        async with httpx.AsyncClient(timeout=10) as http:
            answers = await asyncio.gather(*(register(http, i) for i in range(20)))
        assert {a["code"] for a in answers} == {200}
        state = redis.Redis.from_url(redis_url, decode_responses=True)
        tid = task_id(url)
        for _ in range(300):
            if state.hget(schema.task_key(tid), "cdnStatus") == "SUCCESS":
                break
            await asyncio.sleep(0.05)
        task = state.hgetall(schema.task_key(tid))
        stats = source.stats("blob.bin")
    assert task["cdnStatus"] == "SUCCESS" and task["seedEpoch"] == "1"
    assert stats["full_gets"] == 1 and stats["gets"] == 2, stats  # one probe, one fill
    assert cluster.workers[0].tail(400).count("seed start") == 1
    # The seed worker and the pool process that seeded yield the CPU to the replicas (DF_SEED_WORKER_NICE).
    worker = cluster.workers[0].popen.pid
    pool = children(worker)
    assert pool and {niceness(pid) for pid in [worker, *pool]} == {19}
    assert {niceness(r.popen.pid) for r in cluster.replicas} == {0}


def niceness(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


async def test_source_failures_give_legacy_codes_and_clients_fall_back(cluster: Cluster, tmp_path: Path) -> None:
    nodes = [r.node for r in cluster.replicas]
    with SourceProcess({"missing.bin": b"x"}) as source:
        source.configure("missing.bin", status=404)
        source.put("broken.bin", os.urandom(1024 * 1024), status=500)
        urls = {
            "404": source.url("missing.bin"),
            "500": source.url("broken.bin"),
            "refused": f"http://127.0.0.1:{closed_port()}/file.bin",
        }
        outcomes: dict[str, DfgetResult] = {}
        for name, url in urls.items():
            async with Swarm(1, nodes, url, tmp_path / name, sleep_scale=0.1, timeout=60) as swarm:
                outcomes[name] = (await swarm.run())[0]
    for name, result in outcomes.items():
        assert not result.supernode_5xx, name
        assert result.back_sourced, name
        assert not result.success, name  # the source fails the client too; it went there cleanly
    assert 607 in outcomes["404"].codes("/peer/registry")
    assert 607 in outcomes["refused"].codes("/peer/registry")
    # A 5xx may be transient: registration succeeds, the seed fails, pulls answer 500 and dfget migrates.
    assert 200 in outcomes["500"].codes("/peer/registry")
    assert 500 in outcomes["500"].codes("/peer/task")


async def test_a_worker_killed_mid_seed_is_replaced_and_the_swarm_completes(
    tmp_path: Path, redis_url: str, broker_url: str, payload: tuple[Path, str]
) -> None:
    path, sha256 = payload
    redis.Redis.from_url(redis_url).flushdb()
    redis.Redis.from_url(broker_url).flushdb()
    nodes = Cluster(tmp_path / "cluster", redis_url, broker_url, extra_env={"DF_SEED_LEASE_SECONDS": "3"})
    nodes.workdir.mkdir()
    try:
        replica = nodes.start_replica()
        doomed = nodes.start_worker()
        with SourceProcess({"blob.bin": path}) as source:
            source.configure("blob.bin", pace=0.01)  # about 2.5 s for the whole fill
            url = source.url("blob.bin")
            state = redis.Redis.from_url(redis_url, decode_responses=True)
            async with Swarm(4, [replica.node] * 3, url, tmp_path / "out", sleep_scale=0.25) as swarm:
                running = asyncio.create_task(swarm.run())
                for _ in range(500):
                    if int(state.hget(schema.task_key(task_id(url)), "seedPieces") or 0) >= 2:
                        break
                    await asyncio.sleep(0.02)
                doomed.kill()
                nodes.start_worker()
                results = await running
            stats = source.stats("blob.bin")
        check_swarm(results, sha256)
        # The probe and the killed fill were cut short; the new epoch fetched only the rest (a resume).
        assert (stats["full_gets"], stats["range_gets"]) == (0, 1) and stats["aborted"] >= 2, stats
        assert state.hget(schema.task_key(task_id(url)), "seedEpoch") == "2"
    finally:
        nodes.stop()
        redis.Redis.from_url(redis_url).flushdb()
