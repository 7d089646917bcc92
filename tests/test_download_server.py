"""Piece download server (port 8001) over real loopback HTTP, on real framed files (PROTOCOL §9.2, §16.2)."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.cdn.storage import LocalSeedStorage
from app.download import metrics, server
from app.download.ranges import UNSATISFIABLE, WHOLE, Partial, decide, etag_for, if_range_allows
from app.download.server import bound_port, start_download_server, stop_download_server
from app.protocol.pieces import frame_piece, payload_size

PIECE = 4194304
RAW_LEN = 20971520
FRAMED_LEN = 20971550
TID = "722b477b471e3c784f4cdd0acfe6483e958412923283f9e7d8598ce3436e9854"
EMPTY_TID = "e" * 64
TEXT_PLAIN = "text/plain; charset=utf-8"


@dataclass
class Seeded:
    storage: LocalSeedStorage
    framed: bytes


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def framed_file(raw: bytes, piece_size: int) -> bytes:
    step = payload_size(piece_size)
    chunks = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
    return b"".join(frame_piece(chunk, piece_size) for chunk in chunks)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Seeded:
    storage = LocalSeedStorage(tmp_path_factory.mktemp("repo"))
    framed = framed_file(os.urandom(RAW_LEN), PIECE)
    assert len(framed) == FRAMED_LEN
    for tid, data in ((TID, framed), (EMPTY_TID, framed_file(b"", PIECE))):
        path = storage.data_path(tid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return Seeded(storage, framed)


@pytest.fixture
async def client(seeded: Seeded) -> AsyncIterator[httpx.AsyncClient]:
    runner = await start_download_server(seeded.storage, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{bound_port(runner)}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            yield http
    finally:
        await stop_download_server(runner)


def url(tid: str = TID) -> str:
    return f"/download/{tid[:3]}/{tid}"


def dfget_headers(piece_num: int, range_value: str) -> dict[str, str]:
    return {
        "Range": f"bytes={range_value}",
        "Piecenum": str(piece_num),
        "Piecesize": str(PIECE),
        "User-Agent": "dfget/0.4.1",
    }


async def test_full_piece_like_nginx(client: httpx.AsyncClient, seeded: Seeded) -> None:
    reply = await client.get(url(), headers=dfget_headers(1, "4194304-8388607"))
    assert reply.status_code == 206
    assert len(reply.content) == PIECE
    assert reply.content[:4] == bytes.fromhex("043ffffb")
    assert reply.content[-1:] == b"\x7f"
    assert sha(reply.content) == sha(seeded.framed[PIECE : 2 * PIECE])
    assert reply.headers["content-range"] == f"bytes 4194304-8388607/{FRAMED_LEN}"
    assert reply.headers["content-length"] == str(PIECE)
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.headers["accept-ranges"] == "bytes"
    mtime = seeded.storage.data_path(TID).stat().st_mtime
    assert reply.headers["last-modified"] == email.utils.formatdate(int(mtime), usegmt=True)
    assert reply.headers["etag"] == etag_for(mtime, FRAMED_LEN)


async def test_last_piece_is_truncated_at_eof(client: httpx.AsyncClient, seeded: Seeded) -> None:
    reply = await client.get(url(), headers=dfget_headers(5, "20971520-25165823"))
    assert reply.status_code == 206
    assert len(reply.content) == 30
    assert reply.content[:4] == bytes.fromhex("04000019")
    assert reply.content[-1:] == b"\x7f"
    assert sha(reply.content) == sha(seeded.framed[20971520:])
    assert reply.headers["content-range"] == f"bytes 20971520-20971549/{FRAMED_LEN}"


async def test_every_piece_slot_over_one_connection(client: httpx.AsyncClient, seeded: Seeded) -> None:
    for num in range(6):
        start = num * PIECE
        reply = await client.get(url(), headers=dfget_headers(num, f"{start}-{start + PIECE - 1}"))
        assert reply.status_code == 206
        assert sha(reply.content) == sha(seeded.framed[start : start + PIECE])


async def test_empty_task_piece_is_206_not_416(client: httpx.AsyncClient) -> None:
    reply = await client.get(url(EMPTY_TID), headers=dfget_headers(0, "0-4194303"))
    assert reply.status_code == 206
    assert reply.content == bytes.fromhex("04000000") + b"\x7f"
    assert reply.headers["content-range"] == "bytes 0-4/5"


async def test_no_range_sends_whole_file(client: httpx.AsyncClient, seeded: Seeded) -> None:
    reply = await client.get(url())
    assert reply.status_code == 200
    assert "content-range" not in reply.headers
    assert sha(reply.content) == sha(seeded.framed)


async def test_open_ended_and_suffix_ranges(client: httpx.AsyncClient, seeded: Seeded) -> None:
    reply = await client.get(url(), headers={"Range": "bytes=20971540-"})
    assert (reply.status_code, reply.content) == (206, seeded.framed[20971540:])
    reply = await client.get(url(), headers={"Range": "bytes=-7"})
    assert (reply.status_code, reply.content) == (206, seeded.framed[-7:])
    assert reply.headers["content-range"] == f"bytes 20971543-20971549/{FRAMED_LEN}"


async def test_head_has_headers_and_no_body(client: httpx.AsyncClient) -> None:
    reply = await client.head(url(), headers=dfget_headers(1, "4194304-8388607"))
    assert reply.status_code == 206
    assert reply.content == b""
    assert reply.headers["content-length"] == str(PIECE)
    assert reply.headers["content-range"] == f"bytes 4194304-8388607/{FRAMED_LEN}"


async def test_start_past_eof_is_416(client: httpx.AsyncClient) -> None:
    reply = await client.get(url(), headers={"Range": f"bytes={FRAMED_LEN}-{FRAMED_LEN + PIECE - 1}"})
    assert reply.status_code == 416
    assert reply.headers["content-range"] == f"bytes */{FRAMED_LEN}"


@pytest.mark.parametrize(
    "path",
    [
        f"/download/{TID[:3]}/{TID.upper()}",
        f"/download/{TID[:3]}/{TID[:63]}",
        f"/download/{TID[:3]}/{TID}0",
        f"/download/abc/{TID}",
        f"/download/{TID[:3]}/{TID[:60]}zzzz",
        f"/download/{TID[:3]}/{TID}.md5",
        f"/download/{TID[:3]}/%2e%2e",
        f"/download/{TID[:3]}/{'x' * 5000}",
        "/download/722",
        "/",
    ],
)
async def test_bad_paths_are_404(client: httpx.AsyncClient, path: str) -> None:
    reply = await client.get(path, headers={"Range": "bytes=0-9"})
    assert reply.status_code == 404
    assert reply.headers["content-type"] == TEXT_PLAIN


async def test_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    reply = await client.get(url("f" * 64), headers=dfget_headers(0, "0-4194303"))
    assert reply.status_code == 404
    assert reply.headers["content-type"] == TEXT_PLAIN


async def test_ping(client: httpx.AsyncClient) -> None:
    reply = await client.get("/_ping")
    assert (reply.status_code, reply.text) == (200, "OK")


async def test_size_is_read_at_request_time(client: httpx.AsyncClient, seeded: Seeded) -> None:
    tid = "0" * 64
    path = seeded.storage.data_path(tid)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"a" * 10)
    first = await client.get(url(tid), headers={"Range": "bytes=0-99"})
    with path.open("ab") as growing:
        growing.write(b"b" * 10)
    second = await client.get(url(tid), headers={"Range": "bytes=0-99"})
    assert first.headers["content-range"] == "bytes 0-9/10"
    assert (second.headers["content-range"], second.content) == ("bytes 0-19/20", b"a" * 10 + b"b" * 10)


async def test_nginx_style_edge_ranges(client: httpx.AsyncClient, seeded: Seeded) -> None:
    unit = await client.get(url(), headers={"Range": "items=0-9"})
    assert (unit.status_code, len(unit.content)) == (200, FRAMED_LEN)
    multi = await client.get(url(), headers={"Range": "bytes=0-9,20-29"})
    assert (multi.status_code, len(multi.content)) == (200, FRAMED_LEN)
    garbage = await client.get(url(), headers={"Range": "bytes=abc"})
    assert garbage.status_code == 416


async def test_if_range(client: httpx.AsyncClient) -> None:
    etag = (await client.head(url())).headers["etag"]
    matching = await client.get(url(), headers={"Range": "bytes=0-9", "If-Range": etag})
    stale = await client.get(url(), headers={"Range": "bytes=0-9", "If-Range": '"0-0"'})
    assert (matching.status_code, len(matching.content)) == (206, 10)
    assert (stale.status_code, len(stale.content)) == (200, FRAMED_LEN)


async def test_zero_copy_sendfile_is_used(
    client: httpx.AsyncClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real_sendfile = os.sendfile

    def spy(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        calls.append(count)
        return real_sendfile(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", spy)
    reply = await client.get(url(), headers=dfget_headers(2, "8388608-12582911"))
    assert sha(reply.content) == sha(seeded.framed[2 * PIECE : 3 * PIECE])
    assert calls, "asyncio did not reach os.sendfile()"


async def test_copy_fallback_without_loop_sendfile(
    client: httpx.AsyncClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unsupported(*_args: Any, **_kwargs: Any) -> int:
        raise NotImplementedError  # what uvloop does

    sendfile: Callable[..., Awaitable[int]] = unsupported
    monkeypatch.setattr(asyncio.get_running_loop(), "sendfile", sendfile)
    reply = await client.get(url(), headers=dfget_headers(5, "20971520-25165823"))
    assert sha(reply.content) == sha(seeded.framed[20971520:])
    reply = await client.get(url(), headers=dfget_headers(0, "0-4194303"))
    assert sha(reply.content) == sha(seeded.framed[:PIECE])


async def test_nosendfile_switch(client: httpx.AsyncClient, seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "_NOSENDFILE", True)
    reply = await client.get(url(), headers=dfget_headers(1, "4194304-8388607"))
    assert sha(reply.content) == sha(seeded.framed[PIECE : 2 * PIECE])


@pytest.mark.skipif(not metrics.available(), reason="prometheus_client not installed")
async def test_metrics_count_requests_and_bytes(client: httpx.AsyncClient) -> None:
    def sample(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = (await client.get("/metrics")).text
    await client.get(url(), headers=dfget_headers(5, "20971520-25165823"))
    after = (await client.get("/metrics")).text
    assert sample(after, "dragonfly_supernode_download_bytes_total") - sample(
        before, "dragonfly_supernode_download_bytes_total"
    ) == pytest.approx(30)
    assert sample(after, 'dragonfly_supernode_download_requests_total{code="206"}') > sample(
        before, 'dragonfly_supernode_download_requests_total{code="206"}'
    )


# nginx 1.22.1 answers for a 100-byte file and an empty one, probed with curl (status, body range).
NGINX_100 = [
    ("bytes=0-9", Partial(0, 10)),
    ("bytes=90-200", Partial(90, 100)),
    ("bytes=99-", Partial(99, 100)),
    ("bytes=100-", UNSATISFIABLE),
    ("bytes=100-200", UNSATISFIABLE),
    ("bytes=-10", Partial(90, 100)),
    ("bytes=-0", UNSATISFIABLE),
    ("bytes=-200", Partial(0, 100)),
    ("bytes=abc", UNSATISFIABLE),
    ("bytes=5-3", UNSATISFIABLE),
    ("items=0-5", WHOLE),
    ("BYTES=0-9", Partial(0, 10)),
    ("bytes= 0-9", Partial(0, 10)),
    ("bytes=0 - 9 ", Partial(0, 10)),
    ("bytes=0-9,200-300", Partial(0, 10)),
    ("bytes=0-9,20-29", WHOLE),  # nginx: multipart by default; WHOLE with max_ranges 1
    ("bytes=0-60,40-99", WHOLE),
    ("bytes=0-", Partial(0, 100)),
    ("bytes=0-0", Partial(0, 1)),
    ("bytes=", WHOLE),
    ("bytes=-", UNSATISFIABLE),
    ("bytes=0-9x", UNSATISFIABLE),
    ("bytes=99999999999999999999-", UNSATISFIABLE),
    (None, WHOLE),
]
NGINX_EMPTY = [
    ("bytes=0-4194303", WHOLE),
    ("bytes=0-", WHOLE),
    ("bytes=-5", WHOLE),
    ("bytes=1-", UNSATISFIABLE),
]


@pytest.mark.parametrize(("header", "expected"), NGINX_100)
def test_range_decisions_match_nginx_100(header: str | None, expected: object) -> None:
    assert decide(header, 100) == expected


@pytest.mark.parametrize(("header", "expected"), NGINX_EMPTY)
def test_range_decisions_match_nginx_empty(header: str, expected: object) -> None:
    assert decide(header, 0) == expected


def test_if_range_values() -> None:
    # The captured nginx reply (samples/07) had ETag "6b0a5d14-140001e" for the 20971550-byte file.
    assert etag_for(0x6B0A5D14 + 0.9, FRAMED_LEN) == '"6b0a5d14-140001e"'
    mtime = 1795870530.7  # Sat, 28 Nov 2026 12:55:30 GMT
    etag = etag_for(mtime, 100)
    assert if_range_allows(etag, etag, mtime)
    assert not if_range_allows("W/" + etag, etag, mtime)
    assert if_range_allows("Sat, 28 Nov 2026 12:55:30 GMT", etag, mtime)
    assert not if_range_allows("Sat, 28 Nov 2026 12:55:31 GMT", etag, mtime)
    assert not if_range_allows("garbage", etag, mtime)


def test_module_layout_matches_storage(tmp_path: Path) -> None:
    assert LocalSeedStorage(tmp_path).data_path(TID) == tmp_path / "download" / "722" / TID


def _linked_cache(base: Path) -> tuple[LocalSeedStorage, list[str]]:
    """A seed cache with one real file ("a"*64) and task paths that are symlinks out of it."""
    storage = LocalSeedStorage(base / "repo")
    secret = base / "outside" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"not a seed file\n" * 8)
    real_tid, file_link, dir_link, etc_link = "a" * 64, "b" * 64, "c" * 64, "d" * 64
    storage.data_path(real_tid).parent.mkdir(parents=True)
    storage.data_path(real_tid).write_bytes(b"seed bytes" * 10)
    storage.data_path(file_link).parent.mkdir(parents=True)
    storage.data_path(file_link).symlink_to(secret)  # the file itself is a link
    (secret.parent / dir_link).write_bytes(b"also outside" * 10)
    storage.data_path(dir_link).parent.symlink_to(secret.parent, target_is_directory=True)  # its prefix is
    links = [file_link, dir_link]
    if Path("/etc/hostname").is_file():  # the finding's own target
        storage.data_path(etc_link).parent.mkdir(parents=True)
        storage.data_path(etc_link).symlink_to("/etc/hostname")
        links.append(etc_link)
    for tid in links:
        assert storage.data_path(tid).read_bytes()  # the links do resolve
    return storage, links


async def test_symlinks_out_of_the_seed_directory_are_never_served(tmp_path: Path) -> None:
    storage, links = _linked_cache(tmp_path)
    runner = await start_download_server(storage, "127.0.0.1", 0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{bound_port(runner)}", timeout=10) as http:
            served = await http.get(url("a" * 64), headers={"Range": "bytes=0-9"})
            assert served.status_code == 206 and served.content == b"seed bytes"
            for tid in links:
                for method in ("GET", "HEAD"):
                    reply = await http.request(method, url(tid), headers={"Range": "bytes=0-9"})
                    assert reply.status_code == 404, (tid, method, reply.status_code)
                    assert reply.content in (b"", b"404: Not Found")
    finally:
        await stop_download_server(runner)
