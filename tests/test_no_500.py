"""Issue 7 finding 6: the inputs that used to give code 500 or HTTP 500 (with a traceback in the log) get
the legacy code 501 on dfget's routes and a 4xx on the REST routes, through a live supernode (real HTTP,
real Redis). Each test sends the very input that was found."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.bridge.registration import probe_geometry
from app.cdn.source import make_source_client
from app.core.config import Settings
from app.core.redis import create_redis
from app.protocol.taskid import task_id
from app.state.schema import task_key
from app.state.store import ClusterState
from tests.cluster import TEST_TOKEN
from tests.live import live_supernode
from tests.sources import SourceServer

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
IDNA_INVALID = "http://xn--zz--.com/x"
SUPERSCRIPT_RANGE = "²-³"
HUGE_NUMBER = "9" * 4301  # above Python's int() digit limit (4,300)


def registration(url: str, cid: str = "127.0.0.1-1-1.000", headers: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"superNodeIp": "127.0.0.1", "rawUrl": url, "taskUrl": url, "cid": cid,
                            "ip": "127.0.0.1", "hostName": "h", "port": 40001, "path": f"/peer/file/{cid}",
                            "version": "1.0.6"}
    if headers is not None:
        body["headers"] = headers
    return body


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    tracebacks = [record.getMessage() for record in caplog.records if record.exc_info]
    assert not tracebacks, tracebacks


async def test_an_idna_invalid_host_is_a_501_and_a_400_everywhere(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"harbor_webhook_secret": "s3cret-hook"})
    event = {"type": "PUSH_ARTIFACT", "operator": "admin", "event_data": {
        "resources": [{"digest": "sha256:" + "ab" * 32, "tag": "v1", "resource_url": "xn--zz--.com/library/x:v1"}],
        "repository": {"repo_full_name": "library/x"}}}
    caplog.set_level(logging.INFO)
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        registered = await http.post("/peer/registry", json=registration(IDNA_INVALID))
        legacy = await http.post("/preheats", headers=AUTH, json={"type": "file", "url": IDNA_INVALID})
        v1 = await http.post("/api/v1/preheats", headers=AUTH, json={"type": "file", "url": IDNA_INVALID})
        job = await http.post("/oapi/v1/jobs", headers=AUTH,
                              json={"type": "preheat", "args": {"type": "file", "url": IDNA_INVALID}})
        hook = await http.post("/api/v1/webhooks/harbor", headers={"Authorization": "s3cret-hook"}, json=event)
        preheats = await http.get("/preheats", headers=AUTH)
    assert registered.status_code == 200 and registered.json()["code"] == 501, registered.text
    assert "xn--zz--.com" in registered.json()["msg"]
    for answer in (legacy, v1, hook):
        assert answer.status_code == 400, answer.text
    assert job.status_code == 422, job.text
    assert preheats.json() == []  # nothing was created
    no_traceback(caplog)


@pytest.mark.parametrize("bad", [SUPERSCRIPT_RANGE, f"{HUGE_NUMBER}-{HUGE_NUMBER}", f"0-{HUGE_NUMBER}"])
async def test_unicode_digits_and_huge_numbers_in_ranges_are_501(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture, bad: str
) -> None:
    caplog.set_level(logging.INFO)
    cid = "127.0.0.1-1-1.000"
    async with SourceServer() as source, live_supernode(settings) as sn, \
            httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        source.add("f.bin", b"z" * 1000)
        url = source.url("f.bin")
        tid = task_id(url)
        assert (await http.post("/peer/registry", json=registration(url, cid))).json()["code"] == 200
        pull = await http.get("/peer/task", params={"srcCid": cid, "dstCid": "", "range": bad, "result": "501",
                                                    "status": "701", "taskId": tid})
        huge_status = await http.get("/peer/task", params={"srcCid": cid, "range": "", "status": HUGE_NUMBER,
                                                           "taskId": tid})
        huge_result = await http.get("/peer/task", params={"srcCid": cid, "range": "", "status": "701",
                                                           "result": HUGE_NUMBER, "taskId": tid})
        success = await http.get("/peer/piece/suc", params={"taskId": tid, "cid": cid, "dstCid": "",
                                                            "pieceRange": bad})
    for answer in (pull, huge_status, huge_result, success):
        assert answer.status_code == 200 and answer.json()["code"] == 501, answer.text
    no_traceback(caplog)


async def test_the_rest_piece_error_route_with_a_unicode_range(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with SourceServer() as source, live_supernode(settings) as sn, \
            httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        source.add("f.bin", b"x" * 1000)
        url = source.url("f.bin")
        tid = task_id(url)
        assert (await http.post("/peer/registry", json=registration(url))).json()["code"] == 200
        answers = [await http.request("GET", f"/api/v1/tasks/{tid}/pieces/{bad}/error", headers=AUTH,
                                      json={"dstPid": "h-127.0.0.1-1", "srcCid": "127.0.0.1-1-1.000"})
                   for bad in (SUPERSCRIPT_RANGE, "9" * 60 + "-" + "9")]
    for answer in answers:
        assert answer.status_code < 500, answer.text
    no_traceback(caplog)


@pytest.mark.parametrize("header", ["Ünïcode-Name: v", "Content-Length: 5", "Transfer-Encoding: chunked",
                                    "Connection: close", "Host: elsewhere.example", "Bad Name: v",
                                    "X-Value: caf\u00e9\u2603"])
async def test_refused_and_framing_headers_never_reach_the_source_and_free_the_probe_lock(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    caplog.set_level(logging.INFO)
    async with SourceServer() as source, live_supernode(settings) as sn, \
            httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        source.add("f.bin", b"y" * 4096)
        url = source.url("f.bin")
        first = await http.post("/peer/registry", json=registration(url, headers=[header, "X-Kept: yes"]))
        started = time.monotonic()
        second = await http.post("/peer/registry",
                                 json=registration(url, "127.0.0.1-2-2.000", headers=[header, "X-Kept: yes"]))
        elapsed = time.monotonic() - started
        seen = source.stats("f.bin")
    assert first.json()["code"] == 200, first.text
    assert second.json()["code"] == 200 and elapsed < 1.0, (second.text, elapsed)
    name = header.partition(":")[0].strip().lower()
    for raw in seen.headers:
        request_headers = {key.lower(): value for key, value in raw.items()}
        assert request_headers.get("x-kept") == "yes"
        if name not in ("ünïcode-name", "bad name", "x-value"):
            # Framing and hop-by-hop headers are the client's own business, never the registration's.
            assert request_headers.get(name, "") != header.partition(":")[2].strip()
    no_traceback(caplog)


async def test_the_probe_lock_is_released_when_the_probe_raises(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A probe that blew up used to keep the lock: the next registration waited 4.5 s (dfget gives 5)."""
    client = create_redis(settings)
    state = ClusterState(client, settings)
    tid = "b" * 64
    source = make_source_client()
    await source.aclose()  # a closed client raises on every request: a real error the probe does not expect
    try:
        with pytest.raises(RuntimeError):
            await probe_geometry(settings, state, source, tid, "http://127.0.0.1:1/x", {})
        assert await state.try_lock_probe(tid, 1.0), "the probe lock was left held"
        assert not await redis.exists(task_key(tid))
    finally:
        await client.aclose()


async def test_an_open_api_job_with_an_absurd_timeout_is_422_before_anything_is_created(
    settings: Settings, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        answers = [await http.post("/oapi/v1/jobs", headers=AUTH, content=body) for body in (
            b'{"type":"preheat","args":{"type":"file","url":"http://127.0.0.1:1/f","timeout":1e300}}',
            b'{"type":"preheat","args":{"type":"file","url":"http://127.0.0.1:1/f","timeout":'
            + b"9" * 30 + b"}}",
        )]
        preheats = await http.get("/preheats", headers=AUTH)
    for answer in answers:
        assert answer.status_code == 422, answer.text
        assert "timeout" in answer.text
    assert preheats.json() == []
    no_traceback(caplog)
