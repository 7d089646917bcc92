"""The captured dfget requests, replayed against a real supernode on loopback, get answers with the
captured shape: same field names, JSON types and codes (samples/*.txt are the test vectors).

The captured source was http://127.0.0.1:18080/file20m.bin; ours runs on another port, so URLs and task
ids are rewritten consistently. Deliberate differences from the Go 0.4.1 server are asserted as such.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from app.core.config import Settings
from app.protocol.pieces import piece_range
from app.protocol.taskid import task_id
from app.state.schema import task_key
from tests.live import live_supernode
from tests.samples import SAMPLES, SHARED_SAMPLES, load, shape
from tests.sources import SourceServer

CAPTURED_URL = "http://127.0.0.1:18080/file20m.bin"
CAPTURED_TID = "722b477b471e3c784f4cdd0acfe6483e958412923283f9e7d8598ce3436e9854"
SIZE = 20971520


def rewrite(text: str, url: str, tid: str, download_port: int) -> str:
    return (
        text.replace(CAPTURED_URL, url)
        .replace(CAPTURED_TID, tid)
        .replace(f"/download/{CAPTURED_TID[:3]}/", f"/download/{tid[:3]}/")
        .replace('"peerPort":8001', f'"peerPort":{download_port}')
    )


@pytest.mark.skipif(not SHARED_SAMPLES.is_dir(), reason=f"no {SHARED_SAMPLES} next to this checkout to compare with")
def test_the_vendored_captures_are_the_shared_ones() -> None:
    shared = {p.name: p.read_bytes() for p in SHARED_SAMPLES.iterdir() if p.is_file()}
    vendored = {p.name: p.read_bytes() for p in SAMPLES.iterdir() if p.is_file()}
    assert vendored == shared


async def test_captured_exchanges_replay_with_the_captured_shapes(settings: Settings, redis: Redis) -> None:
    data = os.urandom(SIZE)
    async with SourceServer() as source, live_supernode(settings) as sn:
        # A paced source keeps the first piece unpublished for a moment, so the first pull must wait.
        source.add("file20m.bin", data, pace=0.04)
        url = source.url("file20m.bin")
        tid = task_id(url)
        async with httpx.AsyncClient(base_url=sn.api, timeout=10) as http:

            async def replay(method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None):
                target = rewrite(target, url, tid, sn.settings.download_port)
                response = await http.request(method, target, content=rewrite(body.decode(), url, tid, 0),
                                              headers=headers)
                assert response.status_code == 200, response.text
                return response

            # 01: registration, three peers.
            for captured in load("01_supernode_register_POST_peer_registry.txt"):
                response = await replay("POST", captured.target, captured.request_body,
                                        {"Content-Type": captured.request_headers["content-type"],
                                         "User-Agent": "fasthttp"})
                ours, theirs = response.json(), captured.response_json()
                assert shape(ours) == shape(theirs)
                assert ours["code"] == 200 and ours["msg"] == "success"
                assert ours["data"] == {"taskId": tid, "fileLength": SIZE, "pieceSize": 4194304}
                assert response.headers["content-type"] == "application/json"

            # 02: the START pull: 602 while nothing is seeded yet ...
            start = load("02_supernode_pull_task_START_status700_resp601.txt")[0]
            waits = load("02_supernode_pull_task_START_status700_resp602.txt")
            assert start.target == waits[0].target
            answer = (await replay("GET", start.target)).json()
            assert answer["code"] == 602
            assert shape(answer) == shape(waits[0].response_json())
            # ... then, once seeded (Go answered only after its whole fill), four piece tasks from the CDN.
            for _ in range(400):
                if await redis.hget(task_key(tid), "cdnStatus") == "SUCCESS":
                    break
                await asyncio.sleep(0.05)
            answer = (await replay("GET", start.target)).json()
            captured_601 = start.response_json()
            assert shape(answer) == shape(captured_601)
            assert [t["range"] for t in answer["data"]] == [t["range"] for t in captured_601["data"]]
            for item in answer["data"]:
                assert item["cid"] == f"cdnnode:127.0.0.1~{tid}"
                assert item["peerIp"] == "127.0.0.7"  # the requester's superNodeIp (v0.4.3+/1.0.x)
                assert item["peerPort"] == sn.settings.download_port
                assert item["path"] == f"/download/{tid[:3]}/{tid}"
                # Deliberate: Go 0.4.x sent "", we send the real "md5:len" (safe for every dfget).
                md5, _, length = item["pieceMd5"].partition(":")
                assert len(md5) == 32 and int(length) == 4194304

            # 07: the CDN pieces, byte for byte as nginx framed them, then the reports of sample 04.
            async with httpx.AsyncClient(timeout=10) as pieces:
                for item in answer["data"]:
                    got = await pieces.get(f"{sn.pieces}{item['path']}", headers={
                        "Range": f"bytes={item['range']}", "Piecenum": str(item["pieceNum"]),
                        "Piecesize": str(item["pieceSize"]), "User-Agent": "dfget/0.4.1"})
                    assert got.status_code == 206
                    assert got.headers["content-type"] == "application/octet-stream"
                    assert got.content[:4] == bytes.fromhex("043ffffb") and got.content[-1:] == b"\x7f"
                    assert hashlib.md5(got.content).hexdigest() == item["pieceMd5"].split(":")[0]
                    n = item["pieceNum"]
                    assert got.content[4:-1] == data[n * 4194299:(n + 1) * 4194299]
            for captured in load("04_supernode_report_piece_success.txt"):
                response = await replay("GET", captured.target)
                assert captured.response_body == b""  # Go 0.4.1 answered an empty body ...
                assert response.json() == {"code": 611}  # ... we answer as v0.4.3+/1.0.x (§5.3).

            # 03: RUNNING pulls; reports of every remaining piece lead to 600 with the framed length.
            for n in range(6):
                await replay("GET", f"/peer/piece/suc?taskId={tid}&cid=127.0.0.7-10729-1795841294.477"
                                    f"&dstCid=cdnnode:127.0.0.1~{tid}&pieceRange={piece_range(n, 4194304)}")
            finish = load("03_supernode_pull_task_RUNNING_status701_resp600.txt")[0]
            answer = (await replay("GET", finish.target)).json()
            assert shape(answer) == shape(finish.response_json())
            assert answer["data"]["fileLength"] == finish.response_json()["data"]["fileLength"] == 20971550
            assert answer["data"]["md5"] == hashlib.md5(data).hexdigest()  # 1.0.x sends the real md5

            # 03/601 for the second peer: pieces come from the first peer now, as captured.
            second = load("03_supernode_pull_task_RUNNING_status701_resp601.txt")[1]
            response = (await replay("GET", start.target.replace(
                "127.0.0.7-10729-1795841294.477", "127.0.0.8-10834-1795841303.730"))).json()
            assert response["code"] == 601
            assert shape(response) == shape(second.response_json())
            peer_items = [t for t in response["data"] if t["cid"] == "127.0.0.7-10729-1795841294.477"]
            assert peer_items, response
            assert {(t["peerIp"], t["peerPort"], t["path"]) for t in peer_items} == {
                ("127.0.0.7", 51137, "/peer/file/clean-peer7.bin-10729-1795841294.477")}

            # 05: piece errors were unrouted in Go 0.4.1 (404); we answer 200 with a code (1.0.x routes it).
            error = load("05_supernode_report_client_error_NOT_ROUTED.txt")[0]
            assert error.status == 404
            assert (await replay("GET", error.target)).json() == {"code": 200}

            # 06: service down.
            down = load("06_supernode_service_down.txt")[0]
            assert (await replay("GET", down.target)).json() == {"code": 612}

            # 14: the system endpoints (the /peers REST API belongs to the operations surface).
            ping = await http.get("/_ping")
            assert ping.status_code == 200 and ping.text == "OK"
            assert ping.headers["content-type"] == "text/plain; charset=utf-8"
            assert (await http.get("/v1.0/_ping")).text == "OK"


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"rawUrl":"ftp://x"}', b'{"ip":"::1"}'])
async def test_bad_registrations_get_a_param_error_never_a_5xx(settings: Settings, body: bytes) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        response = await http.post("/peer/registry", content=body)
        assert response.status_code == 200
        assert response.json()["code"] == 501 and response.json()["msg"]


@pytest.mark.parametrize(
    "query",
    ["", "srcCid=a", "srcCid=a&taskId=b&status=abc", "srcCid=a&taskId=b&status=999&result=502",
     "srcCid=a&taskId=b&status=701&result=503&range=x-y", "srcCid=a&taskId=b&status=701&range=0-9&result=1"],
)
async def test_bad_pulls_get_a_result_code_never_a_5xx(settings: Settings, redis: object, query: str) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        response = await http.get(f"/peer/task?{query}")
        assert response.status_code == 200
        assert orjson.loads(response.content)["code"] in (501, 502)
