"""Redis failures under a live swarm: Sentinel failover (master SIGKILLed while the seed runs, and
after it finished), a restart with AOF, and Redis unreachable (SIGSTOP) for 10 s.

Three replicas and a Celery worker behind the real haproxy (deploy/haproxy/haproxy.cfg), emulated
dfget 1.0.6 clients with ``--node VIP,VIP,VIP`` (two migrations to spare, as PROTOCOL §5.1 gives
1.0.5+), real Redis and real sentinels. Every download is checked by sha256; a back-to-source fails the
test, and so does a client that gets no piece and no finish for more than 10 s after the outage.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from app.protocol.codes import Code
from app.protocol.taskid import task_id
from app.state import schema
from app.swarm import DfgetResult, Swarm
from tests.cluster import Cluster
from tests.haproxy import VipCluster
from tests.redis_servers import RedisServer, SentinelTopology
from tests.sources import SourceProcess, random_file

pytestmark = pytest.mark.slow

SIZE = 48 * 1024 * 1024
CLIENTS = 8
RATE = 3 * 1024 * 1024  # bytes/s per client: the swarm lasts ~16 s, long enough to fail Redis inside it
STALL_LIMIT = 10.0  # no client waits more than this past the outage for its next piece or its finish


@dataclass
class Outcome:
    results: list[DfgetResult]
    outage: tuple[float, float]  # monotonic start and end of the fault as the test caused it
    recovered_after: float  # from the fault's start until every replica was ready again
    source: dict[str, int]


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    return random_file(tmp_path / "source.bin", SIZE)


async def all_ready(vip: VipCluster) -> bool:
    async with httpx.AsyncClient(timeout=1.0) as http:
        for replica in vip.cluster.replicas:
            try:
                if (await http.get(f"http://{replica.node}/readyz")).status_code != 200:
                    return False
            except httpx.HTTPError:
                return False
    return True


async def run_with_fault(
    tmp_path: Path, state_url: str, broker_url: str, payload: tuple[Path, str],
    ready_for_fault: Callable[[redis.Redis, str], bool], fault: Callable[[], Awaitable[None]],
) -> Outcome:
    path, _ = payload
    redis.Redis.from_url(broker_url).flushdb()
    cluster = Cluster(tmp_path / "cluster", state_url, broker_url)
    cluster.workdir.mkdir()
    vip = VipCluster(cluster).start()
    try:
        cluster.start_worker()
        probe = redis.Redis.from_url(state_url, decode_responses=True) if "sentinel" not in state_url else None
        with SourceProcess({"blob.bin": path}) as source:
            # The seed takes several seconds, so a fault can hit it while it runs.
            source.configure("blob.bin", pace=0.02)
            url = source.url("blob.bin")
            tid = task_id(url)
            async with Swarm(CLIENTS, [vip.api_vip] * 3, url, tmp_path / "out", versions=["1.0.6"],
                             rate_limit=RATE, timeout=240) as swarm:
                running = asyncio.create_task(swarm.run())
                deadline = time.monotonic() + 60
                while not ready_for_fault(probe or sentinel_client(state_url), tid):
                    assert not running.done(), ("the swarm ended before the fault", [
                        (r.success, r.back_sourced, r.error, r.codes("/peer/registry")[:3]) for r in running.result()
                    ], vip.logs())
                    assert time.monotonic() < deadline, ("the swarm never reached the point of the fault",
                                                         (probe or sentinel_client(state_url)).hgetall(
                                                             schema.task_key(tid)), vip.logs())
                    await asyncio.sleep(0.05)
                assert not running.done()
                began = time.monotonic()
                await fault()
                ended = time.monotonic()
                while not await all_ready(vip):
                    assert time.monotonic() - began < 60, vip.logs()
                    await asyncio.sleep(0.05)
                recovered = time.monotonic() - began
                results = await running
            stats = source.stats("blob.bin")
        return Outcome(results, (began, ended), recovered, stats)
    finally:
        vip.stop()


_sentinel_clients: dict[str, redis.Redis] = {}


def sentinel_client(url: str) -> redis.Redis:
    """A test-side reader of the state behind a Sentinel URL (through the sentinels, as the replicas)."""
    if url not in _sentinel_clients:
        from redis.sentinel import Sentinel

        hosts = [(h.split(":")[0], int(h.split(":")[1])) for h in url.split("//")[1].split("/")[0].split(",")]
        db = int(url.split("/")[3].split("?")[0])
        _sentinel_clients[url] = Sentinel(hosts, socket_timeout=1.0, db=db, decode_responses=True).master_for(
            "mymaster", socket_timeout=1.0
        )
    return _sentinel_clients[url]


def seeding(min_pieces: int) -> Callable[[redis.Redis, str], bool]:
    """The seed runs and has published pieces; clients are fetching them."""
    def check(state: redis.Redis, tid: str) -> bool:
        try:
            task = state.hmget(schema.task_key(tid), ["cdnStatus", "seedPieces"])
            return task[0] == "RUNNING" and int(task[1] or 0) >= min_pieces and state.scard(
                schema.holders_key(tid, 0)) >= 1
        except redis.RedisError:
            return False
    return check


def seeded(state: redis.Redis, tid: str) -> bool:
    """The seed is complete; the swarm is still downloading from it and from each other."""
    try:
        return state.hget(schema.task_key(tid), "cdnStatus") == "SUCCESS" and state.scard(
            schema.holders_key(tid, 2)) >= 2
    except redis.RedisError:
        return False


def check_outcome(outcome: Outcome, sha256: str) -> None:
    for result in outcome.results:
        assert result.success, (result.error, result.traceback)
        assert result.sha256 == sha256
        assert not result.back_sourced, result.error
        assert not result.md5_mismatch
    _, end = outcome.outage
    for result in outcome.results:
        progress = [e.at for e in result.exchanges if e.endpoint == "/peer/task"
                    and e.code in (Code.PEER_CONTINUE, Code.PEER_FINISH)]
        after = [at for at in progress if at >= end]
        if after and any(at < end for at in progress):
            waited = after[0] - end
            assert waited <= STALL_LIMIT, f"{result.cid} waited {waited:.1f}s past the outage"


def figures(name: str, outcome: Outcome) -> str:
    migrations = sum(r.migrations for r in outcome.results)
    registrations = sum(r.registrations for r in outcome.results)
    waits = sum(1 for r in outcome.results for e in r.exchanges if e.code in (Code.PEER_WAIT, Code.WAIT_AUTH))
    return (f"{name}: {len(outcome.results)} done, 0 back-to-source, recovered in {outcome.recovered_after:.1f}s "
            f"(fault {outcome.outage[1] - outcome.outage[0]:.1f}s), migrations {migrations}, registrations "
            f"{registrations}, wait answers {waits}, source full GETs {outcome.source['full_gets']}")


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    with SentinelTopology(tmp_path / "sentinel") as sentinels:
        yield sentinels


@pytest.mark.parametrize("when", ["while-seeding", "after-seeding"])
async def test_sentinel_failover_mid_swarm_loses_no_download(
    tmp_path: Path, broker_url: str, payload: tuple[Path, str], topology: SentinelTopology, when: str
) -> None:
    failover: dict[str, float] = {}

    async def kill_master() -> None:
        topology.kill_master()
        _, failover["seconds"] = await asyncio.to_thread(topology.wait_failover, 30.0)

    outcome = await run_with_fault(
        tmp_path, topology.url(0), broker_url, payload, seeding(2) if when == "while-seeding" else seeded,
        kill_master,
    )
    print(figures(f"sentinel failover {when} (sentinels announced it after {failover['seconds']:.1f}s)", outcome))
    check_outcome(outcome, payload[1])


async def test_redis_restart_with_aof_mid_swarm(tmp_path: Path, broker_url: str, payload: tuple[Path, str]) -> None:
    server = RedisServer(tmp_path / "redis", aof=True).start()

    async def restart() -> None:
        server.kill()
        # Down for 2 s, as a crashed Redis under a supervisor: connections are refused meanwhile. The
        # downtime is the condition under test, so it is a plain wait.
        await asyncio.sleep(2)
        await asyncio.to_thread(server.restart)

    try:
        outcome = await run_with_fault(tmp_path, server.url(0), broker_url, payload, seeding(2), restart)
    finally:
        server.kill()
    print(figures("redis kill -9 and restart with AOF", outcome))
    check_outcome(outcome, payload[1])


# Solo (run alone by make test): STALL_LIMIT bounds how fast the cluster resumes after the outage, and
# the other pytest-xdist worker's load on this 2-core machine stretched that past it (10.5 s, seen once).
@pytest.mark.solo
async def test_redis_unreachable_for_ten_seconds(tmp_path: Path, broker_url: str, payload: tuple[Path, str]) -> None:
    server = RedisServer(tmp_path / "redis", aof=True).start()

    async def blackout() -> None:
        server.pause()  # every connection hangs, as in a network partition
        await asyncio.sleep(10)  # the outage itself is the condition under test: exactly 10 s
        server.resume()

    try:
        outcome = await run_with_fault(tmp_path, server.url(0), broker_url, payload, seeding(2), blackout)
    finally:
        server.resume()
        server.kill()
    print(figures("redis unreachable for 10 s", outcome))
    check_outcome(outcome, payload[1])
