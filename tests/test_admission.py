"""Admission of dfget requests (app.api.admission): a bounded number worked on at once, the others in
arrival order, and "ask again" for one that waited too long. The gate on a real loop, then a real
supernode whose only slot a registration holds while the origin is slow to answer its probe."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import httpx
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from app.api.admission import Admission
from app.core.config import Settings
from app.swarm import Dfget
from app.swarm.wire import register_body
from tests.live import live_supernode
from tests.sources import SourceServer


def deferred(handler: str) -> float:
    return REGISTRY.get_sample_value("dragonfly_supernode_dfget_deferred_total", {"handler": handler}) or 0.0


def waiting_now() -> float:
    return REGISTRY.get_sample_value("dragonfly_supernode_dfget_waiting") or 0.0


async def test_requests_past_the_limit_wait_and_are_admitted_in_arrival_order() -> None:
    gate = Admission(2, patience=5.0)
    assert await gate.enter() and await gate.enter()
    admitted: list[int] = []

    async def one(i: int) -> None:
        assert await gate.enter()
        admitted.append(i)
        await asyncio.sleep(0.01)
        gate.leave()

    before = waiting_now()
    queued = []
    for i in range(6):
        queued.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0)  # each one reaches the gate before the next is made
    await asyncio.sleep(0.05)
    assert admitted == [] and waiting_now() - before == 6
    gate.leave()
    gate.leave()
    await asyncio.gather(*queued)
    assert admitted == [0, 1, 2, 3, 4, 5] and waiting_now() == before


async def test_a_request_that_waited_its_patience_is_turned_away_and_the_slot_is_kept() -> None:
    gate = Admission(1, patience=0.2)
    assert await gate.enter()
    started = time.monotonic()
    assert not await gate.enter()
    assert 0.18 <= time.monotonic() - started < 1.0
    gate.leave()
    assert await gate.enter()  # the turned-away request took no slot with it
    gate.leave()


def registration(url: str, cid: str) -> bytes:
    return register_body(
        super_node_ip="127.0.0.1", raw_url=url, task_url=url, cid=cid, ip="127.0.0.1", host_name="h",
        port=15001, path=f"/peer/file/{cid}", version="1.0.6",
    )


async def test_a_busy_replica_answers_ask_again_and_a_dfget_retries_the_same_node(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    data = os.urandom(300 * 1024)
    async with SourceServer() as source:
        source.add("slow", data, delay=2.0)  # its probe holds the replica's one slot for 2 s
        source.add("f", data)
        settings = settings.model_copy(update={"dfget_concurrency": 1, "dfget_queue_seconds": 0.5})
        async with live_supernode(settings) as live, httpx.AsyncClient(base_url=live.api, timeout=10) as http:
            json = {"Content-Type": "application/json"}
            holder = asyncio.create_task(http.post("/peer/registry", content=registration(source.url("slow"), "a"),
                                                   headers=json))
            await asyncio.sleep(0.3)
            pulls, registrations = deferred("/peer/task"), deferred("/peer/registry")
            started = time.monotonic()
            pull = await http.get("/peer/task", params={"taskId": "x" * 64, "srcCid": "b"})
            other = await http.post("/peer/registry", content=registration(source.url("f"), "c"), headers=json)
            assert 0.9 <= time.monotonic() - started < 1.9  # two patiences of 0.5 s, not the 2 s probe
            assert pull.status_code == 200 and pull.json() == {"code": 602, "msg": "supernode busy, please retry"}
            assert other.status_code == 200 and other.json()["code"] == 609
            assert (deferred("/peer/task") - pulls, deferred("/peer/registry") - registrations) == (1, 1)
            held = await holder
            assert held.json()["code"] == 200 and held.json()["data"]["fileLength"] == len(data)

            # A real dfget meeting the same: its 609 costs it a pause on the same node, not a migration.
            blocker = asyncio.create_task(http.post(
                "/peer/registry", content=registration(source.url("slow") + "?again", "d"), headers=json))
            await asyncio.sleep(0.3)
            result = await Dfget([live.node], source.url("f"), tmp_path / "out.bin", version="1.0.6").run()
            await blocker
    assert result.success and not result.back_sourced and result.migrations == 0
    assert result.register_attempts >= 2 and result.registrations == 1
    assert result.sha256 == hashlib.sha256(data).hexdigest()
