"""The preheat endpoints without a registry: auth, body parsing, ids, file preheats, restarts, limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from app.core.config import Settings
from app.preheat.model import PreheatRequest
from app.preheat.store import PreheatStore
from app.protocol.taskid import task_id
from app.state import schema
from tests.cluster import TEST_TOKEN
from tests.live import live_supernode
from tests.preheat_support import AUTH, assert_seeded, poll_legacy, poll_oapi
from tests.sources import SourceServer

WRONG = {"Authorization": "Bearer not-the-token"}
UNAUTHORIZED = {"message": "Unauthorized"}


async def test_auth_of_both_contracts(settings: Settings, redis: Redis) -> None:
    body = {"type": "file", "url": "http://127.0.0.1:1/x"}
    job = {"type": "preheat", "args": body}
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        legacy = [await http.post("/preheats", json=body), await http.post("/preheats", json=body, headers=WRONG),
                  await http.delete("/api/v1/preheats/x"), await http.delete("/preheats/x", headers=WRONG),
                  await http.get("/preheats/x")]
        oapi = [await http.post("/oapi/v1/jobs", json=job), await http.post("/oapi/v1/jobs", json=job, headers=WRONG),
                await http.get("/oapi/v1/jobs/1"), await http.get("/oapi/v1/jobs/1", headers=WRONG)]
        # Harbor's BASIC mode sends "username:<token>" or "password:<token>" (HARBOR.md §1).
        basic = "Basic " + base64.b64encode(f"password:{TEST_TOKEN}".encode()).decode()
        harbor_basic = await http.get("/preheats", headers={"Authorization": basic})
        healthy = await http.get("/healthy")
    assert [(r.status_code, r.json()["code"]) for r in legacy] == [(401, 401), (403, 403), (401, 401), (403, 403),
                                                                   (401, 401)]
    assert [(r.status_code, r.json()) for r in oapi] == [(401, UNAUTHORIZED)] * 4
    assert harbor_basic.status_code == 200 and healthy.status_code == 200 and healthy.text == "OK"


async def test_legacy_bodies_are_read_like_go_did(settings: Settings, redis: Redis) -> None:
    url = "http://127.0.0.1:1/file.bin"
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, headers=AUTH) as http:
        loose = await http.post("/preheats", content=orjson.dumps({
            "TYPE": "FILE", "Url": url, "image": "library/x", "tag": "1", "digest": "sha256:00", "scope": "all_peers",
            "extra_attrs": {"cluster_ids": [1]},
            "Headers": {"X-Num": 5, "X-Flag": True, "X-Null": None, "Range": "bytes=0-9"},
        }))
        same = await http.post("/v1/preheats", json={"type": "file", "url": url, "headers": {"Range": "bytes=0-9"}})
        listed = (await http.get("/preheats")).json()
        errors = [
            await http.post("/preheats", content=b"{not json"),
            await http.post("/preheats", content=b""),
            await http.post("/preheats", json={"type": "blob", "url": url}),
            await http.post("/preheats", json={"type": "file", "url": 42}),
            await http.post("/preheats", json={"type": "file", "url": url, "headers": ["a:b"]}),
            await http.post("/preheats", json={"type": "image", "url": "http://127.0.0.1:1/not/a/manifest"}),
            await http.post("/preheats", json=["type", "file"]),
        ]
        unknown = await http.get("/preheats/" + "0" * 64)
        unknown_delete = await http.delete("/api/v1/preheats/nope")
        pid = loose.json()["ID"]
        deleted = await http.delete(f"/preheats/{pid}")
        gone = await http.get(f"/v1.0/preheats/{pid}")
    assert loose.status_code == 201 and same.status_code == 201 and same.json() == loose.json()
    # The legacy id formula: the Range header joins the id (PROTOCOL §13.1), other headers do not.
    assert pid == task_id(url, headers={"Range": "bytes=0-9"})
    record = next(item for item in listed if item["ID"] == pid)
    assert record["Headers"]["X-Num"] == "5" and record["Headers"]["X-Flag"] == "true" and "X-Null" not in record[
        "Headers"]
    assert all(e.status_code == 400 and e.json()["code"] == 400 and e.json()["message"] for e in errors), [
        e.text for e in errors]
    assert errors[2].json()["message"] == "blob isn't supported"
    assert unknown.status_code == 404 and unknown.json() == {"code": 404, "message": "0" * 64 + " doesn't exists"}
    assert unknown_delete.status_code == 404
    assert deleted.status_code == 200 and deleted.json() is True and gone.status_code == 404


async def test_open_api_validation(settings: Settings, redis: Redis) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, headers=AUTH) as http:
        answers = [
            await http.post("/oapi/v1/jobs", content=b"{"),
            await http.post("/oapi/v1/jobs", json={"type": "sync_peers", "args": {}}),
            await http.post("/oapi/v1/jobs", json={"type": "preheat", "args": {"type": "image"}}),
            await http.post("/oapi/v1/jobs", json={"type": "preheat", "args": {"type": "file", "url": "http://a/b",
                                                                                 "concurrent_count": -1}}),
            await http.post("/oapi/v1/jobs", json={"type": "preheat", "args": {"type": "file", "url": "http://a/b",
                                                                                 "timeout": "30m"}}),
            await http.get("/oapi/v1/jobs/abc"),
        ]
        missing = await http.get("/oapi/v1/jobs/999999")
    assert [a.status_code for a in answers] == [422] * 6, [a.text for a in answers]
    assert all(isinstance(a.json()["errors"], str) for a in answers)
    assert missing.status_code == 404


async def test_file_preheats_seed_the_task_a_dfget_would_use(settings: Settings, redis: Redis) -> None:
    data = os.urandom(6 * 1024 * 1024 + 11)
    async with SourceServer() as source, live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("f.bin", data)
        raw = source.url("f.bin") + "?k=v&Signature=abc"
        created = await http.post("/preheats", json={"type": "file", "url": raw, "filter": "Signature&Expires"},
                                  headers=AUTH)
        info = await poll_legacy(http, created.json()["ID"])
        # dfget -f Signature&Expires on the same URL: the same task, already seeded (PROTOCOL §7.1).
        filtered = source.url("f.bin") + "?k=v"
        registered = (await http.post("/peer/registry", json={
            "superNodeIp": "127.0.0.1", "rawUrl": raw, "taskUrl": filtered, "cid": "c1", "ip": "127.0.0.1",
            "hostName": "h", "port": 40001, "path": "/peer/file/c1", "version": "1.0.6"})).json()
        gets = source.stats("f.bin").full_gets
    assert created.json()["ID"] == task_id(filtered) and info["status"] == "SUCCESS"
    assert registered["code"] == 200 and registered["data"]["taskId"] == task_id(filtered)
    assert_seeded(settings.seed_path, task_id(filtered), "sha256:" + hashlib.sha256(data).hexdigest())
    assert gets == 1


async def test_a_failed_preheat_is_restarted_by_the_next_create(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        blob = source.add("flaky.bin", b"payload", status=500)
        body = {"type": "file", "url": source.url("flaky.bin")}
        pid = (await http.post("/preheats", json=body, headers=AUTH)).json()["ID"]
        failed = await poll_legacy(http, pid)
        blob.status = 200
        again = await http.post("/preheats", json=body, headers=AUTH)
        healed = await poll_legacy(http, pid)
    assert failed["status"] == "FAIL" and "500" in failed["errorMsg"]
    assert again.status_code == 201 and again.json() == {"ID": pid}  # never 208 (HARBOR.md §2 rec. 1)
    assert healed["status"] == "SUCCESS" and healed["errorMsg"] == ""


async def test_a_job_whose_runner_died_is_run_again_by_the_next_poll(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("f.bin", b"x" * 1000)
        # A job some replica created and dispatched, and whose runner then vanished: lease long lapsed.
        pid, outcome = await PreheatStore(redis).create(PreheatRequest("file", source.url("f.bin")), "tests", "legacy")
        await redis.hset(schema.preheat_key(pid), mapping={"status": "RUNNING", "lease": int(time.time() * 1000) - 1})
        info = await poll_legacy(http, pid)
    assert outcome.epoch == 1 and info["status"] == "SUCCESS"
    assert int(await redis.hget(schema.preheat_key(pid), "epoch") or 0) == 2  # type: ignore[misc]


async def test_the_cluster_limit_and_the_job_timeout(settings: Settings, redis: Redis) -> None:
    one = settings.model_copy(update={"preheat_cluster_concurrency": 1})
    async with SourceServer() as source, live_supernode(one) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        for i in range(3):
            source.add(f"slow{i}.bin", os.urandom(64 * 1024), delay=0.3)
        started = time.monotonic()
        pids = [(await http.post("/preheats", json={"type": "file", "url": source.url(f"slow{i}.bin")},
                                 headers=AUTH)).json()["ID"] for i in range(3)]
        most = 0
        polls = [asyncio.create_task(poll_legacy(http, pid)) for pid in pids]
        while not all(p.done() for p in polls):
            most = max(most, int(await redis.zcard(schema.PREHEAT_SLOTS)))
            await asyncio.sleep(0.01)
        finals = [p.result() for p in polls]
        elapsed = time.monotonic() - started
        source.add("stuck.bin", b"x", delay=5)
        job = (await http.post("/oapi/v1/jobs", headers=AUTH, json={"type": "preheat", "args": {
            "type": "file", "url": source.url("stuck.bin"), "timeout": 1_000_000_000}})).json()
        timed_out = await poll_oapi(http, job["id"])
    assert [f["status"] for f in finals] == ["SUCCESS"] * 3
    assert most == 1 and elapsed >= 3 * 0.3  # one preheat seed at a time, cluster-wide (probe + seed each)
    assert timed_out["state"] == "FAILURE" and "timed out after 1s" in timed_out["result"]["job_states"][0]["error"]


@pytest.mark.parametrize("path", ["/preheats", "/api/v1/preheats"])
async def test_a_repeated_create_of_a_running_preheat_joins_it(settings: Settings, redis: Redis, path: str) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        source.add("slow.bin", b"y" * 1000, delay=0.5)
        body = {"type": "file", "url": source.url("slow.bin")}
        first, second = await asyncio.gather(http.post(path, json=body, headers=AUTH),
                                             http.post(path, json=body, headers=AUTH))
        info = await poll_legacy(http, first.json()["ID"], path=path)
        epoch = await redis.hget(schema.preheat_key(first.json()["ID"]), "epoch")
    assert first.status_code == second.status_code == 201 and first.json() == second.json()
    assert info["status"] == "SUCCESS" and epoch == "1"
