"""The REST API through a live supernode: tasks, pieces, peers (legacy shapes of samples/14), cluster.

Real Redis, real HTTP, real seeding from a local source server; no mocks.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis as sync_redis
from redis.asyncio import Redis

from app.core.config import Settings
from app.peers.service import PeerService
from app.protocol.taskid import task_id
from app.state.schema import PEERS, dt_key, task_prefix
from tests.cluster import TEST_TOKEN, Cluster
from tests.live import Live, live_supernode
from tests.samples import SAMPLES
from tests.sources import SourceServer, closed_port
from tests.test_bridge import registration, wait_status

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PIECE = 4 * 1024 * 1024


def curl_exchanges(name: str) -> dict[str, tuple[int, bytes]]:
    """``=== curl -si [-X M] URL [-d BODY]`` sections → "METHOD path" → (status, body)."""
    out = {}
    for section in (SAMPLES / name).read_text().split("=== curl ")[1:]:
        command, _, response = section.partition("\n")
        method = re.search(r"-X (\w+)", command)
        path = re.search(r"http://[^/\s]+(\S*)", command)
        assert path is not None
        head, _, body = response.strip("\n").partition("\n\n")
        status = int(head.splitlines()[0].split()[1])
        out[f"{method.group(1) if method else 'GET'} {path.group(1)}"] = (status, body.strip().encode())
    return out


CAPTURED = curl_exchanges("14_supernode_misc_api_curl.txt")


def api(live: Live) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=live.api, headers=AUTH, timeout=10)


async def seeded_task(http: httpx.AsyncClient, redis: Redis, url: str, *cids: str) -> str:
    for n, cid in enumerate(cids or ("127.0.0.1-1-1.000",)):
        body = registration(url, cid) | {"port": 40001 + n}
        assert (await http.post("/peer/registry", json=body)).json()["code"] == 200
    tid = task_id(url)
    await wait_status(redis, tid, "SUCCESS")
    return tid


# --- tasks -------------------------------------------------------------------------------------------


async def test_task_detail_list_pieces_and_full_delete_after_a_real_seed(settings: Settings, redis: Redis) -> None:
    data = os.urandom(9 * 1024 * 1024 + 7)
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        source.add("f.bin", data)
        url = source.url("f.bin")
        tid = await seeded_task(http, redis, url, "127.0.0.1-1-1.000", "127.0.0.1-2-2.000")

        detail = (await http.get(f"/api/v1/tasks/{tid}")).json()
        assert {k: detail[k] for k in ("ID", "cdnStatus", "httpFileLength", "pieceSize", "pieceTotal")} == {
            "ID": tid, "cdnStatus": "SUCCESS", "httpFileLength": len(data), "pieceSize": PIECE, "pieceTotal": 3}
        assert detail["fileLength"] == len(data) + 3 * 5  # framed
        assert detail["rawURL"] == detail["taskURL"] == url
        assert detail["realMd5"] == hashlib.md5(data).hexdigest()
        for omitted in ("md5", "identifier", "headers", "asSeed"):  # zero/empty values are omitted, as Go
            assert omitted not in detail
        progress = detail["progress"]
        assert progress["piecesSeeded"] == 3 and progress["bytes"] == len(data) and progress["percent"] == 100
        assert RFC3339_MS.match(progress["started"]) and RFC3339_MS.match(detail["accessed"])
        # The rate of the finished seed: its bytes over its own duration.
        seconds = (datetime.fromisoformat(progress["finished"].replace("Z", "+00:00"))
                   - datetime.fromisoformat(progress["started"].replace("Z", "+00:00"))).total_seconds()
        assert seconds > 0 and progress["rateBytesPerSecond"] == round(len(data) / seconds, 1)
        assert detail["peers"] == 2

        listing = (await http.get("/api/v1/tasks")).json()
        assert listing["total"] == 1 and [t["ID"] for t in listing["tasks"]] == [tid]
        for query, expected in (("status=SUCCESS", 1), ("status=FAILED", 0), ("url=f.bin", 1), ("url=nope", 0)):
            assert (await http.get(f"/api/v1/tasks?{query}")).json()["total"] == expected, query

        # Peer 2 fetched piece 1 from peer 1 and reports it (twice: a retry must not count twice).
        for _ in range(2):
            report = f"/peer/piece/suc?taskId={tid}&cid=127.0.0.1-2-2.000&dstCid=127.0.0.1-1-1.000&pieceRange="
            assert (await http.get(report + f"{PIECE}-{2 * PIECE - 1}")).json() == {"code": 611}
        pieces = (await http.get(f"/api/v1/tasks/{tid}/pieces")).json()
        assert pieces["pieceTotal"] == 3 and [p["pieceNum"] for p in pieces["pieces"]] == [0, 1, 2]
        assert all(p["seeded"] and re.fullmatch(r"[0-9a-f]{32}", p["md5"]) for p in pieces["pieces"])
        assert [p["length"] for p in pieces["pieces"]] == [PIECE, PIECE, len(data) - 2 * (PIECE - 5) + 5]
        (holder,) = pieces["pieces"][1]["holders"]
        assert holder == {"cid": "127.0.0.1-2-2.000", "ip": "127.0.0.1", "port": 40002, "peerId": holder["peerId"]}
        assert re.fullmatch(r"h-127\.0\.0\.1-\d{19}", holder["peerId"])
        assert pieces["pieces"][0]["holders"] == []
        page = (await http.get(f"/api/v1/tasks/{tid}/pieces?offset=2&limit=5")).json()
        assert [p["pieceNum"] for p in page["pieces"]] == [2]

        served = await redis.hmget(dt_key(tid, "127.0.0.1-1-1.000"), ["servedPieces", "servedBytes"])
        assert served == ["1", str(PIECE)]

        seed_file = sn.settings.seed_path / "download" / tid[:3] / tid
        assert seed_file.exists()
        deleted = await http.delete(f"/api/v1/tasks/{tid}?full=true")
        assert deleted.status_code == 200 and deleted.content == b""
        assert [key async for key in redis.scan_iter(match=f"{task_prefix(tid)}*")] == []
        assert await redis.zscore("df:tasks", tid) is None
        assert not seed_file.exists() and not seed_file.with_name(f"{tid}.meta").exists()
        gone = await http.get(f"/api/v1/tasks/{tid}")
        assert gone.status_code == 404 and gone.json() == {"code": 404, "message": f"task {tid} not found"}
        assert (await http.delete(f"/api/v1/tasks/{tid}?full=true")).status_code == 404


async def test_delete_without_full_keeps_the_seed_files(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        source.add("k.bin", os.urandom(100_000))
        tid = await seeded_task(http, redis, source.url("k.bin"))
        assert (await http.delete(f"/api/v1/tasks/{tid}")).status_code == 200
        assert (sn.settings.seed_path / "download" / tid[:3] / tid).exists()
        assert (await http.get(f"/api/v1/tasks/{tid}")).status_code == 404
        # The files alone are still something a full delete removes.
        assert (await http.delete(f"/api/v1/tasks/{tid}?full=1")).status_code == 200
        assert not (sn.settings.seed_path / "download" / tid[:3] / tid).exists()


async def test_task_list_pages_by_last_access(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        tids = []
        for name in ("a.bin", "b.bin", "c.bin"):
            source.add(name, os.urandom(1000))
            tids.append(await seeded_task(http, redis, source.url(name)))
        newest_first = list(reversed(tids))
        pages = [(await http.get(f"/api/v1/tasks?limit=2&offset={o}")).json() for o in (0, 2, 4)]
        assert [[t["ID"] for t in p["tasks"]] for p in pages] == [newest_first[:2], newest_first[2:], []]
        assert {p["total"] for p in pages} == {3}
        # A pull makes a task the most recently accessed.
        await http.get(f"/peer/task?srcCid=127.0.0.1-1-1.000&dstCid=&range=&result=502&status=700&taskId={tids[0]}")
        assert (await http.get("/api/v1/tasks?limit=1")).json()["tasks"][0]["ID"] == tids[0]


async def test_registration_headers_are_shown_with_credentials_masked(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        source.add("h.bin", b"x" * 10, auth="Bearer s3cret")
        url = source.url("h.bin")
        body = registration(url) | {"headers": ["Authorization:Bearer s3cret", "X-Trace:7"]}
        assert (await http.post("/peer/registry", json=body)).json()["code"] == 200
        tid = task_id(url)
        await wait_status(redis, tid, "SUCCESS")
        detail = (await http.get(f"/api/v1/tasks/{tid}")).json()
    assert detail["headers"] == {"Authorization": "<redacted>", "X-Trace": "7"}


@pytest.mark.parametrize(
    "path",
    ["/api/v1/tasks?limit=0", "/api/v1/tasks?limit=x", "/api/v1/tasks?status=DONE", "/api/v1/tasks/not-a-task-id",
     "/api/v1/tasks/" + "A" * 64, "/api/v1/tasks/" + "0" * 64 + "/pieces?offset=-1"],
)
async def test_bad_input_is_a_400_in_the_error_shape(settings: Settings, path: str) -> None:
    async with live_supernode(settings) as sn, api(sn) as http:
        answer = await http.get(path)
    assert answer.status_code == 400
    body = answer.json()
    assert set(body) == {"code", "message"} and body["code"] == 400 and body["message"]


async def test_unknown_routes_use_the_error_shape_but_peer_paths_keep_theirs(settings: Settings) -> None:
    async with live_supernode(settings) as sn, api(sn) as http:
        unknown = await http.get("/api/v1/nothing")
        wrong_method = await http.put("/api/v1/tasks")
        dfget = await http.get("/peer/nothing")
    assert unknown.status_code == 404 and unknown.json() == {"code": 404, "message": "Not Found"}
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == 405
    assert dfget.status_code == 404 and dfget.json() == {"detail": "Not Found"}


async def test_rest_piece_error_needs_dst_pid_and_blacklists_the_peer(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        source.add("e.bin", os.urandom(1000))
        tid = await seeded_task(http, redis, source.url("e.bin"), "127.0.0.1-1-1.000", "127.0.0.1-2-2.000")
        records = [orjson.loads(v) for v in (await redis.hgetall(PEERS)).values()]
        dst_pid = next(r["ID"] for r in records if r.get("cid") == "127.0.0.1-1-1.000")
        route = f"/api/v1/tasks/{tid}/pieces/0-4194303/error"
        missing = await http.request("GET", route, content=b'{"srcCid":"127.0.0.1-2-2.000"}')
        body = {"DSTPID": dst_pid, "srcCid": "127.0.0.1-2-2.000", "errorType": "FILE_NOT_EXIST"}
        answer = await http.request("GET", route, content=orjson.dumps(body))
        assert await redis.sismember(f"{task_prefix(tid)}black:127.0.0.1-2-2.000", "127.0.0.1-1-1.000")
        assert await redis.hget(dt_key(tid, "127.0.0.1-1-1.000"), "down") == "1"
    assert missing.status_code == 400 and missing.json() == {"code": 400, "message": "dstPid is required"}
    assert answer.status_code == 200 and answer.content == b""


# --- peers ---------------------------------------------------------------------------------------------

PEER_KEYS = ["ID", "IP", "created", "hostName", "port", "version"]


def assert_legacy_peer(peer: dict[str, Any]) -> None:
    """The field names, order and JSON types of a captured PeerInfo (samples/14)."""
    assert list(peer) == [k for k in PEER_KEYS if k in peer] and set(PEER_KEYS) - {"version"} <= set(peer)
    assert all(isinstance(peer[k], str) for k in ("ID", "IP", "created", "hostName"))
    assert isinstance(peer["port"], int) and isinstance(peer.get("version", ""), str)
    assert RFC3339_MS.match(peer["created"])
    assert re.fullmatch(rf"{re.escape(peer['hostName'])}-{re.escape(peer['IP'])}-\d{{19}}", peer["ID"])


def test_the_captured_peer_answers_are_valid_test_vectors() -> None:
    status, body = CAPTURED["GET /peers"]
    assert status == 200 and CAPTURED["GET /v1/peers"] == (status, body)
    captured = orjson.loads(body)
    for peer in captured:
        assert_legacy_peer(peer)
    assert "version" not in captured[0] and captured[0]["port"] == 8001  # the supernode's own peer
    status, created = CAPTURED["POST /peers"]
    assert status == 201 and re.fullmatch(rb'\{"ID":"h-127\.0\.0\.6-\d{19}"\}', created)


async def test_legacy_peers_answer_with_the_captured_shapes(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        source.add("p.bin", os.urandom(1000))
        await seeded_task(http, redis, source.url("p.bin"))
        # The captured request, byte for byte: lower-case "ip" (Go matches keys case-insensitively).
        created = await http.post("/peers", content=b'{"ip":"127.0.0.6","hostName":"h","port":15001,"version":"x"}')
        listed = await http.get("/peers")
        versioned = await http.get("/v1/peers")
        peer_id = created.json()["ID"]
        one = await http.get(f"/peers/{peer_id}")
        deleted = await http.delete(f"/peers/{peer_id}")
        after = await http.get(f"/peers/{peer_id}")
    assert created.status_code == 201 and re.fullmatch(r"h-127\.0\.0\.6-\d{19}", peer_id)
    assert list(created.json()) == ["ID"]
    assert listed.status_code == 200 and versioned.json() == listed.json()
    peers = listed.json()
    for peer in peers:
        assert_legacy_peer(peer)
    cdn, dfget, manual = peers  # oldest first: the seed cache registers at start-up
    assert (cdn["IP"], cdn["port"], "version" in cdn) == ("127.0.0.1", sn.settings.download_port, False)
    assert (dfget["IP"], dfget["hostName"], dfget["port"], dfget["version"]) == ("127.0.0.1", "h", 40001, "1.0.6")
    assert manual == one.json() and (manual["port"], manual["version"]) == (15001, "x")
    assert deleted.status_code == 200 and deleted.content == b""
    assert after.status_code == 404 and after.json() == {"code": 404, "message": f"peer {peer_id} not found"}


async def test_peer_list_pages_and_sorts_by_creation(settings: Settings) -> None:
    async with live_supernode(settings) as sn, api(sn) as http:
        ids = [(await http.post("/api/v1/peers", json={"IP": f"10.0.0.{n}", "hostName": "h", "port": 0})).json()["ID"]
               for n in range(1, 5)]
        cdn_id = (await http.get("/peers")).json()[0]["ID"]
        everything = [cdn_id, *ids]
        asc = [p["ID"] for p in (await http.get("/peers?pageNum=1&pageSize=2")).json()]
        desc = [p["ID"] for p in (await http.get("/peers?pageNum=0&pageSize=2&sortDirect=desc&sortKey=x")).json()]
        beyond = (await http.get("/peers?pageNum=9&pageSize=2")).json()
    assert asc == everything[2:4] and desc == everything[::-1][:2] and beyond == []


async def test_replicas_sharing_an_address_share_one_seed_cache_peer(settings: Settings, redis: Redis) -> None:
    peers = PeerService(redis, settings)
    first = await peers.ensure_cdn_peer("replica-a")
    assert await peers.ensure_cdn_peer("replica-b") == first  # a second replica behind the same VIP
    assert await peers.delete(first)
    again = await peers.ensure_cdn_peer("replica-b")  # the next replica start re-creates it, as Go's restart
    assert again != first and again.startswith("replica-b-127.0.0.1-")
    assert [r["ID"] for r in await peers.records()] == [again]


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"{", b'{"IP":"1.2.3","hostName":"h"}', b'{"IP":"1.2.3.4","hostName":"-h"}',
     b'{"IP":"1.2.3.4","hostName":"h","port":80}', b'{"IP":"1.2.3.4","hostName":"h","port":"x"}', b'{"hostName":"h"}'],
)
async def test_bad_peer_registrations_are_400(settings: Settings, body: bytes) -> None:
    async with live_supernode(settings) as sn, api(sn) as http:
        answer = await http.post("/api/v1/peers", content=body)
    assert answer.status_code == 400 and answer.json()["code"] == 400, answer.text


async def test_v1_peers_show_current_tasks_and_bytes_served(settings: Settings, redis: Redis) -> None:
    data = os.urandom(6 * 1024 * 1024)
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        source.add("s.bin", data)
        tid = await seeded_task(http, redis, source.url("s.bin"), "127.0.0.1-1-1.000", "127.0.0.1-2-2.000")
        for piece in (0, 1):
            await http.get(f"/peer/piece/suc?taskId={tid}&cid=127.0.0.1-2-2.000&dstCid=127.0.0.1-1-1.000"
                           f"&pieceRange={piece * PIECE}-{(piece + 1) * PIECE - 1}")
        views = {(p["port"]): p for p in (await http.get("/api/v1/peers")).json()}
        source_peer = views[40001]
        detail = (await http.get(f"/api/v1/peers/{source_peer['ID']}")).json()
    assert detail == source_peer
    assert source_peer["servedPieces"] == 2
    assert source_peer["servedBytes"] == PIECE + (len(data) - (PIECE - 5) + 5)
    assert source_peer["tasks"] == [{"taskId": tid, "cid": "127.0.0.1-1-1.000", "peerId": source_peer["ID"],
                                     "status": "WAITING", "down": False, "servedPieces": 2,
                                     "servedBytes": source_peer["servedBytes"]}]
    assert views[40002]["servedBytes"] == 0 and views[40002]["tasks"][0]["cid"] == "127.0.0.1-2-2.000"
    cdn = views[sn.settings.download_port]
    assert cdn["seedCache"] is True and cdn["tasks"] == []


# --- cluster and route lists -----------------------------------------------------------------------------


async def test_cluster_view_shows_this_replica_and_the_backing_services(settings: Settings, redis: Redis) -> None:
    async with SourceServer() as source, live_supernode(settings) as sn, api(sn) as http:
        source.add("c.bin", os.urandom(300_000))
        await seeded_task(http, redis, source.url("c.bin"))
        view = (await http.get("/api/v1/cluster")).json()
        replicas_after_stop = None
    async with live_supernode(settings) as again, api(again) as http:
        replicas_after_stop = (await http.get("/api/v1/cluster")).json()["replicas"]
    (me,) = view["replicas"]
    assert me["self"] is True and me["port"] == sn.settings.port and me["downloadPort"] == sn.settings.download_port
    assert me["id"].endswith(f"-{os.getpid()}-{sn.settings.port}") and me["mode"] == "cluster"
    assert RFC3339_MS.match(me["started"]) and RFC3339_MS.match(me["heartbeat"])
    assert view["redis"]["ok"] is True and view["redis"]["latencyMs"] >= 0 and view["redis"]["usedMemoryBytes"] > 0
    # No DF_DATABASE_URL in cluster mode: no audit database, and the view says so (the SQLite probe is
    # covered by test_audit's embedded-mode test).
    database = view["database"]
    assert database["status"] == "not configured" and database["ok"] is False
    assert "DF_DATABASE_URL is empty" in database["error"]
    assert view["workers"] == {"mode": "in-process", "ok": True, "workers": [], "runningSeeds": 0}
    cache = view["seedCache"]
    assert cache["usedBytes"] >= 300_000 and 0 < cache["freeBytes"] <= cache["totalBytes"]
    # A stopped replica deregisters: the next one sees only itself.
    assert [r["port"] for r in replicas_after_stop] == [again.settings.port]


async def test_cluster_view_reports_an_unreachable_audit_database(settings: Settings) -> None:
    broken = settings.model_copy(update={"database_url": f"postgresql://u:pw@127.0.0.1:{closed_port()}/db"})
    async with live_supernode(broken) as sn, api(sn) as http:
        down = (await http.get("/api/v1/cluster")).json()["database"]
    assert down["status"] == "error" and down["ok"] is False and down["error"]
    assert "pw" not in down["url"] and down["url"].startswith("postgresql+asyncpg://u:***@127.0.0.1")


async def test_v1_route_list_has_the_go_shape(settings: Settings) -> None:
    async with live_supernode(settings) as sn, api(sn) as http:
        v1 = (await http.get("/api/v1/")).json()
        legacy = (await http.get("/")).json()
    assert (v1["category"], v1["prefix"]) == ("v1 api", "/api/v1")
    routes = {(r["method"], r["path"]) for r in v1["api"]}
    assert all(set(r) == {"method", "path"} for r in v1["api"])
    assert {("GET", "/peers"), ("POST", "/peers"), ("GET", "/peers/{id}"), ("DELETE", "/peers/{id}"),
            ("GET", "/tasks/{id}"), ("DELETE", "/tasks/{id}"), ("GET", "/tasks/{id}/pieces/{pieceRange}/error"),
            ("GET", "/")} <= routes
    assert ("POST", "/peer/registry") in {(r["method"], r["path"]) for r in legacy["api"]}


async def test_embedded_mode_serves_the_same_api(settings: Settings) -> None:
    embedded = settings.model_copy(update={"redis_url": "", "api_tokens": ""})
    async with live_supernode(embedded) as sn, httpx.AsyncClient(base_url=sn.api) as http:  # open: no tokens
        view = (await http.get("/api/v1/cluster")).json()
        peers = (await http.get("/peers")).json()
    assert view["redis"]["ok"] is True and view["redis"]["embedded"] is True
    assert any(r["self"] and r["mode"] == "embedded" for r in view["replicas"])
    assert any(p["port"] == sn.settings.download_port for p in peers)


@pytest.mark.slow
def test_cluster_view_of_real_replicas_and_a_celery_worker(tmp_path: Path, redis_url: str, broker_url: str) -> None:
    for url in (redis_url, broker_url):
        sync_redis.Redis.from_url(url).flushdb()
    nodes = Cluster(tmp_path / "cluster", redis_url, broker_url, extra_env={"DF_REPLICA_HEARTBEAT_SECONDS": "0.5"})
    nodes.workdir.mkdir()
    try:
        first, second = nodes.start_replica(), nodes.start_replica()
        nodes.start_worker()
        view = httpx.get(f"http://{first.node}/api/v1/cluster", headers=AUTH, timeout=10).json()
        second.kill()  # SIGKILL: no deregistration, the heartbeat key has to expire (3 × 0.5 s)
        time.sleep(2.5)
        after = httpx.get(f"http://{first.node}/api/v1/cluster", headers=AUTH, timeout=10).json()
        peers = httpx.get(f"http://{first.node}/peers", headers=AUTH, timeout=10).json()
    finally:
        nodes.stop()
        sync_redis.Redis.from_url(redis_url).flushdb()
    assert sorted(r["port"] for r in view["replicas"]) == sorted([first.port, second.port])
    assert [r["port"] for r in view["replicas"] if r["self"]] == [first.port]
    workers = view["workers"]
    assert workers["mode"] == "celery" and workers["ok"] is True
    assert len(workers["workers"]) == 1 and workers["workers"][0].startswith("w0@")
    assert [r["port"] for r in after["replicas"]] == [first.port]
    # One seed-cache peer per advertised address (these replicas' piece ports differ; behind a VIP they
    # share one, and so one record).
    assert sorted(p["port"] for p in peers) == sorted([first.download_port, second.download_port])
