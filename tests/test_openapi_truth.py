"""Issue 7 finding 12, the cases schemathesis found, each sent once more by hand through a live supernode
(tests/test_fuzz.py runs the whole document with every check)."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from app.core.config import Settings
from app.main import create_app
from tests.cluster import TEST_TOKEN
from tests.live import live_supernode

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


async def test_a_405_lists_every_method_of_the_path(settings: Settings, redis: Redis) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, headers=AUTH) as http:
        peers = await http.request("OPTIONS", "/peers")
        task = await http.put("/api/v1/tasks/" + "0" * 64)
        ping = await http.get("/_ping")
        ready = await http.get("/readyz")
    assert peers.status_code == task.status_code == 405
    assert peers.headers["allow"] == "GET, POST"  # Starlette's own said "GET": only the first route's methods
    assert task.headers["allow"] == "DELETE, GET"
    assert ping.text == "OK" and ready.json() == {"ready": True}


def test_the_document_declares_bodies_and_answers(settings: Settings) -> None:
    paths = create_app(settings).openapi()["paths"]
    for path in ("/preheats", "/api/v1/preheats", "/oapi/v1/jobs", "/api/v1/webhooks/harbor"):
        assert paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"], path
    assert set(paths["/oapi/v1/jobs"]["post"]["responses"]) >= {"200", "400", "401", "422"}
    assert set(paths["/oapi/v1/jobs/{job_id}"]["get"]["responses"]) >= {"200", "401", "404", "422"}
    assert set(paths["/api/v1/webhooks/harbor"]["post"]["responses"]) >= {"200", "400", "401", "403"}
    assert set(paths["/preheats/{pid}"]["delete"]["responses"]) >= {"200", "401", "403", "404"}
    assert paths["/version"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/VersionInfo"}
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    job = create_app(settings).openapi()["components"]["schemas"]["OapiJob"]
    assert job["properties"]["args"]["type"] == "object"
