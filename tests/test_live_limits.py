"""Live limits (issue 8 part 3): a change on one replica reaches the answers of another within the
stated bound, piece tasks carry it, bad values are refused, changes are audited and survive restarts."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.download.server import start_download_server
from app.limits.model import FIELDS
from app.limits.store import LiveLimits, upload_share_bytes
from app.limits.views import LimitsChange
from app.protocol.taskid import task_id
from app.state import schema
from tests.cluster import TEST_TOKEN, free_port
from tests.live import live_supernode
from tests.preheat_support import at_least, audit_trail
from tests.sources import SourceServer
from tests.test_bridge import registration, wait_status

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def pull(tid: str, cid: str) -> str:
    return f"/peer/task?srcCid={cid}&dstCid=&range=&result=502&status=700&taskId={tid}"


async def piece_tasks(http: httpx.AsyncClient, tid: str, cid: str) -> list[dict[str, Any]]:
    answer = (await http.get(pull(tid, cid))).json()
    assert answer["code"] == 601, answer
    tasks: list[dict[str, Any]] = answer["data"]
    return tasks


async def until(check: Any, bound: float) -> float:
    """Seconds until ``await check()`` is true; fails past ``bound``."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < bound, "not applied within the bound"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def test_the_api_bounds_are_the_model_s() -> None:
    for name, (_, low, high) in FIELDS.items():
        schema = LimitsChange.model_json_schema()["properties"][name]["anyOf"][0]
        assert (schema["minimum"], schema["maximum"]) == (low, high), name


async def test_a_change_on_one_replica_reaches_the_other_s_piece_tasks(settings: Settings, redis: Redis) -> None:
    data = os.urandom(17 * 1024 * 1024)  # 5 pieces: more than one pull's worth
    fast = settings.model_copy(update={"limits_cache_seconds": 0.5})
    async with SourceServer() as source, live_supernode(fast) as a, live_supernode(fast) as b, \
            httpx.AsyncClient(base_url=a.api, headers=AUTH) as on_a, \
            httpx.AsyncClient(base_url=b.api, headers=AUTH) as on_b:
        source.add("f.bin", data)
        url, tid = source.url("f.bin"), task_id(source.url("f.bin"))
        assert (await on_a.post("/peer/registry", json=registration(url, "127.0.0.1-1-1.000"))).json()["code"] == 200
        await wait_status(redis, tid, "SUCCESS")
        first = await piece_tasks(on_b, tid, "127.0.0.1-1-1.000")
        assert len(first) == 4 and {t["downLink"] for t in first} == {0}  # DF_PEER_DOWN_LIMIT, DF_DOWN_LINK_KIB

        put = await on_a.put("/api/v1/limits", json={"downLinkKiB": 20480, "peerDownLimit": 1, "cdnLoadLimit": 10})
        assert put.status_code == 200, put.text
        view = put.json()
        assert view["limits"]["downLinkKiB"] == 20480 and view["overrides"] == {
            "downLinkKiB": 20480, "peerDownLimit": 1, "cdnLoadLimit": 10}
        assert view["defaults"]["downLinkKiB"] == 0 and view["appliedWithinSeconds"] == 0.5

        async def b_carries_it() -> bool:
            # The same request is a load balancer retry: it replays the same pieces, with today's downLink.
            return {t["downLink"] for t in await piece_tasks(on_b, tid, "127.0.0.1-1-1.000")} == {20480}

        took = await until(b_carries_it, 0.5 + 1.0)
        assert took <= 0.5 + 0.5
        # A new client gets one piece at a time now (peerDownLimit 1), though client 1 holds the four
        # seed-cache slots of the old cdnLoadLimit (4).
        assert (await on_a.post("/peer/registry", json=registration(url, "127.0.0.1-2-1.000"))).json()["code"] == 200
        fresh = await piece_tasks(on_b, tid, "127.0.0.1-2-1.000")
        assert len(fresh) == 1 and fresh[0]["downLink"] == 20480
        assert (await on_b.get("/api/v1/limits")).json()["limits"]["peerDownLimit"] == 1

        # One task's own downLink: applied at once (it lives in the task hash that the pull reads).
        task_put = await on_b.put(f"/api/v1/tasks/{tid}/limits", json={"downLinkKiB": 777})
        assert task_put.status_code == 200 and task_put.json() == {"taskId": tid, "downLinkKiB": 777, "override": 777}
        assert {t["downLink"] for t in await piece_tasks(on_a, tid, "127.0.0.1-1-1.000")} == {777}
        assert (await on_a.put(f"/api/v1/tasks/{tid}/limits", json={"downLinkKiB": None})).status_code == 200
        assert {t["downLink"] for t in await piece_tasks(on_a, tid, "127.0.0.1-1-1.000")} == {20480}
        assert (await on_a.put(f"/api/v1/tasks/{'0' * 64}/limits", json={"downLinkKiB": 1})).status_code == 404

        trail = await audit_trail(on_a, redis, at_least("task.limits.changed", 2))
        changed = [e for e in trail if e["action"] == "limits.changed"]
        assert changed and changed[0]["actor"] == "tests"
        assert changed[0]["detail"] == {"set": {"downLinkKiB": 20480, "peerDownLimit": 1, "cdnLoadLimit": 10}}

    # A replica started afterwards (a restart) applies what is in Redis.
    async with live_supernode(fast) as c, httpx.AsyncClient(base_url=c.api, headers=AUTH) as on_c:
        again = (await on_c.get("/api/v1/limits")).json()
        assert again["limits"]["downLinkKiB"] == 20480 and again["limits"]["peerDownLimit"] == 1
        reset = await on_c.put("/api/v1/limits", json=dict.fromkeys(("downLinkKiB", "peerDownLimit", "cdnLoadLimit")))
        assert reset.json()["overrides"] == {} and reset.json()["limits"]["downLinkKiB"] == 0


BAD_BODIES: list[Any] = [
    {"downLinkKiB": -1}, {"downLinkKiB": "5"}, {"downLinkKiB": 1.5}, {"peerDownLimit": 0}, {"peerDownLimit": 65},
    {"cdnLoadLimit": True}, {"bogus": 1}, {}, [1], "x",
]


async def test_bad_values_are_refused_with_a_message(settings: Settings, redis: Redis) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, headers=AUTH) as http:
        for body in BAD_BODIES:
            answer = await http.put("/api/v1/limits", json=body)
            assert answer.status_code == 400 and answer.json()["message"], (body, answer.text)
            bad = await http.put(f"/api/v1/tasks/{'0' * 64}/limits", json=body)
            assert bad.status_code in (400, 404), (body, bad.text)
        assert (await http.put("/api/v1/limits", content=b"{", headers={"Content-Type": "application/json"})
                ).status_code == 400
        assert (await http.get("/api/v1/limits")).json()["overrides"] == {}


async def test_writes_need_a_token(settings: Settings, redis: Redis) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        assert (await http.put("/api/v1/limits", json={"downLinkKiB": 1})).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (await http.put("/api/v1/limits", json={"downLinkKiB": 1}, headers=wrong)).status_code == 403
        assert (await http.get("/api/v1/limits", headers=AUTH)).json()["overrides"] == {}


async def test_the_seed_upload_bandwidth_is_shared_by_the_live_replicas(settings: Settings, redis: Redis) -> None:
    data = os.urandom(3 * 1024 * 1024)
    fast = settings.model_copy(update={"limits_cache_seconds": 0.2})
    async with SourceServer() as source, live_supernode(fast) as sn, \
            httpx.AsyncClient(base_url=sn.api, headers=AUTH) as http:
        source.add("f.bin", data)
        url, tid = source.url("f.bin"), task_id(source.url("f.bin"))
        assert (await http.post("/peer/registry", json=registration(url))).json()["code"] == 200
        await wait_status(redis, tid, "SUCCESS")
        # A piece server of this replica's kind, reading the live limits as a replica does.
        live = LiveLimits(redis, fast)
        port = free_port()
        runner = await start_download_server(LocalSeedStorage(fast.seed_path), "127.0.0.1", port,
                                             upload_rate=lambda: upload_share_bytes(live))
        piece = f"http://127.0.0.1:{port}/download/{tid[:3]}/{tid}"
        half = 512 * 1024

        async def fetch(client: httpx.AsyncClient, start: int) -> bytes:
            answer = await client.get(piece, headers={"Range": f"bytes={start}-{start + half - 1}"})
            assert answer.status_code == 206
            return answer.content

        try:
            async with httpx.AsyncClient(timeout=30) as pieces:
                unlimited = await fetch(pieces, 0)
                put = await http.put("/api/v1/limits", json={"seedUploadKiBps": 1024})
                assert put.json()["seedUploadPerReplicaKiBps"] == 1024  # one live replica: all of it
                await asyncio.sleep(0.3)  # past the cache bound
                started = time.monotonic()
                both = await asyncio.gather(fetch(pieces, 0), fetch(pieces, half))
                took = time.monotonic() - started
                # 1 MiB at 1 MiB/s shared by the two uploads (a 0.1 s burst aside).
                assert took >= 0.85, took
                assert both[0] == unlimited and b"".join(both) == (await fetch(pieces, 0)) + (await fetch(pieces, half))
                # A second live replica halves this one's share.
                await redis.zadd(schema.REPLICAS, {"other-replica": int(time.time() * 1000)})
                await asyncio.sleep(0.3)
                assert await upload_share_bytes(live) == 512 * 1024
                view = (await http.get("/api/v1/limits")).json()
                assert view["liveReplicas"] == 2 and view["seedUploadPerReplicaKiBps"] == 512
                await http.put("/api/v1/limits", json={"seedUploadKiBps": None})
                await asyncio.sleep(0.3)
                assert await upload_share_bytes(live) == 0
        finally:
            await runner.cleanup()
