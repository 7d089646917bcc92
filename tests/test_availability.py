"""A replica through a Redis outage, an internal error and a SIGTERM drain: real Redis servers (one we
can pause), real HTTP on loopback, real replica processes.

What dfget sees is what counts: any answer it does not expect costs it a migration (PROTOCOL §8.5),
so during an outage a pull must get 602, a registration 609 within dfget's 5 s, a report its usual
reply, and the report must still reach Redis afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as sync_redis

from app.core.config import Settings
from app.protocol.taskid import task_id
from app.state import schema
from tests.cluster import TEST_TOKEN, Cluster
from tests.live import Live, live_supernode
from tests.redis_servers import RedisServer
from tests.sources import SourceServer
from tests.test_bridge import registration

CID = "127.0.0.1-1-1.000"



@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.resume()
        server.kill()


def outage_settings(settings: Settings, server: RedisServer) -> Settings:
    return settings.model_copy(update={
        "redis_url": server.url(0), "register_hold_seconds": 1.5, "pull_hold_seconds": 0.6,
        "readiness_interval_seconds": 0.2,
    })


async def readiness(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    response = await http.get("/readyz")
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def wait_ready(http: httpx.AsyncClient, wanted: bool, within: float = 5.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        status, _ = await readiness(http)
        if (status == 200) == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz did not become {'ready' if wanted else 'not ready'} within {within}s")


async def seeded_task(sn: Live, source: SourceServer, http: httpx.AsyncClient, redis: sync_redis.Redis) -> str:
    source.add("f.bin", os.urandom(5 * 1024 * 1024))
    url = source.url("f.bin")
    answer = (await http.post("/peer/registry", json=registration(url, CID))).json()
    assert answer["code"] == 200, answer
    tid = task_id(url)
    for _ in range(400):
        if redis.hget(schema.task_key(tid), "cdnStatus") == "SUCCESS":
            return tid
        await asyncio.sleep(0.025)
    raise AssertionError("the seed did not finish")


async def test_a_paused_redis_costs_dfget_no_migration_and_no_report(
    settings: Settings, own_redis: RedisServer
) -> None:
    admin = sync_redis.Redis.from_url(own_redis.url(0), decode_responses=True)
    async with SourceServer() as source, live_supernode(outage_settings(settings, own_redis)) as sn, \
            httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        tid = await seeded_task(sn, source, http, admin)
        assert (await readiness(http))[0] == 200
        # The client holds piece 0 from the seed cache: its report will be sent during the outage.
        start = (await http.get(f"/peer/task?srcCid={CID}&dstCid=&range=&result=502&status=700&taskId={tid}")).json()
        assert start["code"] == 601

        own_redis.pause()  # connections hang, as in a network partition
        lost_for = await wait_ready(http, False)
        _, body = await readiness(http)
        assert any("redis" in reason for reason in body["reasons"]), body
        assert (await http.get("/_ping")).text == "OK"  # liveness is not readiness

        began = time.monotonic()
        pull = await http.get(f"/peer/task?srcCid={CID}&dstCid=&range=&result=502&status=700&taskId={tid}")
        pull_took = time.monotonic() - began
        assert pull.status_code == 200 and pull.json()["code"] == 602, pull.text

        began = time.monotonic()
        suc = await http.get(f"/peer/piece/suc?taskId={tid}&cid={CID}&dstCid=cdnnode:127.0.0.1~{tid}"
                             f"&pieceRange=0-4194303")
        assert suc.status_code == 200 and suc.json() == {"code": 611}

        began = time.monotonic()
        other = registration(source.url("f.bin"), "127.0.0.2-2-2.000")
        held = await http.post("/peer/registry", json=other)
        register_took = time.monotonic() - began
        assert held.status_code == 200 and held.json()["code"] == 609, held.text
        # dfget gives up on an answer after 5 s: the hold must end well inside that.
        assert 1.4 <= register_took < 4.0, register_took
        assert pull_took < 2.0, pull_took

        own_redis.resume()
        back_after = await wait_ready(http, True)
        # The report given during the outage is in Redis now: the client is a holder of piece 0.
        for _ in range(200):
            if admin.sismember(schema.holders_key(tid, 0), CID):
                break
            await asyncio.sleep(0.025)
        assert admin.sismember(schema.holders_key(tid, 0), CID)
        again = (await http.post("/peer/registry", json=other)).json()
        assert again["code"] == 200, again
    assert lost_for < 2.0 and back_after < 2.0, (lost_for, back_after)


async def _two_requests_on_one_connection(port: int, path: str, extra: str = "") -> list[bytes]:
    """Send two requests on one TCP connection; return both raw answers (the second proves keep-alive)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for _ in range(2):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: fasthttp\r\n{extra}\r\n".encode())
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            answers.append(head + await asyncio.wait_for(reader.readexactly(length), 5))
    finally:
        writer.close()
    return answers


async def test_an_internal_error_is_answered_logged_once_and_keeps_the_connection(
    settings: Settings, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tid = "a" * 64
    # Corrupt state, as a bug or an operator's mistake would leave it: the task key has the wrong type.
    await redis.set(schema.task_key(tid), "not a hash")
    caplog.set_level(logging.INFO)
    async with live_supernode(settings) as sn:
        pulls = await _two_requests_on_one_connection(
            sn.settings.port, f"/peer/task?srcCid={CID}&dstCid=&range=&result=502&status=700&taskId={tid}"
        )
        rest = await _two_requests_on_one_connection(
            sn.settings.port, f"/api/v1/tasks/{tid}", f"Authorization: Bearer {TEST_TOKEN}\r\n"
        )
    for answer in pulls:
        assert answer.startswith(b"HTTP/1.1 200") and b'"code":500' in answer, answer
    for answer in rest:
        assert answer.startswith(b"HTTP/1.1 500") and b'"internal error"' in answer, answer
    tracebacks = [r for r in caplog.records if r.exc_info]
    # One record with a traceback per failed request (four), none of them from the server layer.
    assert len(tracebacks) == 4, [r.getMessage() for r in tracebacks]
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]


@pytest.mark.slow
async def test_sigterm_drains_serves_in_flight_uploads_and_exits_zero(
    tmp_path: Path, redis_url: str
) -> None:
    cluster = Cluster(tmp_path / "c", redis_url, None, extra_env={"DF_DRAIN_SECONDS": "2"})
    cluster.workdir.mkdir()
    replica = cluster.start_replica()
    tid = "b" * 64
    data_dir = cluster.seed_dir / "download" / tid[:3]
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / tid).write_bytes(os.urandom(32 * 1024 * 1024))
    api, pieces = f"http://{replica.node}", f"http://127.0.0.1:{replica.download_port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{api}/readyz")).status_code == 200
            assert (await http.get(f"{pieces}/readyz")).status_code == 200
            # A slow reader: the upload is still in flight when the drain ends.
            sock = socket.create_connection(("127.0.0.1", replica.download_port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(f"GET /download/{tid[:3]}/{tid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200"), first[:100]
            signalled = time.monotonic()
            replica.popen.send_signal(signal.SIGTERM)
            while (await http.get(f"{api}/readyz")).status_code == 200:
                assert time.monotonic() - signalled < 2, "readiness did not turn false"
                await asyncio.sleep(0.02)
            assert (await http.get(f"{pieces}/readyz")).status_code == 503
            # Still serving while draining: dfget's calls and liveness are answered.
            assert (await http.get(f"{api}/_ping")).text == "OK"
            pull = await http.get(f"{api}/peer/task?srcCid={CID}&dstCid=&range=&result=502&status=700&taskId={tid}")
            assert pull.status_code == 200 and pull.json()["code"] == 502
        received = len(first) - first.index(b"\r\n\r\n") - 4
        loop = asyncio.get_running_loop()
        while received < 32 * 1024 * 1024:
            chunk = await loop.run_in_executor(None, sock.recv, 1 << 16)
            if not chunk:
                break
            received += len(chunk)
            if time.monotonic() - signalled < 3:
                await asyncio.sleep(0.01)  # slow until the drain is over, then read the rest
        sock.close()
        assert received == 32 * 1024 * 1024  # the upload in flight finished after the listeners closed
        assert replica.popen.wait(30) == 0, replica.tail()
        assert time.monotonic() - signalled >= 2  # the drain was served in full
        assert "drain over" in replica.tail(200)
        heartbeat = sync_redis.Redis.from_url(redis_url, decode_responses=True)
        assert not heartbeat.keys(schema.replica_key("*"))  # it deregistered
    finally:
        cluster.stop()


async def test_piece_tasks_name_the_advertised_piece_port(settings: Settings, redis: Any) -> None:
    """Behind a VIP or a Service whose port differs from the replicas' own, peers must be sent there."""
    admin = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
    async with SourceServer() as source, live_supernode(settings.model_copy(
        update={"advertise_download_port": 18001}
    )) as sn, httpx.AsyncClient(base_url=sn.api, timeout=10) as http:
        tid = await seeded_task(sn, source, http, admin)
        answer = (await http.get(f"/peer/task?srcCid={CID}&dstCid=&range=&result=502&status=700&taskId={tid}")).json()
    assert answer["code"] == 601, answer
    assert {task["peerPort"] for task in answer["data"]} == {18001}
    assert sn.settings.download_port != 18001
