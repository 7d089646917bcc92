"""Registration and seeding behaviour through a live supernode (real HTTP, real Redis, real files)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from app.core.config import Settings
from app.protocol.taskid import task_id
from app.state.schema import task_key, task_prefix
from app.swarm import DfgetResult, Swarm
from tests.live import live_supernode
from tests.redis_servers import RedisServer
from tests.sources import SourceServer


def registration(url: str, cid: str = "127.0.0.1-1-1.000") -> dict[str, Any]:
    return {"superNodeIp": "127.0.0.1", "rawUrl": url, "taskUrl": url, "cid": cid, "ip": "127.0.0.1",
            "hostName": "h", "port": 40001, "path": f"/peer/file/{cid}", "version": "1.0.6"}


async def wait_status(redis: Redis, tid: str, wanted: str) -> dict[str, str]:
    for _ in range(400):
        task: dict[str, str] = await redis.hgetall(task_key(tid))
        if task.get("cdnStatus") == wanted:
            return task
        await asyncio.sleep(0.025)
    raise AssertionError(f"task {tid} never reached {wanted}: {task}")


async def test_an_unchanged_source_is_not_downloaded_again_after_the_task_expired(
    settings: Settings, redis: Redis
) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)
    async with SourceServer() as source, live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("f.bin", data)
        url, tid = source.url("f.bin"), task_id(source.url("f.bin"))
        assert (await http.post("/peer/registry", json=registration(url))).json()["code"] == 200
        first = await wait_status(redis, tid, "SUCCESS")
        # The task's state expires (TTL); the seed-cache files stay, as in Go's task GC.
        await redis.delete(*[key async for key in redis.scan_iter(match=f"{task_prefix(tid)}*")])
        assert (await http.post("/peer/registry", json=registration(url, "127.0.0.1-2-2.000"))).json()["code"] == 200
        second = await wait_status(redis, tid, "SUCCESS")
        stats = source.stats("f.bin")
    assert stats.full_gets == 1 and stats.not_modified == 1
    assert first["realMd5"] == second["realMd5"] == hashlib.md5(data).hexdigest()
    assert first["fileLength"] == second["fileLength"] == str(len(data) + 5 * 3)


async def test_a_missing_source_is_refused_fast_and_remembered(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("gone.bin", b"x", status=404)
        url = source.url("gone.bin")
        answers = [await http.post("/peer/registry", json=registration(url, f"127.0.0.1-{i}-1.0")) for i in range(3)]
        stats = source.stats("gone.bin")
    for answer in answers:
        assert answer.status_code == 200
        assert answer.json()["code"] == 607 and "404" in answer.json()["msg"]
    assert stats.requests == 1  # the verdict is shared for DF_FAIL_ACCESS_SECONDS


async def test_a_truncated_source_fails_the_seed_and_pulls_answer_500(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("cut.bin", os.urandom(6 * 1024 * 1024), truncate=True)
        url = source.url("cut.bin")
        tid = task_id(url)
        assert (await http.post("/peer/registry", json=registration(url))).json()["code"] == 200
        task = await wait_status(redis, tid, "FAILED")
        pull = await http.get(f"/peer/task?srcCid=127.0.0.1-1-1.000&dstCid=&range=&result=502&status=700&taskId={tid}")
    assert task["seedReason"] == "truncated"
    assert pull.status_code == 200
    assert pull.json()["code"] == 500 and "cdn status is fail" in pull.json()["msg"]


async def test_no_content_length_gives_unknown_length_then_the_real_one(settings: Settings, redis: Redis) -> None:
    data = os.urandom(5 * 1024 * 1024)
    async with SourceServer() as source, live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("chunked.bin", data, chunked=True)
        url = source.url("chunked.bin")
        answer = (await http.post("/peer/registry", json=registration(url))).json()
        task = await wait_status(redis, task_id(url), "SUCCESS")
    assert answer["data"]["fileLength"] == -1 and answer["data"]["pieceSize"] == 4194304
    assert task["pieceTotal"] == "2" and task["fileLength"] == str(len(data) + 10)


async def test_a_swarm_rides_out_redis_dropping_every_connection(settings: Settings, tmp_path: Path) -> None:
    data = os.urandom(24 * 1024 * 1024)
    # A Redis of its own: CLIENT KILL drops every client of the server, which on the shared test Redis
    # would hit the other pytest-xdist worker and any concurrent run too.
    with RedisServer(tmp_path / "redis") as server:
        own = settings.model_copy(update={"redis_url": server.url(0)})
        redis = Redis.from_url(server.url(0))
        try:
            results, blips = await _swarm_under_kills(own, redis, data, tmp_path)
        finally:
            await redis.aclose()
    assert blips >= 3
    digest = hashlib.sha256(data).hexdigest()
    for result in results:
        assert result.success and result.sha256 == digest, result.error
        assert not result.back_sourced and not result.supernode_5xx
        assert result.migrations == 0 and 500 not in result.codes("/peer/task")  # retried, not failed


async def _swarm_under_kills(
    settings: Settings, redis: Redis, data: bytes, tmp_path: Path
) -> tuple[list[DfgetResult], int]:
    async with SourceServer() as source, live_supernode(settings) as sn:
        source.add("f.bin", data, pace=0.005)
        async with Swarm(4, [sn.node] * 3, source.url("f.bin"), tmp_path / "out", sleep_scale=0.25) as swarm:
            running = asyncio.create_task(swarm.run())
            blips = 0
            while not running.done() and blips < 8:
                await asyncio.sleep(0.25)
                # Every connection of every client is dropped, as in a failover or a network blip.
                blips += 1 if await redis.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") else 0
            results = await running
    return results, blips


def _registry_round_trips() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(
        "dragonfly_supernode_redis_round_trips_sum", {"handler": "/peer/registry"}
    ) or 0.0


async def test_a_herd_of_first_registrations_shares_one_probe_wait(settings: Settings, redis: Redis) -> None:
    """60 clients register a new task at once while its source takes 1 s to answer the probe: they wait
    on the one probe together, instead of each polling Redis every 50 ms (which at 1,000 clients used
    up the Redis connection pool and pushed registrations past dfget's 5 s)."""
    async with SourceServer() as source, live_supernode(settings) as sn:
        source.add("herd.bin", os.urandom(1000), delay=1.0)
        url = source.url("herd.bin")
        before = _registry_round_trips()
        async with httpx.AsyncClient(base_url=sn.api, timeout=15) as http:
            answers = await asyncio.gather(*(
                http.post("/peer/registry", json=registration(url, f"127.0.0.1-{i}-1.000")) for i in range(60)
            ))
        assert [a.json()["code"] for a in answers] == [200] * 60
        trips = _registry_round_trips() - before
        # About 10 per registration (two register script calls, audit, the probe lock); polling alone
        # would add ~3 per waiter every ~50 ms for the second the probe takes (measured: 4,149 in all).
        assert trips < 60 * 15, trips
