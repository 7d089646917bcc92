"""The seeder against a real local origin and real files (no Redis: a recording SeedSink)."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from app.cdn.seeder import LEASE_LOST, md5_file_lines, seed
from app.cdn.sink import SeedJob, SeedOutcome
from app.cdn.source import make_source_client, probe_source
from app.cdn.storage import LocalSeedStorage
from app.protocol.pieces import DEFAULT_PIECE_SIZE, frame_piece, payload_size, piece_md5
from app.protocol.taskid import task_id
from tests.sources import SourceServer, closed_port

PAYLOAD = payload_size(DEFAULT_PIECE_SIZE)


@dataclass
class RecordingSink:
    """Test double of our SeedSink: records every call with a timestamp."""

    lose_after_pieces: int | None = None  # piece_ready returns False from this piece number on
    heartbeat_ok: bool = True
    pieces: list[tuple[int, str, int, float]] = field(default_factory=list)
    bulk: list[tuple[list[str], int]] = field(default_factory=list)
    heartbeats: int = 0
    outcomes: list[tuple[SeedOutcome, float]] = field(default_factory=list)

    async def piece_ready(self, tid: str, epoch: int, piece_num: int, md5: str, seeded_bytes: int) -> bool:
        self.pieces.append((piece_num, md5, seeded_bytes, time.monotonic()))
        return self.lose_after_pieces is None or piece_num < self.lose_after_pieces

    async def pieces_ready(self, tid: str, epoch: int, md5s: list[str], seeded_bytes: int) -> bool:
        self.bulk.append((md5s, seeded_bytes))
        return True

    async def heartbeat(self, tid: str, epoch: int) -> bool:
        self.heartbeats += 1
        return self.heartbeat_ok

    async def finished(self, tid: str, epoch: int, outcome: SeedOutcome) -> None:
        self.outcomes.append((outcome, time.monotonic()))


@pytest.fixture
async def src() -> AsyncIterator[SourceServer]:
    async with SourceServer() as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with make_source_client() as source_client:
        yield source_client


@pytest.fixture
def storage(tmp_path: Path) -> LocalSeedStorage:
    return LocalSeedStorage(tmp_path / "repo")


def job_for(url: str, length: int = -1, md5: str = "", epoch: int = 1) -> SeedJob:
    return SeedJob(tid=task_id(url, md5), epoch=epoch, raw_url=url, task_url=url, md5=md5, http_file_length=length)


def expected_pieces(data: bytes, piece_size: int = DEFAULT_PIECE_SIZE) -> list[bytes]:
    step = payload_size(piece_size)
    return [frame_piece(data[i : i + step], piece_size) for i in range(0, len(data), step)] or [
        frame_piece(b"", piece_size)
    ]


async def run(
    job: SeedJob, storage: LocalSeedStorage, sink: RecordingSink, client: httpx.AsyncClient, lease: float = 30.0
) -> SeedOutcome:
    return await seed(job, storage, sink, client, lease_seconds=lease)


async def test_seeds_large_file_piece_by_piece(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(10 * 1024 * 1024 + 123)
    src.add("big.bin", data, pace=0.01)  # ~0.4 s of body: pieces must be published before it ends
    job = job_for(src.url("big.bin"), len(data))
    sink = RecordingSink()
    outcome = await run(job, storage, sink, client)

    framed = expected_pieces(data)
    assert len(framed) == 3
    framed_len = len(data) + 5 * 3
    assert outcome == SeedOutcome(
        success=True,
        file_length=framed_len,
        raw_length=len(data),
        real_md5=hashlib.md5(data).hexdigest(),
        piece_total=3,
    )
    on_disk = storage.data_path(job.tid).read_bytes()
    assert hashlib.sha256(on_disk).hexdigest() == hashlib.sha256(b"".join(framed)).hexdigest()
    # In order, each md5 over its framed slice, cumulative payload bytes, all before finished().
    assert [p[0] for p in sink.pieces] == [0, 1, 2]
    assert [p[1] for p in sink.pieces] == [piece_md5(piece) for piece in framed]
    assert [p[2] for p in sink.pieces] == [PAYLOAD, 2 * PAYLOAD, len(data)]
    assert sink.pieces[0][3] < src.stats("big.bin").done_at  # published while the source still sent
    assert sink.pieces[-1][3] <= sink.outcomes[0][1]
    assert [o for o, _ in sink.outcomes] == [outcome]
    assert src.stats("big.bin").full_gets == 1

    md5_text = storage.data_path(job.tid).with_name(job.tid + ".md5").read_text()
    lines = md5_text.split("\n")
    assert not md5_text.endswith("\n")
    assert lines[:3] == [p[1] for p in sink.pieces]
    assert lines[3] == hashlib.md5(data).hexdigest()
    assert lines[4] == hashlib.sha1("".join(lines[:4]).encode()).hexdigest()

    meta = orjson.loads(storage.data_path(job.tid).with_name(job.tid + ".meta").read_bytes())
    assert set(meta) == {
        "taskID",
        "url",
        "pieceSize",
        "httpFileLen",
        "bizId",
        "accessTime",
        "interval",
        "fileLength",
        "md5",
        "realMd5",
        "lastModified",
        "eTag",
        "finish",
        "success",
    }
    assert meta["taskID"] == job.tid and meta["url"] == job.task_url
    assert (meta["pieceSize"], meta["httpFileLen"], meta["fileLength"]) == (DEFAULT_PIECE_SIZE, len(data), framed_len)
    assert (meta["finish"], meta["success"], meta["realMd5"]) == (True, True, hashlib.md5(data).hexdigest())
    assert meta["eTag"].startswith('"') and meta["lastModified"] == int(src.blobs["big.bin"].mtime) * 1000


async def test_exact_multiple_of_payload_has_no_empty_tail(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(2 * PAYLOAD)
    src.add("two.bin", data)
    outcome = await run(job_for(src.url("two.bin"), len(data)), storage, RecordingSink(), client)
    assert (outcome.success, outcome.piece_total, outcome.file_length) == (True, 2, 2 * DEFAULT_PIECE_SIZE)


async def test_empty_file_is_one_five_byte_piece(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    src.add("empty", b"")
    job = job_for(src.url("empty"), 0)
    sink = RecordingSink()
    outcome = await run(job, storage, sink, client)
    assert (outcome.success, outcome.file_length, outcome.raw_length, outcome.piece_total) == (True, 5, 0, 1)
    framed = storage.data_path(job.tid).read_bytes()
    assert framed == (DEFAULT_PIECE_SIZE << 4).to_bytes(4, "big") + b"\x7f"
    assert sink.pieces[0][:3] == (0, piece_md5(framed), 0)


async def test_chunked_source_succeeds_with_unknown_length(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(PAYLOAD + 1000)
    src.add("chunked", data, chunked=True)
    job = job_for(src.url("chunked"), -1)
    outcome = await run(job, storage, RecordingSink(), client)
    assert (outcome.success, outcome.raw_length, outcome.piece_total) == (True, len(data), 2)
    assert storage.data_path(job.tid).read_bytes() == b"".join(expected_pieces(data))


async def test_encoded_source_is_stored_decoded(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    # What a back-sourcing Go dfget writes: the decoded bytes.
    data = b"hello world " * 1000
    src.add("gz", gzip.compress(data), content_encoding="gzip")
    job = job_for(src.url("gz"), -1)
    outcome = await run(job, storage, RecordingSink(), client)
    assert (outcome.success, outcome.raw_length, outcome.real_md5) == (True, len(data), hashlib.md5(data).hexdigest())


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"status": 404}, "not_found"),
        ({"status": 410}, "not_found"),
        ({"status": 500}, "server"),
        ({"status": 403}, "auth"),
        ({"auth": "Bearer x"}, "auth"),
        ({"truncate": True}, "truncated"),
        ({"truncate": True, "chunked": True}, "truncated"),
    ],
)
async def test_source_failures_are_classified(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage, options: dict[str, object], reason: str
) -> None:
    src.add("f", os.urandom(300_000), **options)
    job = job_for(src.url("f"), -1)
    sink = RecordingSink()
    outcome = await run(job, storage, sink, client)
    assert (outcome.success, outcome.reason) == (False, reason)
    assert outcome.error
    assert [o for o, _ in sink.outcomes] == [outcome]
    meta = storage.read_meta(job.tid)
    assert meta is not None and (meta["finish"], meta["success"]) == (True, False)


async def test_unreachable_source(client: httpx.AsyncClient, storage: LocalSeedStorage) -> None:
    sink = RecordingSink()
    outcome = await run(job_for(f"http://127.0.0.1:{closed_port()}/f"), storage, sink, client)
    assert (outcome.success, outcome.reason) == (False, "unreachable")
    assert sink.outcomes[0][0] == outcome


async def test_length_changed_after_probe_fails_fast(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    src.add("f", os.urandom(10 * 1024 * 1024), then=os.urandom(10 * 1024 * 1024 + 1))
    probed = await probe_source(client, src.url("f"), {}, 4.0)
    sink = RecordingSink()
    outcome = await run(job_for(src.url("f"), probed.length), storage, sink, client)
    assert (outcome.success, outcome.reason) == (False, "length_changed")
    assert sink.pieces == []  # decided from the response headers, before any body
    await asyncio.sleep(0.2)
    assert src.stats("f").full_gets == 0


async def test_length_changed_without_content_length_is_found_at_the_end(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    src.add("f", os.urandom(1000), chunked=True)
    sink = RecordingSink()
    outcome = await run(job_for(src.url("f"), 999), storage, sink, client)
    assert (outcome.success, outcome.reason) == (False, "length_changed")
    assert sink.pieces == []  # the tail piece is held back once the length is known to be wrong


async def test_user_md5(src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage) -> None:
    data = os.urandom(5000)
    src.add("f", data)
    wrong = await run(job_for(src.url("f"), len(data), md5="0" * 32), storage, RecordingSink(), client)
    assert (wrong.success, wrong.reason) == (False, "md5_mismatch")
    right = await run(
        job_for(src.url("f"), len(data), md5=hashlib.md5(data).hexdigest()), storage, RecordingSink(), client
    )
    assert right.success and right.real_md5 == hashlib.md5(data).hexdigest()


async def test_second_seed_is_a_cache_hit(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(PAYLOAD * 2 + 77)
    src.add("f", data)
    job = job_for(src.url("f"), len(data))
    first_sink = RecordingSink()
    first = await run(job, storage, first_sink, client)
    assert first.success and src.stats("f").full_gets == 1

    again = RecordingSink()
    second = await run(job_for(src.url("f"), len(data), epoch=2), storage, again, client)
    assert second == first
    assert src.stats("f").full_gets == 1  # no second download
    assert src.stats("f").not_modified == 1
    assert again.pieces == []
    assert again.bulk == [([p[1] for p in first_sink.pieces], len(data))]
    assert [o for o, _ in again.outcomes] == [first]

    # Without a usable .md5 file the pieces are re-scanned from the framed file.
    storage.data_path(job.tid).with_name(job.tid + ".md5").write_text("garbage")
    rescanned = RecordingSink()
    assert await run(job, storage, rescanned, client) == first
    assert rescanned.bulk == again.bulk
    assert storage.read_md5_lines(job.tid) == md5_file_lines(again.bulk[0][0], first.real_md5)
    assert src.stats("f").full_gets == 1


async def test_changed_source_is_downloaded_again(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    blob = src.add("f", os.urandom(3000))
    job = job_for(src.url("f"), 3000)
    assert (await run(job, storage, RecordingSink(), client)).success
    new = os.urandom(3000)
    blob.data, blob.mtime = new, blob.mtime + 5  # new ETag and Last-Modified
    sink = RecordingSink()
    outcome = await run(job, storage, sink, client)
    assert outcome.success and outcome.real_md5 == hashlib.md5(new).hexdigest()
    assert src.stats("f").full_gets == 2 and sink.bulk == []
    assert storage.data_path(job.tid).read_bytes() == frame_piece(new, DEFAULT_PIECE_SIZE)


async def test_damaged_cache_is_downloaded_again(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(3000)
    src.add("f", data)
    job = job_for(src.url("f"), 3000)
    assert (await run(job, storage, RecordingSink(), client)).success
    storage.data_path(job.tid).write_bytes(b"short")
    outcome = await run(job, storage, RecordingSink(), client)
    assert outcome.success and src.stats("f").full_gets == 2
    assert storage.data_path(job.tid).read_bytes() == frame_piece(data, DEFAULT_PIECE_SIZE)


async def test_lost_lease_on_piece_ready_stops_quietly(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    src.add("f", os.urandom(3 * PAYLOAD))
    job = job_for(src.url("f"), 3 * PAYLOAD)
    sink = RecordingSink(lose_after_pieces=1)
    outcome = await run(job, storage, sink, client)
    assert (outcome.success, outcome.reason) == (False, LEASE_LOST)
    assert sink.outcomes == []  # the new owner reports, not us
    assert [p[0] for p in sink.pieces] == [0, 1]
    meta = storage.read_meta(job.tid)
    assert meta is not None and meta["finish"] is False


async def test_heartbeats_while_the_source_is_slow(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    src.add("slow", b"x" * 100, delay=0.8)
    sink = RecordingSink()
    outcome = await run(job_for(src.url("slow"), 100), storage, sink, client, lease=0.6)
    assert outcome.success
    assert sink.heartbeats >= 3  # every 0.2 s while waiting, plus the final ownership check


async def test_lost_lease_on_heartbeat_aborts_a_stalled_download(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    src.add("slow", b"x" * 100, delay=5.0)
    sink = RecordingSink(heartbeat_ok=False)
    started = time.monotonic()
    outcome = await run(job_for(src.url("slow"), 100), storage, sink, client, lease=0.6)
    assert (outcome.success, outcome.reason) == (False, LEASE_LOST)
    assert time.monotonic() - started < 2.0
    assert sink.outcomes == []
