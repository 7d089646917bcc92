"""Issue 7 finding 10: no unbounded fan-out and no unbounded listing, through a live supernode (real
HTTP, real Redis). A webhook naming 1,000 artifacts once started 1,000 preheats; /api/v1/peers once
answered 5,010 peers (40 MB) by default."""

from __future__ import annotations

import asyncio

import httpx
from redis.asyncio import Redis

from app.core.config import Settings
from app.peers.models import PeerCreate
from app.peers.service import PeerService
from tests.cluster import TEST_TOKEN
from tests.live import live_supernode

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
SECRET = "hook-secret-listing"


async def test_a_webhook_with_1000_resources_starts_nothing(settings: Settings, redis: Redis) -> None:
    hooked = settings.model_copy(update={"harbor_webhook_secret": SECRET})
    resources = [{"digest": f"sha256:{i:064x}", "tag": f"v{i}", "resource_url": f"127.0.0.1:1/library/x:v{i}"}
                 for i in range(1000)]
    event = {"type": "PUSH_ARTIFACT", "operator": "admin",
             "event_data": {"resources": resources, "repository": {"repo_full_name": "library/x"}}}
    async with live_supernode(hooked) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        answer = await http.post("/api/v1/webhooks/harbor", headers={"Authorization": SECRET}, json=event)
        listed = await http.get("/preheats", headers=AUTH)
        at_the_limit = await http.post("/api/v1/webhooks/harbor", headers={"Authorization": SECRET}, json={
            **event, "event_data": {**event["event_data"], "resources": resources[:hooked.harbor_webhook_max_resources]}
        })
    assert answer.status_code == 400, answer.text
    assert "1000 resources" in answer.json()["message"] and "DF_HARBOR_WEBHOOK_MAX_RESOURCES" in answer.text
    assert listed.json() == []
    assert at_the_limit.status_code == 200, at_the_limit.text
    assert len(at_the_limit.json()["preheats"]) == hooked.harbor_webhook_max_resources == 50


async def test_5010_peers_are_listed_a_page_at_a_time(settings: Settings, redis: Redis) -> None:
    peers = PeerService(redis, settings)
    for batch in range(0, 5010, 50):
        await asyncio.gather(*(peers.create(PeerCreate(ip="10.0.0.1", hostname=f"h{i}", port=20000))
                               for i in range(batch, min(batch + 50, 5010))))
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, headers=AUTH, timeout=30) as http:
        default_v1 = await http.get("/api/v1/peers")
        default_legacy = await http.get("/peers")
        zero = await http.get("/peers?pageSize=0")
        biggest = await http.get("/api/v1/peers?pageSize=1000&pageNum=5")
        too_big = [await http.get(f"{path}?pageSize=1001") for path in ("/peers", "/api/v1/peers")]
    assert default_v1.status_code == default_legacy.status_code == 200
    assert len(default_v1.json()) == len(default_legacy.json()) == len(zero.json()) == 100
    assert len(default_v1.content) < 200_000, len(default_v1.content)
    assert len(biggest.json()) == 11  # 5,010 peers and the seed cache's own: page 5 of 1000 holds the last 11
    assert [answer.status_code for answer in too_big] == [400, 400]


async def test_preheats_are_listed_a_page_at_a_time(settings: Settings, redis: Redis) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, headers=AUTH, timeout=10) as http:
        for i in range(3):
            created = await http.post("/preheats", json={"type": "file", "url": f"http://127.0.0.1:1/f{i}"})
            assert created.status_code == 201, created.text
        first = await http.get("/preheats?limit=2")
        second = await http.get("/api/v1/preheats?limit=2&offset=2")
        too_big = await http.get("/preheats?limit=1001")
    assert len(first.json()) == 2 and len(second.json()) == 1
    assert {p["ID"] for p in first.json()}.isdisjoint(p["ID"] for p in second.json())
    assert too_big.status_code == 400
