"""Files past 20 GB without moving 20 GB (issue 10, part 5): the geometry, the Redis state, and ``Range`` on 8001.

The piece geometry is checked at the lengths where 32-bit arithmetic or a piece size step would bite
(2^32 ± 1, 20 GiB ± 1, 64 GiB); the state scripts run on the real Redis with the piece numbers and
byte counts such a file produces; the piece server serves a sparse framed file of 20 GiB + 1 bytes over
loopback HTTP, whose real bytes are written only at the pieces read back (sha256-checked). The seed of a
whole 20 GB file is measured by ``benchmarks/bench_large_file.py``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from app.cdn.sink import SeedOutcome
from app.cdn.source import parse_content_range
from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.download.ranges import Partial, decide
from app.download.server import bound_port, start_download_server, stop_download_server
from app.protocol.pieces import (
    MAX_PIECE_SIZE,
    frame_header,
    frame_piece,
    framed_length,
    header_data_len,
    payload_size,
    piece_count,
    piece_num_of_range,
    piece_range,
    piece_size_for,
    provisional_piece_total,
)
from app.scheduler.core import CDN
from app.state import schema
from app.state.store import ClusterState, PeerRegistration

GIB = 1 << 30
BIG = 20 * GIB + 1  # "past 20 GB"
TID = "9b1c" + "0" * 60
URL = "http://127.0.0.1:1/huge.bin"


# --- geometry (PROTOCOL §7.6–7.8, §9.1) ----------------------------------------------------------------

# (raw length, framed piece size, pieces, framed length, payload bytes of the last piece): worked out by
# hand from §7.6–7.8, e.g. 20 GiB = 1365 × 15728635 + 5249705 bytes → 1366 pieces, 20 GiB + 5 × 1366 framed.
GEOMETRY = [
    (2**32 - 1, MAX_PIECE_SIZE, 274, 2**32 - 1 + 5 * 274, 2**32 - 1 - 273 * 15728635),
    (2**32, MAX_PIECE_SIZE, 274, 2**32 + 5 * 274, 1049941),
    (2**32 + 1, MAX_PIECE_SIZE, 274, 2**32 + 1 + 5 * 274, 1049942),
    (20 * GIB - 1, MAX_PIECE_SIZE, 1366, 20 * GIB - 1 + 5 * 1366, 5249704),
    (20 * GIB, MAX_PIECE_SIZE, 1366, 21474843310, 5249705),
    (BIG, MAX_PIECE_SIZE, 1366, 21474843311, 5249706),
    (64 * GIB, MAX_PIECE_SIZE, 4370, 64 * GIB + 5 * 4370, 64 * GIB - 4369 * 15728635),
    (15728635 * 1366, MAX_PIECE_SIZE, 1366, 15728635 * 1366 + 5 * 1366, 15728635),  # last piece exactly full
]


@pytest.mark.parametrize(("length", "piece_size", "pieces", "framed", "last_payload"), GEOMETRY)
def test_piece_geometry_past_4_and_20_gib(length: int, piece_size: int, pieces: int, framed: int,
                                          last_payload: int) -> None:
    assert piece_size_for(length) == piece_size
    payload = payload_size(piece_size)
    assert piece_count(length, piece_size) == pieces
    assert (pieces - 1) * payload < length <= pieces * payload
    assert framed_length(length, piece_size) == framed
    # The Go supernode's provisional total (§7.7) may be one short; at these lengths it is not.
    assert provisional_piece_total(length, piece_size) in (pieces - 1, pieces)
    assert length - (pieces - 1) * payload == last_payload
    last = pieces - 1
    start = last * piece_size
    assert piece_range(last, piece_size) == f"{start}-{start + piece_size - 1}"
    assert piece_num_of_range(piece_range(last, piece_size)) == last
    # The framed file ends inside the last slot, which dfget asks for whole (§7.7).
    assert start < framed <= start + piece_size
    assert framed == start + last_payload + 5
    header = frame_header(last_payload, piece_size)
    assert header_data_len(header) == last_payload
    assert int.from_bytes(header, "big") == last_payload | (piece_size << 4) < 2**32


def test_unknown_length_keeps_4_mib_pieces_whatever_the_size() -> None:
    # A chunked source of 64 GiB: the size is only known at the end, the pieces stay 4 MiB (§7.6).
    piece_size = piece_size_for(-1)
    assert piece_size == 4 << 20
    assert piece_count(64 * GIB, piece_size) == 16385
    assert framed_length(64 * GIB, piece_size) == 64 * GIB + 5 * 16385
    last = piece_range(16384, piece_size)
    assert last == "68719476736-68723671039"
    assert piece_num_of_range(last) == 16384


def test_ranges_past_4_gib_parse_exactly() -> None:
    # dfget's Range, nginx's Range parser and the seeder's Content-Range at offsets beyond int32/uint32.
    start = 274 * MAX_PIECE_SIZE
    assert start > 2**32
    assert piece_num_of_range(f"{start}-{start + MAX_PIECE_SIZE - 1}") == 274
    framed = framed_length(BIG, MAX_PIECE_SIZE)
    assert decide(f"bytes={start}-{start + MAX_PIECE_SIZE - 1}", framed) == Partial(start, start + MAX_PIECE_SIZE)
    assert decide(f"bytes={2**32 - 1}-{2**32}", framed) == Partial(2**32 - 1, 2**32 + 1)
    assert decide("bytes=-5", framed) == Partial(framed - 5, framed)
    assert decide(f"bytes={framed - 30}-{framed + 10**12}", framed) == Partial(framed - 30, framed)
    assert parse_content_range(f"bytes {5 * GIB}-{BIG - 1}/{BIG}") == (5 * GIB, BIG - 1, BIG)


# --- the state on the real Redis -----------------------------------------------------------------------


def reg(cid: str) -> PeerRegistration:
    return PeerRegistration(
        tid=TID, cid=cid, task_url=URL, raw_url=URL, md5="", identifier="", headers={}, peer_id=f"vm-{cid}",
        ip="127.0.0.1", port=40000, path=f"/peer/file/{cid}", host_name="vm", version="1.0.6",
        super_node_ip="127.0.0.1", call_system="", dfdaemon=False,
    )


def piece_lines(length: int, piece_size: int) -> list[str]:
    """``md5:framedLen`` per piece, as the seeder publishes them (the md5 part only names the piece)."""
    payload, pieces = payload_size(piece_size), piece_count(length, piece_size)
    return [f"{n:032x}:{min(payload, length - n * payload) + 5}" for n in range(pieces)]


@pytest.fixture
async def state(redis: aioredis.Redis, settings: Settings) -> ClusterState:
    return ClusterState(redis, settings)


async def test_a_20_gib_task_through_the_state_scripts(state: ClusterState, redis: aioredis.Redis) -> None:
    piece_size = piece_size_for(BIG)
    pieces, framed = piece_count(BIG, piece_size), framed_length(BIG, piece_size)
    first = await state.register(reg("c1"), BIG, piece_size, provisional_piece_total(BIG, piece_size))
    assert (first.result, first.http_file_length, first.piece_size) == ("ok", BIG, piece_size)
    lines = piece_lines(BIG, piece_size)
    assert await state.seed_pieces(TID, first.seed_epoch, 0, lines, BIG) == pieces
    assert await state.seed_finished(TID, first.seed_epoch, SeedOutcome(
        success=True, file_length=framed, raw_length=BIG, real_md5="f" * 32, piece_total=pieces)) == 1
    task = await redis.hgetall(schema.task_key(TID))
    assert (task["fileLength"], task["rawLength"], task["seedBytes"]) == (str(framed), str(BIG), str(BIG))
    assert await redis.hget(schema.cdn_key(TID), str(pieces - 1)) == lines[-1]

    # The last piece (offset past 20 GiB) from the seed cache: offered, then reported through the pull.
    snap = await state.pull(TID, "c1", 700, 502, -1, "", "q1")
    assert snap["kind"] == "snapshot"
    # A pull considers DF_PULL_WINDOW_PIECES of the 1366 pieces, in the scheduler's order: no holders
    # anywhere and nothing running, so the nearest to piece 0.
    window = state.settings.pull_window_pieces
    assert [p[0] for p in snap["pieces"]] == list(range(window))
    [given] = await state.assign(TID, "c1", "q1", [(pieces - 1, CDN)])
    assert (given.piece_num, given.md5) == (pieces - 1, lines[-1])
    last_range = piece_range(pieces - 1, piece_size)
    await state.pull(TID, "c1", 701, 503, piece_num_of_range(last_range), CDN, "q2")
    done = schema.done_key(TID, "c1")
    assert await redis.getbit(done, pieces - 1) == 1
    assert await redis.bitcount(done) == 1
    # Every other piece through /peer/piece/suc (SETBIT across the whole bitmap), then the finish.
    for n in range(pieces - 1):
        assert await state.piece_success(TID, "c1", n, CDN)
    assert await redis.bitcount(done) == pieces
    assert [await redis.getbit(done, n) for n in (0, 273, 274, pieces - 1, pieces)] == [1, 1, 1, 1, 0]
    final = await state.pull(TID, "c1", 701, 503, pieces - 1, CDN, "q3")
    assert final == {"kind": "finish", "md5": "f" * 32, "fileLength": framed}
    # The framed bytes the seed cache sent, counted once per piece with Lua numbers past 2^32.
    assert await redis.hget(schema.traffic_key(TID), "seed") == str(framed)


async def test_a_pull_samples_the_rarest_window_of_a_big_file(state: ClusterState, redis: aioredis.Redis) -> None:
    """Holders are sampled for the window only (a pull's Redis work stays flat as files grow): the pieces
    with the fewest holders, then those nearest to the pieces the client is running."""
    piece_size = piece_size_for(BIG)
    pieces = piece_count(BIG, piece_size)
    first = await state.register(reg("c1"), BIG, piece_size, provisional_piece_total(BIG, piece_size))
    assert await state.seed_pieces(TID, first.seed_epoch, 0, piece_lines(BIG, piece_size), BIG) == pieces
    for cid in ("p1", "p2"):
        await state.register(reg(cid), None, 0, 0)
    # Pieces 0..99 have two holders, 100..199 one, the rest none.
    for n in range(200):
        for cid in ("p1", "p2")[: 2 if n < 100 else 1]:
            await redis.sadd(schema.holders_key(TID, n), cid)
    window = state.settings.pull_window_pieces
    snap = await state.pull(TID, "c1", 700, 502, -1, "", "q1")
    assert [p[0] for p in snap["pieces"]] == list(range(200, 200 + window))
    # Running pieces 1000 and 1002: the unheld pieces nearest to 1001 come first.
    assert len(await state.assign(TID, "c1", "q1", [(1000, CDN), (1002, CDN)])) == 2
    snap = await state.pull(TID, "c1", 700, 502, -1, "", "q2")
    got = [p[0] for p in snap["pieces"]]
    assert len(got) == window and 1000 not in got and 1002 not in got
    assert max(abs(n - 1001) for n in got) <= window // 2 + 1 and 1001 in got, got
    assert all(p[2] == 0 for p in snap["pieces"])
    # A client allowed more pieces at once than half the window (a live peerDownLimit raised past it) is
    # offered twice its limit to choose from.
    down = window // 2 + 4
    snap = await state.pull(TID, "c1", 700, 502, -1, "", "q3", peer_down_limit=down)
    assert len(snap["pieces"]) == 2 * down


async def test_unknown_length_64_gib_bitmap(state: ClusterState, redis: aioredis.Redis) -> None:
    """4 MiB pieces of a 64 GiB file whose length came only at the end: 16,385 bits."""
    piece_size, length = piece_size_for(-1), 64 * GIB
    pieces = piece_count(length, piece_size)
    first = await state.register(reg("c1"), -1, piece_size, 0)
    assert (first.http_file_length, first.piece_size) == (-1, piece_size)
    assert await state.seed_pieces(TID, first.seed_epoch, 0, piece_lines(length, piece_size), length) == pieces
    assert await state.seed_finished(TID, first.seed_epoch, SeedOutcome(
        success=True, file_length=framed_length(length, piece_size), raw_length=length, real_md5="a" * 32,
        piece_total=pieces)) == 1
    wanted = [0, 1023, 1024, 8191, 8192, pieces - 2, pieces - 1]
    for n in wanted:
        assert await state.piece_success(TID, "c1", n, CDN)
    done = schema.done_key(TID, "c1")
    assert await redis.bitcount(done) == len(wanted)
    assert [n for n in range(pieces + 8) if await redis.getbit(done, n)] == wanted
    assert await redis.strlen(done) == -(-pieces // 8)
    # A reported piece past 64 GiB of framed offsets makes c1 its holder (a source for the others).
    assert await redis.smembers(schema.holders_key(TID, pieces - 1)) == {"c1"}


async def test_lengths_past_cjson_precision_come_back_exact(state: ClusterState) -> None:
    """cjson prints a Lua number with 14 significant digits: lengths ≥ 1e14 bytes (~91 TiB) would come
    back rounded (1.4073748835533e+14) from a script that returned them as numbers."""
    length = 2**47 + 1
    first = await state.register(reg("c1"), length, MAX_PIECE_SIZE, provisional_piece_total(length, MAX_PIECE_SIZE))
    assert first.http_file_length == length
    again = await state.register(reg("c2"), None, 0, 0)
    assert again.http_file_length == length
    framed = framed_length(length, MAX_PIECE_SIZE)
    lines = ["0" * 32 + ":5"]  # one piece listed, enough for a finish answer below
    assert await state.seed_pieces(TID, first.seed_epoch, 0, lines, length)
    assert await state.seed_finished(TID, first.seed_epoch, SeedOutcome(
        success=True, file_length=framed, raw_length=length, real_md5="b" * 32, piece_total=1)) == 1
    final = await state.pull(TID, "c1", 702, 501, -1, "", "q1")
    assert final["fileLength"] == framed


# --- Range on the real piece server, sparse seed file -------------------------------------------------


@dataclass
class Sparse:
    storage: LocalSeedStorage
    framed: int
    pieces: dict[int, bytes]  # piece number → its framed bytes, written at num * pieceSize


def framed_piece(num: int, length: int, piece_size: int) -> bytes:
    payload = payload_size(piece_size)
    return frame_piece(os.urandom(min(payload, length - num * payload)), piece_size)


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory) -> Sparse:
    storage = LocalSeedStorage(tmp_path_factory.mktemp("largefile-seed"))
    piece_size = piece_size_for(BIG)
    framed, last = framed_length(BIG, piece_size), piece_count(BIG, piece_size) - 1
    path: Path = storage.data_path(TID)
    path.parent.mkdir(parents=True, exist_ok=True)
    # 273 straddles 2^32, 274 starts past it, 1000 is the middle of a 20 GiB file, the last is short.
    pieces = {num: framed_piece(num, BIG, piece_size) for num in (0, 273, 274, 1000, last)}
    with path.open("wb") as handle:
        os.truncate(handle.fileno(), framed)
        for num, data in pieces.items():
            os.pwrite(handle.fileno(), data, num * piece_size)
    assert path.stat().st_size == framed
    assert path.stat().st_blocks * 512 < 256 << 20  # still sparse: only the written pieces take disk
    return Sparse(storage, framed, pieces)


@pytest.fixture
async def pieces_http(sparse: Sparse) -> AsyncIterator[httpx.AsyncClient]:
    runner = await start_download_server(sparse.storage, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound_port(runner)}", timeout=30) as http:
            yield http
    finally:
        await stop_download_server(runner)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


PATH = f"/download/{TID[:3]}/{TID}"


async def test_piece_slots_past_4_and_20_gib_over_http(pieces_http: httpx.AsyncClient, sparse: Sparse) -> None:
    piece_size = MAX_PIECE_SIZE
    for num, data in sparse.pieces.items():
        slot = piece_range(num, piece_size)
        reply = await pieces_http.get(PATH, headers={
            "Range": f"bytes={slot}", "Piecenum": str(num), "Piecesize": str(piece_size), "User-Agent": "dfget/1.0.6",
        })
        assert reply.status_code == 206, (num, reply.text)
        start = num * piece_size
        stop = min(start + piece_size, sparse.framed)  # the last slot is cut at the end of the file
        assert reply.headers["content-range"] == f"bytes {start}-{stop - 1}/{sparse.framed}"
        assert int(reply.headers["content-length"]) == stop - start == len(data)
        assert sha(reply.content) == sha(data)
        assert reply.content[-1:] == b"\x7f"
        assert header_data_len(reply.content[:4]) == len(data) - 5


async def test_byte_ranges_across_2_to_the_32(pieces_http: httpx.AsyncClient, sparse: Sparse) -> None:
    piece_size = MAX_PIECE_SIZE
    straddling = sparse.pieces[273]
    inside = 2**32 - 273 * piece_size  # where 2^32 falls inside piece 273
    reply = await pieces_http.get(PATH, headers={"Range": f"bytes={2**32 - 3}-{2**32 + 2}"})
    assert reply.status_code == 206
    assert reply.headers["content-range"] == f"bytes {2**32 - 3}-{2**32 + 2}/{sparse.framed}"
    assert reply.content == straddling[inside - 3 : inside + 3]
    tail = sparse.pieces[max(sparse.pieces)]
    reply = await pieces_http.get(PATH, headers={"Range": "bytes=-1000"})
    assert (reply.status_code, reply.content) == (206, tail[-1000:])
    reply = await pieces_http.get(PATH, headers={"Range": f"bytes={sparse.framed - 7}-"})
    assert (reply.status_code, reply.content) == (206, tail[-7:])
    reply = await pieces_http.get(PATH, headers={"Range": f"bytes={sparse.framed}-"})
    assert reply.status_code == 416
    assert reply.headers["content-range"] == f"bytes */{sparse.framed}"
    # Between the written pieces the file is a hole: zeros, served like any other bytes.
    hole = 500 * piece_size
    reply = await pieces_http.get(PATH, headers={"Range": f"bytes={hole}-{hole + 9}"})
    assert (reply.status_code, reply.content) == (206, bytes(10))
    head = await pieces_http.head(PATH)
    assert (head.status_code, head.headers["content-length"]) == (200, str(sparse.framed))
