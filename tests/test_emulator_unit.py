"""Unit tests of the dfget emulator (app/swarm) without the real supernode.

Wire details are checked against the captures of shared/protocol/samples (tests/vectors); the client loop is driven
end to end against a tiny in-test fake supernode so that the emulator itself is known to be right.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from app.protocol.pieces import frame_piece, framed_length, piece_count, piece_md5, piece_range
from app.protocol.taskid import cdn_path, task_id
from app.swarm import Dfget, Item, ItemMerger, Swarm, Uploader, rotated
from app.swarm.api import ApiResponse, ExchangeLog, SupernodeApi, make_http_client
from app.swarm.config import VersionTraits
from app.swarm.ratelimit import TokenBucket
from app.swarm.register import RegisterFailed, Registrar, adjust_node_list
from app.swarm.result import DfgetResult
from app.swarm.uploader import amend_range, parse_upload_params
from app.swarm.wire import (
    client_finish_query,
    go_json,
    metrics_body,
    piece_error_query,
    piece_suc_query,
    pull_query,
    register_body,
    request_line,
    service_down_query,
    split_header_flags,
)
from tests.samples import SAMPLES

MIB = 1024 * 1024
PIECE_4M = 4 * MIB
CAPTURED_TASK = "722b477b471e3c784f4cdd0acfe6483e958412923283f9e7d8598ce3436e9854"
CDN_CID = f"cdnnode:127.0.0.1~{CAPTURED_TASK}"
PEER7 = "127.0.0.7-10729-1795841294.477"


def _sample_request_lines(name: str) -> list[str]:
    text = (SAMPLES / name).read_text()
    return [line for line in text.splitlines() if re.match(r"^(GET|POST) /", line)]


def _sample_bodies(name: str) -> list[str]:
    text = (SAMPLES / name).read_text()
    return [line for line in text.splitlines() if line.startswith('{"superNodeIp"')]




# --------------------------------------------------------------------------------------------------
# Uploader: framing over real HTTP on loopback
# --------------------------------------------------------------------------------------------------


@pytest.fixture
async def uploader(tmp_path: Path) -> AsyncIterator[Uploader]:
    up = await Uploader("127.0.0.1", data_dir=tmp_path / "data").start()
    try:
        yield up
    finally:
        await up.stop(notify=False)


def _piece_headers(start: int, end: int, num: int, size: int = PIECE_4M) -> dict[str, str]:
    return {"Range": f"bytes={start}-{end}", "pieceNum": str(num), "pieceSize": str(size)}


async def test_uploader_full_piece_has_captured_header(uploader: Uploader, tmp_path: Path) -> None:
    raw = os.urandom(5 * MIB)
    data = tmp_path / "t.service"
    data.write_bytes(raw)
    uploader.add_task("t", data)
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{uploader.base_url}/peer/file/t", headers=_piece_headers(0, PIECE_4M - 1, 0))
    assert resp.status_code == 206
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-length"] == str(PIECE_4M)
    body = resp.content
    assert body[:4] == bytes.fromhex("043ffffb")
    assert body[-1:] == b"\x7f"
    assert body[4:-1] == raw[: PIECE_4M - 5]
    assert body == frame_piece(raw[: PIECE_4M - 5], PIECE_4M)
    assert uploader.stats.pieces_served == 1 and uploader.stats.bytes_served == PIECE_4M


async def test_uploader_truncates_last_piece_and_matches_cdn_md5(uploader: Uploader, tmp_path: Path) -> None:
    raw = os.urandom(5 * MIB)
    data = tmp_path / "t.service"
    data.write_bytes(raw)
    uploader.add_task("t", data)
    start, end = (int(x) for x in piece_range(1, PIECE_4M).split("-"))
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{uploader.base_url}/peer/file/t", headers=_piece_headers(start, end, 1))
    payload = raw[PIECE_4M - 5 :]
    assert resp.status_code == 206
    assert len(resp.content) == len(payload) + 5
    assert int.from_bytes(resp.content[:4], "big") == len(payload) | (PIECE_4M << 4)
    assert resp.content[4:-1] == payload
    # Same bytes as the CDN's framed piece, so 1.0.x pieceMd5 checks pass against peers too.
    assert piece_md5(resp.content) == piece_md5(frame_piece(payload, PIECE_4M))


async def test_uploader_empty_file_gives_five_bytes(uploader: Uploader, tmp_path: Path) -> None:
    data = tmp_path / "empty.service"
    data.write_bytes(b"")
    uploader.add_task("empty", data)
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{uploader.base_url}/peer/file/empty", headers=_piece_headers(0, PIECE_4M - 1, 0))
    assert resp.status_code == 206
    assert resp.content == (PIECE_4M << 4).to_bytes(4, "big") + b"\x7f"


async def test_uploader_error_statuses(uploader: Uploader, tmp_path: Path) -> None:
    data = tmp_path / "t.service"
    data.write_bytes(b"x" * 100)
    uploader.add_task("t", data)
    uploader.add_task("gone", tmp_path / "missing.service")
    url = f"{uploader.base_url}/peer/file"
    async with httpx.AsyncClient() as http:
        # 400: parse errors (missing header, E <= S, two dashes, non-numeric).
        assert (await http.get(f"{url}/t", headers={"Range": "bytes=0-99", "pieceSize": "1"})).status_code == 400
        assert (await http.get(f"{url}/t", headers=_piece_headers(5, 5, 0))).status_code == 400
        bad = {"Range": "bytes=0-1-2", "pieceNum": "0", "pieceSize": "9"}
        assert (await http.get(f"{url}/t", headers=bad)).status_code == 400
        bad = {"Range": "bytes=a-9", "pieceNum": "0", "pieceSize": "9"}
        assert (await http.get(f"{url}/t", headers=bad)).status_code == 400
        # 416: shorter than a frame, or a negative raw offset.
        assert (await http.get(f"{url}/t", headers=_piece_headers(0, 3, 0))).status_code == 416
        assert (await http.get(f"{url}/t", headers=_piece_headers(0, 99, 1))).status_code == 416
        # 404: known task, file gone (text like the captured Go answer); 500: unknown task.
        gone = await http.get(f"{url}/gone", headers=_piece_headers(0, 99, 0))
        assert gone.status_code == 404
        assert "no such file or directory" in gone.text
        unknown = await http.get(f"{url}/nope", headers=_piece_headers(0, 99, 0))
        assert unknown.status_code == 500
        assert "failed to get taskPath: nope" in unknown.text
        # Header names are case-insensitive.
        ok = await http.get(f"{url}/t", headers={"RANGE": "bytes=0-104", "PIECENUM": "0", "piecesize": "105"})
        assert ok.status_code == 206 and ok.content[4:-1] == b"x" * 100
    assert uploader.stats.statuses[400] == 4 and uploader.stats.statuses[416] == 2


def test_amend_range_rules() -> None:
    params = parse_upload_params("bytes=0-4194303", "0", "4194304")
    assert amend_range(params, 10) == (0, 15)
    assert amend_range(params, 0) == (0, 5)
    assert amend_range(parse_upload_params("bytes=4194304-8388607", "1", "4194304"), 4194299) == (4194299, 5)
    with pytest.raises(ValueError):
        parse_upload_params("bytes=10-10", "0", "1")
    with pytest.raises(ValueError):
        parse_upload_params("0-10", "0", "1")


async def test_uploader_local_endpoints(uploader: Uploader) -> None:
    base = uploader.base_url
    async with httpx.AsyncClient() as http:
        ping = await http.get(f"{base}/server/ping")
        assert (ping.status_code, ping.text) == (200, "success")
        check = await http.get(f"{base}/check/f-1-2.000", headers={"dataDir": "/tmp/x", "totalLimit": "0"})
        assert check.text == "f-1-2.000@0.4.1"
        assert uploader.tasks["f-1-2.000"].service_file("f-1-2.000") == Path("/tmp/x/f-1-2.000.service")
        rate = await http.get(f"{base}/rate/f-1-2.000", headers={"rateLimit": "10486000"})
        assert (rate.status_code, rate.text) == (200, "10486000")
        assert (await http.get(f"{base}/rate/f-1-2.000", headers={"rateLimit": "x"})).status_code == 400
        missing = await http.get(f"{base}/client/finish?taskFileName=f-1-2.000&taskID=abc")
        assert (missing.status_code, missing.text) == (400, "invalid params")
        done = await http.get(
            f"{base}{client_finish_query(task_file_name='f-1-2.000', task_id='abc', cid='c1', super_node='n:1')}"
        )
        assert (done.status_code, done.text) == (200, "success")
    task = uploader.tasks["f-1-2.000"]
    assert (task.task_id, task.cid, task.super_node, task.finished) == ("abc", "c1", "n:1", True)


@dataclass
class _Recorder:
    targets: list[str] = field(default_factory=list)


async def _recording_server(recorder: _Recorder) -> tuple[web.AppRunner, str]:
    async def handle(request: web.Request) -> web.Response:
        recorder.targets.append(request.raw_path)
        return web.json_response({"code": 612})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"127.0.0.1:{port}"


async def test_uploader_stop_sends_service_down_to_recorded_node(tmp_path: Path) -> None:
    recorder = _Recorder()
    runner, node = await _recording_server(recorder)
    try:
        up = await Uploader(data_dir=tmp_path).start()
        up.finish_task("f-1", "tid1", "cid1", node)
        up.add_task("f-2", tmp_path / "f-2.service")  # never finished: no cid, nothing to send
        await up.stop()
        assert recorder.targets == [service_down_query(task_id="tid1", cid="cid1")]
        assert up.log.exchanges[0].code == 612

        crashed = await Uploader(data_dir=tmp_path).start()
        crashed.finish_task("f-3", "tid3", "cid3", node)
        await crashed.crash()
        assert len(recorder.targets) == 1
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient() as http:
                await http.get(f"{crashed.base_url}/server/ping")
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------------------
# Wire format against the captures
# --------------------------------------------------------------------------------------------------


def test_pull_query_matches_capture() -> None:
    start = request_line(
        "GET",
        pull_query(src_cid=PEER7, dst_cid="", range_="", result=502, status=700, task_id=CAPTURED_TASK),
    )
    assert start == _sample_request_lines("02_supernode_pull_task_START_status700_resp602.txt")[0]
    assert start == _sample_request_lines("02_supernode_pull_task_START_status700_resp601.txt")[0]
    running = request_line(
        "GET",
        pull_query(
            src_cid=PEER7,
            dst_cid=CDN_CID,
            range_="8388608-12582911",
            result=503,
            status=701,
            task_id=CAPTURED_TASK,
        ),
    )
    assert running == _sample_request_lines("03_supernode_pull_task_RUNNING_status701_resp601.txt")[0]


def test_report_queries_match_capture() -> None:
    suc = piece_suc_query(task_id=CAPTURED_TASK, cid=PEER7, dst_cid=CDN_CID, piece_range="0-4194303")
    assert request_line("GET", suc) == _sample_request_lines("04_supernode_report_piece_success.txt")[0]
    err = piece_error_query(
        error_type="FILE_NOT_EXIST", src_cid="127.0.0.9-10930-1795841312.608", dst_cid=PEER7, task_id=CAPTURED_TASK
    )
    assert request_line("GET", err) == _sample_request_lines("05_supernode_report_client_error_NOT_ROUTED.txt")[0]
    down = service_down_query(task_id=CAPTURED_TASK, cid="127.0.0.8-10834-1795841303.730")
    assert request_line("GET", down) == _sample_request_lines("06_supernode_service_down.txt")[0]
    fin = client_finish_query(
        task_file_name=f"clean-peer7.bin-{PEER7.split('-', 1)[1]}",
        task_id=CAPTURED_TASK,
        cid=PEER7,
        super_node="127.0.0.7:8002",
    )
    assert request_line("GET", fin) == _sample_request_lines("12_uploader_local_finish.txt")[0]


def test_registration_body_is_byte_exact() -> None:
    captured = _sample_bodies("01_supernode_register_POST_peer_registry.txt")[0]
    dfget = Dfget(
        ["127.0.0.7:8002"],
        "http://127.0.0.1:18080/file20m.bin",
        Path("/tmp/clean-peer7.bin"),
        ip="127.0.0.7",
        host_name="vm",
        sign="10729-1795841294.477",
        version="0.4.1",
    )
    body = dfget.registration_body("127.0.0.7:8002", port=51137)
    assert body == captured.encode()
    assert len(body) == 280  # Content-Length in the capture
    assert dfget.cid == PEER7
    assert task_id("http://127.0.0.1:18080/file20m.bin") == CAPTURED_TASK


def test_registration_optional_fields_follow_go_struct_order() -> None:
    def body(**optional: Any) -> bytes:
        return register_body(
            super_node_ip="sn",
            raw_url="http://a.b/x?a=1&b=<2>",
            task_url="http://a.b/x?a=1",
            cid="c",
            ip="1.2.3.4",
            host_name="h",
            port=0,
            path="/peer/file/x",
            version="1.0.6",
            **optional,
        )

    full = body(md5="m", identifier="ignored", call_system="cs", headers=["A:1"], dfdaemon=True)
    assert full.endswith(b'"version":"1.0.6","md5":"m","callSystem":"cs","headers":["A:1"],"dfdaemon":true}')
    assert b'"rawUrl":"http://a.b/x?a=1\\u0026b=\\u003c2\\u003e"' in full  # Go HTML-escapes
    assert body(identifier="i").endswith(b'"version":"1.0.6","identifier":"i"}')
    assert go_json({"f": 1.5, "g": 2.0, "s": "\x01"}) == b'{"f":1.5,"g":2,"s":"\\u0001"}'
    metrics = metrics_body(
        ip="1.2.3.4",
        backsource_reason=0,
        cid="c",
        call_system="",
        duration=1.25,
        file_length=10,
        port=15001,
        success=True,
        task_id="t",
    )
    assert metrics == (
        b'{"IP":"1.2.3.4","backsourceReason":"0","cID":"c","duration":1.25,'
        b'"fileLength":10,"port":15001,"success":true,"taskId":"t"}'
    )


def test_header_flags_split_on_commas_before_1_0_1() -> None:
    assert split_header_flags(["Accept: a, b"], (0, 4, 1)) == ["Accept: a", " b"]
    assert split_header_flags(["Accept: a, b"], (1, 0, 6)) == ["Accept: a, b"]


# --------------------------------------------------------------------------------------------------
# Merge policy (pure)
# --------------------------------------------------------------------------------------------------

N1, N2 = "n1:8002", "n2:8002"


def _ok(range_: str, node: str = N1, dst: str = CDN_CID, size: int = PIECE_4M) -> Item:
    return Item(701, 503, node=node, task_id="t", range=range_, dst_cid=dst, piece_size=size)


def _take(merger: ItemMerger, item: Item | None, queued: int = 0, node: str = N1) -> Item | None:
    return merger.take(item, queued, node=node, task_id="t", piece_size=PIECE_4M)


def test_merge_replays_captured_first_batch() -> None:
    merger = ItemMerger()
    assert _take(merger, Item.start(N1, "t")) == Item.start(N1, "t")  # START is always sent
    ranges = [piece_range(n, PIECE_4M) for n in range(4)]
    for r in ranges:
        merger.mark_running(r)
    # Piece 0 done while 3 others still download: held (capture: its 503 never reaches /peer/task).
    assert _take(merger, _ok(ranges[0])) is None
    assert merger.held == _ok(ranges[0])
    # Piece 2 done, 2 running: sent, replacing piece 0 (capture #18 reports range 8388608-12582911).
    assert _take(merger, _ok(ranges[2])) == _ok(ranges[2])
    assert merger.held is None and merger.running_count() == 2


def test_merge_holds_while_queue_not_empty_and_flushes_on_timeout() -> None:
    merger = ItemMerger()
    merger.mark_running("0-9")
    assert _take(merger, _ok("0-9"), queued=1) is None
    assert _take(merger, None) == _ok("0-9")  # the 2 s poll timed out: the held item goes out
    assert _take(merger, None) is None


def test_merge_failures_always_sent_and_free_the_piece() -> None:
    merger = ItemMerger()
    for r in ("0-9", "10-19", "20-29", "30-39"):
        merger.mark_running(r)
    failed = Item(701, 500, node=N1, task_id="t", range="0-9", dst_cid="p")
    assert _take(merger, failed, queued=5) == failed
    assert not merger.is_known("0-9")
    # An outcome for a range neither running nor done is dropped (and does not replace "held").
    assert _take(merger, failed) is None
    assert merger.dropped == [failed]


def test_merge_retargets_after_migration_and_drops_other_piece_sizes() -> None:
    merger = ItemMerger()
    merger.mark_running("0-9")
    merger.mark_running("10-19")
    merged = _take(merger, _ok("0-9", node=N1), node=N2)
    assert merged == Item(701, 503, node=N2, task_id="t", range="0-9", dst_cid="", piece_size=PIECE_4M)
    assert _take(merger, _ok("10-19", size=5 * MIB)) is None
    assert merger.is_known("10-19") and not merger.is_done("10-19")


# --------------------------------------------------------------------------------------------------
# Node list and registration loop
# --------------------------------------------------------------------------------------------------


class _ScriptedApi(SupernodeApi):
    """Answers POST /peer/registry from a script of (node, code-or-None) entries."""

    def __init__(self, answers: list[int | None]) -> None:
        super().__init__(httpx.AsyncClient(), ExchangeLog())
        self.answers = answers
        self.calls: list[str] = []

    async def post_json(self, node: str, target: str, body: bytes) -> ApiResponse:
        self.calls.append(node)
        code = self.answers.pop(0)
        if code is None:
            return ApiResponse(http_status=500, error="500:boom")
        data = {"taskId": "t", "fileLength": 10, "pieceSize": PIECE_4M} if code == 200 else None
        return ApiResponse(http_status=200, payload={"code": code, "data": data}, json_ok=True)


def test_adjust_node_list() -> None:
    import random

    assert adjust_node_list(["a"], shuffle=True, rng=random.Random(1)) == ["a", "a"]
    assert adjust_node_list(["a", "b"], shuffle=False, rng=random.Random(1)) == ["a", "b", "a", "b"]
    assert adjust_node_list([], shuffle=False, rng=random.Random(1)) == []
    # dfget 1.0.5+: every entry once, a single node included (it then cannot migrate at all).
    assert adjust_node_list(["v", "v", "v"], shuffle=True, rng=random.Random(1), duplicate=False) == ["v"] * 3
    assert adjust_node_list(["a"], shuffle=False, rng=random.Random(1), duplicate=False) == ["a"]
    assert VersionTraits((1, 0, 4)).duplicates_node_list and not VersionTraits((1, 0, 5)).duplicates_node_list
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]


async def test_registrar_consumes_nodes_and_handles_codes() -> None:
    traits = VersionTraits((0, 4, 1))
    api = _ScriptedApi([None, 200, 200])
    registrar = Registrar(api, ["a", "b", "a", "b"], lambda n: b"{}", traits, DfgetResult())
    first = await registrar.register()
    assert (first.node, registrar.remaining) == ("b", ["a", "b"])
    second = await registrar.register()  # a migration continues from the remaining nodes
    assert (second.node, registrar.remaining) == ("a", ["b"])
    assert api.calls == ["a", "b", "a"]

    # 607 stops the loop only from 0.4.3 on; 608 always stops (and forbids back-source).
    old = Registrar(_ScriptedApi([607, 200]), ["a", "b"], lambda n: b"{}", traits, DfgetResult())
    assert (await old.register()).node == "b"
    new = Registrar(_ScriptedApi([607]), ["a", "b"], lambda n: b"{}", VersionTraits((1, 0, 6)), DfgetResult())
    with pytest.raises(RegisterFailed) as failed:
        await new.register()
    assert failed.value.code == 607 and new.remaining == ["b"]
    auth = Registrar(_ScriptedApi([608]), ["a", "b"], lambda n: b"{}", traits, DfgetResult())
    with pytest.raises(RegisterFailed) as need_auth:
        await auth.register()
    assert need_auth.value.code == 608
    # 609 retries the same node (sleep scaled down for the test).
    wait = Registrar(_ScriptedApi([609, 200]), ["a"], lambda n: b"{}", traits, DfgetResult(), sleep_scale=0.001)
    assert (await wait.register()).node == "a"


# --------------------------------------------------------------------------------------------------
# End to end against a tiny fake supernode (0.4.1-like scheduling, CDN on the same port)
# --------------------------------------------------------------------------------------------------


@dataclass
class FakeSupernode:
    data: bytes
    piece_size: int
    waits: int = 1  # 602 answers before the first schedule of each registration
    send_piece_md5: bool = False
    finish_md5: str = ""
    fail_pulls: int = 0  # answer this many pulls with code 502 (forces migration)
    suc_status: int = 200  # HTTP status of /peer/piece/suc answers (anything else: a failed report)
    broken_pulls: list[str] = field(default_factory=list)  # next pulls: an HTTP status ("503") or "drop"
    corrupt_cdn: bool = False
    node: str = ""
    registrations: list[bytes] = field(default_factory=list)
    pulls: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    downs: list[str] = field(default_factory=list)
    metrics: list[bytes] = field(default_factory=list)
    done: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    running: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    waits_left: dict[str, int] = field(default_factory=dict)
    peers: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    holders: dict[int, list[str]] = field(default_factory=lambda: defaultdict(list))
    runner: web.AppRunner | None = None

    url_path = "/origin/file.bin"

    @property
    def task_id(self) -> str:
        return task_id(self.url)

    @property
    def url(self) -> str:
        return f"http://{self.node}{self.url_path}"

    @property
    def total(self) -> int:
        return piece_count(len(self.data), self.piece_size)

    def framed(self, num: int) -> bytes:
        per = self.piece_size - 5
        return frame_piece(self.data[num * per : (num + 1) * per], self.piece_size)

    async def start(self) -> FakeSupernode:
        app = web.Application()
        app.router.add_post("/peer/registry", self.registry)
        app.router.add_get("/peer/task", self.pull)
        app.router.add_get("/peer/piece/suc", self.suc)
        app.router.add_get("/peer/piece/error", self.error)
        app.router.add_get("/peer/service/down", self.down)
        app.router.add_post("/task/metrics", self.metric)
        app.router.add_get("/download/{prefix}/{tid}", self.cdn)
        app.router.add_get(self.url_path, self.origin)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.node = f"127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def registry(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.registrations.append(body)
        reg = {k.lower(): v for k, v in json.loads(body).items()}
        self.peers[reg["cid"]] = (reg["ip"], reg["port"], reg["path"])
        self.waits_left[reg["cid"]] = self.waits
        self.running[reg["cid"]].clear()
        data = {"taskId": self.task_id, "fileLength": len(self.data), "pieceSize": self.piece_size}
        return web.json_response({"code": 200, "msg": "success", "data": data})

    async def pull(self, request: web.Request) -> web.Response:
        self.pulls.append(request.raw_path)
        q = request.query
        cid = q["srcCid"]
        if self.fail_pulls > 0:
            self.fail_pulls -= 1
            return web.json_response({"code": 502, "msg": "target not found"})
        if self.broken_pulls:
            how = self.broken_pulls.pop(0)
            if how == "drop":  # a replica killed mid-request: the connection closes with no answer
                assert request.transport is not None
                request.transport.abort()
                return web.Response()
            return web.Response(status=int(how), text="no server available")  # what a load balancer says
        if q["status"] == "701":
            num = int(q["range"].split("-")[0]) // self.piece_size
            self.running[cid].discard(num)
            if q["result"] == "503":
                self.done[cid].add(num)
        if self.waits_left.get(cid, 0) > 0:
            self.waits_left[cid] -= 1
            return web.json_response({"code": 602, "msg": "wait"})
        if len(self.done[cid]) >= self.total:
            finish = {"md5": self.finish_md5, "fileLength": framed_length(len(self.data), self.piece_size)}
            return web.json_response({"code": 600, "data": finish})
        tasks: list[dict[str, object]] = []
        for num in range(self.total):
            if len(tasks) + len(self.running[cid]) >= 4:
                break
            if num in self.done[cid] or num in self.running[cid]:
                continue
            tasks.append(self.piece_task(num, cid))
            self.running[cid].add(num)
        if not tasks:
            return web.json_response({"code": 602, "msg": "wait"})
        return web.json_response({"code": 601, "data": tasks})

    def piece_task(self, num: int, requester: str) -> dict[str, object]:
        holders = [h for h in self.holders[num] if h != requester and self.peers[h][1] > 0]
        if holders:
            src = holders[-1]
            ip, port, path = self.peers[src]
        else:
            src, (ip, port, path) = f"cdnnode:127.0.0.1~{self.task_id}", self.cdn_peer()
        return {
            "range": piece_range(num, self.piece_size),
            "pieceNum": num,
            "pieceSize": self.piece_size,
            "pieceMd5": piece_md5(self.framed(num)) if self.send_piece_md5 else "",
            "cid": src,
            "peerIp": ip,
            "peerPort": port,
            "path": path,
            "downLink": 0,
        }

    def cdn_peer(self) -> tuple[str, int, str]:
        host, port = self.node.split(":")
        return host, int(port), cdn_path(self.task_id)

    async def suc(self, request: web.Request) -> web.Response:
        self.reports.append(request.raw_path)
        if self.suc_status != 200:
            return web.Response(status=self.suc_status, text="report lost")
        num = int(request.query["pieceRange"].split("-")[0]) // self.piece_size
        cid = request.query["cid"]
        self.done[cid].add(num)
        self.running[cid].discard(num)
        self.holders[num].append(cid)
        return web.json_response({"code": 611})

    async def error(self, request: web.Request) -> web.Response:
        self.errors.append(request.raw_path)
        if request.query.get("errorType") == "FILE_NOT_EXIST":
            for holders in self.holders.values():
                while request.query["dstCid"] in holders:
                    holders.remove(request.query["dstCid"])
        return web.json_response({"code": 200})

    async def down(self, request: web.Request) -> web.Response:
        self.downs.append(request.raw_path)
        return web.json_response({"code": 612})

    async def metric(self, request: web.Request) -> web.Response:
        self.metrics.append(await request.read())
        return web.json_response({"code": 1})

    async def cdn(self, request: web.Request) -> web.Response:
        start, end = (int(x) for x in request.headers["Range"].removeprefix("bytes=").split("-"))
        num = start // self.piece_size
        body = self.framed(num)[: end - start + 1]
        if self.corrupt_cdn:
            body = body[:4] + bytes([body[4] ^ 0xFF]) + body[5:]
        return web.Response(status=206, body=body, content_type="application/octet-stream")

    async def origin(self, request: web.Request) -> web.Response:
        return web.Response(body=self.data, content_type="application/octet-stream")


FAST: dict[str, Any] = {"sleep_scale": 0.005, "poll_timeout": 0.15}


@pytest.fixture
async def supernode() -> AsyncIterator[FakeSupernode]:
    fake = await FakeSupernode(os.urandom(300_000), piece_size=64 * 1024 + 5).start()
    try:
        yield fake
    finally:
        await fake.stop()


async def test_single_p2p_download_end_to_end(supernode: FakeSupernode, tmp_path: Path) -> None:
    async with Uploader(data_dir=tmp_path / "data") as up:
        dfget = Dfget([supernode.node], supernode.url, tmp_path / "out.bin", uploader=up, **FAST)
        result = await dfget.run()
        assert result.success, result.error
        assert result.sha256 == hashlib.sha256(supernode.data).hexdigest()
        assert result.bytes == len(supernode.data)
        assert result.pieces_from_cdn == supernode.total and result.pieces_from_peers == 0
        assert result.registrations == 1 and result.migrations == 0 and not result.back_sourced
        assert not result.supernode_5xx and result.protocol_errors == []
        codes = result.codes("/peer/task")
        assert codes[0] == 602 and codes[-1] == 600 and 601 in codes
        # The first pull is the START item, resent unchanged after the 602.
        assert supernode.pulls[0] == supernode.pulls[1]
        assert "&result=502&status=700&" in supernode.pulls[0]
        # p2p pattern: one /peer/piece/suc per piece, and the uploader learned the node at finish.
        assert len(supernode.reports) == supernode.total
        assert up.tasks[dfget.cfg.task_file_name].super_node == supernode.node
        assert up.tasks[dfget.cfg.task_file_name].finished
        # The uploader serves the finished data re-framed exactly like the CDN.
        async with httpx.AsyncClient() as http:
            resp = await http.get(
                f"{up.base_url}{dfget.path}",
                headers=_piece_headers(
                    supernode.piece_size, 2 * supernode.piece_size - 1, 1, size=supernode.piece_size
                ),
            )
        assert resp.content == supernode.framed(1)
    assert supernode.downs == [service_down_query(task_id=supernode.task_id, cid=dfget.cid)]


async def test_swarm_shares_pieces_and_rotates_nodes(tmp_path: Path) -> None:
    a = await FakeSupernode(os.urandom(400_000), piece_size=32 * 1024 + 5, waits=0).start()
    b = await FakeSupernode(a.data, piece_size=a.piece_size, waits=0).start()
    b.url_path = a.url_path
    try:
        # Peers start one after another so later ones find holders (the fakes do not share state,
        # so each replica only knows its own registrants).
        async with Swarm(4, [a.node, b.node], a.url, tmp_path / "out", start_interval=0.3, **FAST) as swarm:
            results = await swarm.run()
            ports = {peer.uploader.port for peer in swarm.peers if peer.uploader}
        assert len(ports) == 4
        digest = hashlib.sha256(a.data).hexdigest()
        assert all(r.success and r.sha256 == digest for r in results), [r.error for r in results]
        assert [r.node for r in results] == [a.node, b.node, a.node, b.node]
        assert results[2].pieces_from_peers > 0 and results[3].pieces_from_peers > 0
        assert len(a.downs) == 2 and len(b.downs) == 2
    finally:
        await a.stop()
        await b.stop()


async def test_migration_resends_item_as_start(supernode: FakeSupernode, tmp_path: Path) -> None:
    supernode.fail_pulls = 1
    supernode.waits = 0
    async with Uploader(data_dir=tmp_path) as up:
        result = await Dfget([supernode.node], supernode.url, tmp_path / "o.bin", uploader=up, **FAST).run()
    assert result.success, result.error
    # One configured node is listed twice, so the client can re-register once (§5.1).
    assert (result.registrations, result.migrations) == (2, 1)
    assert result.codes("/peer/task")[0] == 502
    assert len(supernode.registrations) == 2
    assert supernode.pulls[1] == supernode.pulls[0]  # the START item, status 700 again
    # A second failure would find no node left: migration fails and dfget back-sources.
    supernode.fail_pulls = 3
    again = await Dfget([supernode.node], supernode.url, tmp_path / "p.bin", **FAST).run()
    assert again.back_sourced and again.back_source_reason == 3 and again.success
    assert again.registrations == 2 and again.register_attempts == 2


async def test_v106_node_entries_allow_one_migration_fewer_than_entries(
    supernode: FakeSupernode, tmp_path: Path
) -> None:
    """1.0.5+ lists each --node entry once: VIP×3 allows two migrations, and a third failure back-sources."""
    supernode.waits = 0
    supernode.fail_pulls = 2
    nodes = [supernode.node] * 3
    moved = await Dfget(nodes, supernode.url, tmp_path / "o.bin", version="1.0.6", **FAST).run()
    assert moved.success and not moved.back_sourced, moved.error
    assert (moved.registrations, moved.migrations) == (3, 2)
    supernode.fail_pulls = 3
    out = await Dfget(nodes, supernode.url, tmp_path / "p.bin", version="1.0.6", **FAST).run()
    assert out.back_sourced and out.back_source_reason == 3, out.error
    assert out.success and out.sha256 == hashlib.sha256(supernode.data).hexdigest()
    assert (out.registrations, out.migrations) == (3, 3)
    # One entry: no migration at all (0.4.x lists a single node twice and could migrate once).
    supernode.fail_pulls = 1
    single = await Dfget([supernode.node], supernode.url, tmp_path / "q.bin", version="1.0.6", **FAST).run()
    assert single.back_sourced and (single.registrations, single.register_attempts) == (1, 1)


async def test_a_non_200_status_or_a_dropped_connection_on_a_pull_costs_one_migration_each(
    supernode: FakeSupernode, tmp_path: Path
) -> None:
    supernode.waits = 0
    supernode.broken_pulls = ["503", "drop"]
    result = await Dfget([supernode.node] * 3, supernode.url, tmp_path / "o.bin", version="1.0.6", **FAST).run()
    assert result.success and not result.back_sourced, result.error
    assert (result.registrations, result.migrations) == (3, 2)
    first, second = [e for e in result.exchanges if e.endpoint == "/peer/task"][:2]
    assert first.http_status == 503 and second.http_status is None and second.error


async def _answering_server(handler: Any) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"127.0.0.1:{runner.addresses[0][1]}"


_REGISTERED = {"code": 200, "data": {"taskId": "t", "fileLength": 10, "pieceSize": PIECE_4M}}


@pytest.mark.parametrize("slowness", ["silent", "trickling"])
async def test_a_registration_without_an_answer_in_time_moves_to_the_next_entry(slowness: str) -> None:
    """dfget's 5 s (here 0.3 s) is one deadline for the whole exchange, not a limit per read."""

    async def slow(request: web.Request) -> web.StreamResponse:
        if slowness == "silent":
            await asyncio.sleep(2)
            return web.json_response(_REGISTERED)
        # Headers at once, then a byte every 0.1 s: no single read waits long, the whole takes 2 s.
        body = json.dumps(_REGISTERED).encode()
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        await response.prepare(request)
        for byte in body:
            await response.write(bytes([byte]))
            await asyncio.sleep(0.1)
        return response

    async def fast(request: web.Request) -> web.Response:
        return web.json_response(_REGISTERED)

    (slow_runner, slow_node), (fast_runner, fast_node) = await _answering_server(slow), await _answering_server(fast)
    http = make_http_client()
    try:
        api = SupernodeApi(http, ExchangeLog(), timeout=0.3)
        registrar = Registrar(api, [slow_node, fast_node], lambda n: b"{}", VersionTraits((1, 0, 6)), DfgetResult())
        assert (await registrar.register()).node == fast_node
        first = api.log.exchanges[0]
        assert first.node == slow_node and first.http_status is None and "timeout" in first.error
        assert first.elapsed < 1.0
    finally:
        await http.aclose()
        await slow_runner.cleanup()
        await fast_runner.cleanup()


async def test_a_failed_piece_report_is_not_sent_again(supernode: FakeSupernode, tmp_path: Path) -> None:
    """Observed dfget 1.0.6 behaviour (issue 6), not PROTOCOL §5.3's three attempts."""
    supernode.waits = 0
    supernode.suc_status = 500
    async with Uploader(data_dir=tmp_path) as up:
        # The fake learns pieces from merged pull items only, so a lost report may stall it: bound the run.
        result = await Dfget(
            [supernode.node], supernode.url, tmp_path / "o.bin", uploader=up, version="1.0.6", timeout=1.0, **FAST
        ).run()
    fetched = [f.range for f in result.piece_fetches if f.ok]
    reported = [target.split("pieceRange=")[1] for target in supernode.reports]
    assert fetched and sorted(reported) == sorted(fetched)  # one report per stored piece, never resent
    suc = [e for e in result.exchanges if e.endpoint == "/peer/piece/suc"]
    assert len(suc) == len(fetched) and all(e.http_status == 500 for e in suc)


async def test_token_bucket_holds_concurrent_readers_to_the_rate() -> None:
    bucket = TokenBucket(1_000_000, burst=10_000)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def reader() -> None:
        for _ in range(10):
            await bucket.take(10_000)

    await asyncio.gather(*(reader() for _ in range(4)))
    elapsed = loop.time() - started
    # 400 kB at 1 MB/s, less the 10 kB burst: 0.39 s, never less.
    assert 0.385 <= elapsed < 0.8, elapsed
    with pytest.raises(ValueError):
        TokenBucket(0)


async def test_rate_limit_bounds_one_clients_download(supernode: FakeSupernode, tmp_path: Path) -> None:
    supernode.waits = 0
    rate = 300_000
    framed = len(supernode.data) + 5 * supernode.total
    bound = (framed - rate / 10) / rate  # every framed piece byte is paid for, less one burst
    async with Uploader(data_dir=tmp_path / "a") as a, Uploader(data_dir=tmp_path / "b") as b:
        limited = await Dfget(
            [supernode.node], supernode.url, tmp_path / "o.bin", uploader=a, rate_limit=rate, **FAST
        ).run()
        free = await Dfget([supernode.node], supernode.url, tmp_path / "p.bin", uploader=b, **FAST).run()
    digest = hashlib.sha256(supernode.data).hexdigest()
    assert limited.success and limited.sha256 == digest, limited.error
    assert free.success and free.sha256 == digest, free.error
    assert limited.duration >= bound, (limited.duration, bound)
    assert free.duration < bound  # the limit, not the fake, is what made the first one slow


async def test_v041_cdn_pattern_merge_quirk_waits_until_timeout(supernode: FakeSupernode, tmp_path: Path) -> None:
    """§15.11: without an uploader, 0.4.x never reports piece/suc and merges 503s away."""
    supernode.waits = 0
    result = await Dfget([supernode.node], supernode.url, tmp_path / "o.bin", timeout=1.0, **FAST).run()
    assert not result.success and result.error == "download timeout" and not result.back_sourced
    assert b'"port":0' in supernode.registrations[0]
    assert supernode.reports == []
    assert result.codes("/peer/task")[-1] == 602


async def test_vanished_peer_file_gives_404_report_and_retry(supernode: FakeSupernode, tmp_path: Path) -> None:
    supernode.waits = 0
    async with Uploader(data_dir=tmp_path / "a") as first, Uploader(data_dir=tmp_path / "b") as second:
        seed = await Dfget([supernode.node], supernode.url, tmp_path / "a.bin", uploader=first, **FAST).run()
        first.remove_task_file(seed.task_file_name)  # expiry GC: the peer still answers, with 404
        late = await Dfget([supernode.node], supernode.url, tmp_path / "b.bin", uploader=second, **FAST).run()
    assert seed.success and late.success, late.error
    assert late.sha256 == hashlib.sha256(supernode.data).hexdigest()
    assert any(f.http_status == 404 for f in late.piece_fetches)
    assert first.stats.statuses[404] >= 1
    assert any(f"errorType=FILE_NOT_EXIST&srcCid={late.cid}&dstCid={seed.cid}&dstIp=&" in e for e in supernode.errors)
    assert any(f"srcCid={late.cid}" in p and "&result=500&status=701&" in p for p in supernode.pulls)
    assert late.pieces_from_cdn == supernode.total


async def test_empty_file(tmp_path: Path) -> None:
    fake = await FakeSupernode(b"", PIECE_4M, waits=0).start()
    try:
        async with Uploader(data_dir=tmp_path) as up:
            result = await Dfget([fake.node], fake.url, tmp_path / "e.bin", uploader=up, **FAST).run()
        assert result.success and result.bytes == 0 and (tmp_path / "e.bin").read_bytes() == b""
        assert result.piece_fetches[0].range == f"0-{PIECE_4M - 1}"
    finally:
        await fake.stop()


async def test_instant_mode_sends_reports_without_bytes(supernode: FakeSupernode, tmp_path: Path) -> None:
    async with Uploader(data_dir=tmp_path) as up:
        out = tmp_path / "never.bin"
        result = await Dfget([supernode.node], supernode.url, out, uploader=up, instant_pieces=True, **FAST).run()
    assert result.success and result.sha256 is None and not out.exists()
    assert len(supernode.reports) == supernode.total
    assert up.stats.pieces_served == 0


async def test_v106_checks_piece_md5_and_reports_mismatch(tmp_path: Path) -> None:
    fake = await FakeSupernode(os.urandom(100_000), 64 * 1024 + 5, send_piece_md5=True, corrupt_cdn=True).start()
    try:
        result = await Dfget([fake.node], fake.url, tmp_path / "o.bin", version="1.0.6", timeout=1.5, **FAST).run()
        # Every CDN piece fails its md5, the p2p timeout expires, and 1.0.x falls back to the source.
        assert result.piece_failures > 0 and result.back_sourced
        assert result.success and result.sha256 == hashlib.sha256(fake.data).hexdigest()
        assert any("errorType=FILE_MD5_NOT_MATCH" in e for e in fake.errors)
        assert "&result=500&status=701&" in "".join(fake.pulls)
        assert len(fake.metrics) == 1 and b'"backsourceReason":"3"' in fake.metrics[0]
    finally:
        await fake.stop()


async def test_v106_uses_finish_md5(supernode: FakeSupernode, tmp_path: Path) -> None:
    supernode.finish_md5 = "0" * 32  # wrong on purpose: 1.0.6 must refuse to place the file
    result = await Dfget([supernode.node], supernode.url, tmp_path / "o.bin", version="1.0.6", **FAST).run()
    assert not result.success and result.md5_mismatch and not (tmp_path / "o.bin").exists()
    supernode.finish_md5 = ""
    async with Uploader(data_dir=tmp_path) as up:
        old = await Dfget(
            [supernode.node], supernode.url, tmp_path / "p.bin", version="0.4.1", uploader=up, **FAST
        ).run()
    assert old.success


async def test_register_failure_back_sources_or_fails(tmp_path: Path) -> None:
    origin = await FakeSupernode(b"payload-bytes" * 100, 64 * 1024 + 5).start()
    dead = "127.0.0.1:1"  # nothing listens on port 1
    try:
        result = await Dfget([dead], origin.url, tmp_path / "o.bin", **FAST).run()
        assert result.success and result.back_sourced and result.back_source_reason == 1
        assert (tmp_path / "o.bin").read_bytes() == origin.data
        assert result.register_attempts == 2 and all(e.http_status is None for e in result.exchanges)
        refused = await Dfget([dead], origin.url, tmp_path / "p.bin", back_source=False, **FAST).run()
        assert not refused.success and refused.back_source_reason == 1001
    finally:
        await origin.stop()


async def test_shared_http_client_keeps_only_dfget_headers(tmp_path: Path) -> None:
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"code": 612})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    http = make_http_client()
    try:
        api = SupernodeApi(http, ExchangeLog())
        await api.get(f"127.0.0.1:{runner.addresses[0][1]}", "/peer/service/down?taskId=t&cid=c")
        assert set(seen[0]) == {"Host", "User-Agent"} and seen[0]["User-Agent"] == "fasthttp"
    finally:
        await http.aclose()
        await runner.cleanup()


def test_instances_get_distinct_cids() -> None:
    a = Dfget(["n"], "http://a.b/c", Path("/tmp/x"))
    b = Dfget(["n"], "http://a.b/c", Path("/tmp/x"))
    assert a.cid != b.cid and a.cfg.task_file_name.startswith("x-")
    assert re.fullmatch(r"127\.0\.0\.1-\d+-\d+\.\d{3}", a.cid)


async def test_asyncio_leftovers_are_cleaned(supernode: FakeSupernode, tmp_path: Path) -> None:
    before = len(asyncio.all_tasks())
    await Dfget([supernode.node], supernode.url, tmp_path / "o.bin", version="1.0.6", **FAST).run()
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) <= before
