"""Image preheats against a real registry (distribution 2.8), driven exactly as Harbor drives them:
the 2.1–2.11 legacy sequence (``/_ping``, ``POST /preheats``, ``GET /preheats/{id}``) and the 2.12+
Open API sequence (``/healthy``, ``POST /oapi/v1/jobs``, ``GET /oapi/v1/jobs/{id}``). Real Redis, real
HTTP, real seed-cache files; the registry's blob GETs are counted by a proxy in front of it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.core.config import Settings
from app.protocol.taskid import task_id
from tests.live import live_supernode
from tests.preheat_support import (
    HARBOR_HEADERS,
    RFC3339_MS,
    assert_seeded,
    harbor_legacy_body,
    harbor_oapi_body,
    poll_legacy,
    poll_oapi,
)
from tests.registry import CountingProxy, Pusher, Registry, digest_of, needs_registry, start_registry

pytestmark = [needs_registry, pytest.mark.slow]

MIB = 1024 * 1024
POST_HEADERS = {**HARBOR_HEADERS, "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with start_registry(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture
async def proxy(registry: Registry) -> AsyncIterator[CountingProxy]:
    async with CountingProxy(registry.url) as counting:
        yield counting


def registration(url: str, cid: str) -> dict[str, Any]:
    """What dfget sends when dfdaemon hands it a blob URL (PROTOCOL §14.2)."""
    return {"superNodeIp": "127.0.0.1", "rawUrl": url, "taskUrl": url, "cid": cid, "ip": "127.0.0.1",
            "hostName": "h", "port": 40001, "path": f"/peer/file/{cid}", "version": "1.0.6", "dfdaemon": True,
            "headers": ["Authorization:Bearer docker-token", "User-Agent:docker/19.03.5"]}


def parse_rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_harbor_2_1_sequence_seeds_every_blob_once(
    settings: Settings, redis: Redis, registry: Registry, proxy: CountingProxy
) -> None:
    layers = [os.urandom(200_000), os.urandom(1 * MIB), os.urandom(5 * MIB + 123)]  # the last has two pieces
    async with Pusher(registry.url) as push:
        image = await push.image("library/app21", "v1", layers)
    url = image.manifest_url(proxy.url)
    body = harbor_legacy_body(url, "library/app21", "v1", image.manifest_digest, "harbor-issued-jwt")
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        ping = await http.get("/_ping", headers=HARBOR_HEADERS)
        created = await http.post("/preheats", content=body, headers=POST_HEADERS)
        pid = created.json()["ID"]
        early = (await http.get(f"/preheats/{pid}", headers=HARBOR_HEADERS)).json()
        info = await poll_legacy(http, pid)
        # A docker pull through dfdaemon: dfget registers each blob URL and finds the preheated task.
        registered = [
            (await http.post("/peer/registry", json=registration(image.blob_url(proxy.url, digest), f"c{i}"))).json()
            for i, digest in enumerate(image.blobs)
        ]
        blob_gets = proxy.blob_gets()
        again = await http.post("/preheats", content=body, headers=POST_HEADERS)
        second = await poll_legacy(http, again.json()["ID"])
        listed = (await http.get("/preheats", headers=HARBOR_HEADERS)).json()

    assert ping.status_code == 200 and ping.text == "OK"
    assert created.status_code == 201 and pid == task_id(url)  # the legacy id (PROTOCOL §13.1)
    assert set(early) == {"ID", "status", "startTime", "finishTime", "errorMsg"}
    assert early["status"] in ("WAITING", "RUNNING", "SUCCESS")
    if early["status"] != "SUCCESS":
        assert early["finishTime"] == "1970-01-01T00:00:00.000Z"
    assert info["status"] == "SUCCESS" and info["errorMsg"] == ""
    assert RFC3339_MS.match(info["startTime"]) and RFC3339_MS.match(info["finishTime"])
    assert parse_rfc3339(info["finishTime"]) >= parse_rfc3339(info["startTime"])
    for digest in image.blobs:  # config and layers
        assert_seeded(settings.seed_path, task_id(image.blob_url(proxy.url, digest)), digest)
    assert [r["code"] for r in registered] == [200] * len(image.blobs)
    assert [r["data"]["taskId"] for r in registered] == [task_id(image.blob_url(proxy.url, d)) for d in image.blobs]
    # Each blob was fetched once by its seed (after one header-only probe); the re-create fetched nothing.
    assert blob_gets == 2 * len(image.blobs)
    assert again.status_code == 201 and again.json() == {"ID": pid}
    assert second["status"] == "SUCCESS" and proxy.blob_gets() == blob_gets
    record = next(item for item in listed if item["ID"] == pid)
    assert record["Type"] == "image" and record["Status"] == "SUCCESS" and record["Headers"] == {"Authorization": "***"}
    assert sorted(record["Children"]) == sorted(task_id(image.blob_url(proxy.url, d)) for d in image.blobs)


async def test_harbor_2_12_open_api_sequence_on_an_oci_index(
    settings: Settings, redis: Redis, registry: Registry, proxy: CountingProxy
) -> None:
    amd64, arm64 = [os.urandom(300_000), os.urandom(700_000)], [os.urandom(400_000)]
    async with Pusher(registry.url) as push:
        images = await push.index("library/multi", "v2", {"linux/amd64": amd64, "linux/arm64": arm64})
    url = f"{proxy.url}/v2/library/multi/manifests/v2"
    everything = {images[p].blob_url(proxy.url, d) for p in images for d in images[p].blobs}
    arm_only = {images["linux/arm64"].blob_url(proxy.url, d) for d in images["linux/arm64"].blobs}
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        healthy = await http.get("/healthy", headers=HARBOR_HEADERS)
        created = await http.post("/oapi/v1/jobs", content=harbor_oapi_body(url, "harbor-jwt"), headers=POST_HEADERS)
        job = created.json()
        final = await poll_oapi(http, job["id"])
        gets = proxy.blob_gets()
        # Dragonfly2's args.platform (Harbor does not send it, the Open API takes it): one platform only.
        body = {"type": "preheat", "args": {"type": "image", "url": url, "platform": "linux/arm64"}}
        arm_job = (await http.post("/oapi/v1/jobs", json=body, headers=HARBOR_HEADERS)).json()
        arm_final = await poll_oapi(http, arm_job["id"])

    assert healthy.status_code == 200
    assert created.status_code == 200 and isinstance(job["id"], int) and job["state"] == "PENDING"
    assert parse_rfc3339(job["created_at"]) and parse_rfc3339(job["updated_at"])
    assert final["id"] == job["id"] and final["state"] == "SUCCESS"
    (state,) = final["result"]["job_states"]
    (result,) = state["results"]
    assert state["error"] == "" and state["state"] == "SUCCESS"
    assert {task["url"] for task in result["success_tasks"]} == everything
    assert result["failure_tasks"] == [] and isinstance(result["scheduler_cluster_id"], int)
    assert all(set(task) == {"url", "hostname", "ip"} for task in result["success_tasks"])
    for image in images.values():
        for digest in image.blobs:
            assert_seeded(settings.seed_path, task_id(image.blob_url(proxy.url, digest)), digest)
    assert arm_job["id"] > job["id"] and arm_final["state"] == "SUCCESS"
    arm_tasks = arm_final["result"]["job_states"][0]["results"][0]["success_tasks"]
    assert {task["url"] for task in arm_tasks} == arm_only
    assert proxy.blob_gets() == gets  # all of them were seeded already


async def test_a_missing_blob_fails_the_preheat_on_both_contracts(
    settings: Settings, redis: Redis, registry: Registry, proxy: CountingProxy
) -> None:
    good, lost = os.urandom(100_000), os.urandom(150_000)
    async with Pusher(registry.url) as push:
        image = await push.image("library/broken", "v1", [good, lost])
        await push.delete_blob("library/broken", digest_of(lost))
    url = image.manifest_url(proxy.url)
    lost_url = image.blob_url(proxy.url, digest_of(lost))
    body = harbor_legacy_body(url, "library/broken", "v1", image.manifest_digest, "jwt")
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        pid = (await http.post("/preheats", content=body, headers=POST_HEADERS)).json()["ID"]
        legacy = await poll_legacy(http, pid)
        api_v1 = (await http.get(f"/api/v1/preheats/{pid}", headers=HARBOR_HEADERS)).json()
        job = (await http.post("/oapi/v1/jobs", content=harbor_oapi_body(url, "jwt"), headers=POST_HEADERS)).json()
        final = await poll_oapi(http, job["id"])
        missing_tag = (await http.post("/preheats", content=harbor_legacy_body(
            image.manifest_url(proxy.url, "nope"), "library/broken", "nope", "", "jwt"), headers=POST_HEADERS)).json()
        no_manifest = await poll_legacy(http, missing_tag["ID"])

    assert legacy["status"] == "FAIL"  # what every Harbor version stops polling on
    assert lost_url in legacy["errorMsg"] and "404" in legacy["errorMsg"]
    assert "preheat task already exists" not in legacy["errorMsg"]  # Harbor 2.8+ would re-query another id
    assert api_v1["status"] == "FAILED"
    by_url = {layer["url"]: layer for layer in api_v1["progress"]}
    assert by_url[lost_url]["status"] == "FAILED"
    assert by_url[image.blob_url(proxy.url, digest_of(good))]["status"] == "SUCCESS"
    assert final["state"] == "FAILURE"
    (state,) = final["result"]["job_states"]
    assert lost_url in state["error"]
    (result,) = state["results"]
    assert [task["url"] for task in result["failure_tasks"]] == [lost_url]
    assert "404" in result["failure_tasks"][0]["description"]
    assert image.blob_url(proxy.url, digest_of(good)) in {task["url"] for task in result["success_tasks"]}
    assert no_manifest["status"] == "FAIL" and "404" in no_manifest["errorMsg"] and "manifests/nope" in no_manifest[
        "errorMsg"]

