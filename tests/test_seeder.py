"""The seeder against a real local origin and real files (no Redis: a recording SeedSink)."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from app.cdn.cached import md5_file_lines
from app.cdn.resume import ResumePoint, refusal
from app.cdn.runner import run_seed_job
from app.cdn.seeder import LEASE_LOST, seed
from app.cdn.sink import FinishResult, SeedJob, SeedOutcome
from app.cdn.source import (
    SourceResponse,
    format_http_date,
    make_source_client,
    parse_content_range,
    parse_http_date_ms,
    probe_source,
)
from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.protocol.pieces import DEFAULT_PIECE_SIZE, frame_piece, payload_size, piece_md5
from app.protocol.taskid import task_id
from app.state import schema
from app.state.store import ClusterState, PeerRegistration, RedisSeedSink
from tests.sources import SourceServer, closed_port

PAYLOAD = payload_size(DEFAULT_PIECE_SIZE)


@dataclass
class Publish:
    first: int
    md5s: list[str]
    seeded: int
    at: float


@dataclass
class RecordingSink:
    """Test double of our SeedSink: keeps the piece map a real state would, records every call."""

    lose_after_pieces: int | None = None  # publishing this piece number or a later one loses the lease
    heartbeat_ok: bool = True
    finish_results: list[FinishResult] = field(default_factory=list)  # answers of finished(), then "done"
    forget_at: dict[int, list[int]] = field(default_factory=dict)  # when piece k is published, drop these
    calls: list[Publish] = field(default_factory=list)
    listed: dict[int, str] = field(default_factory=dict)
    heartbeats: int = 0
    outcomes: list[tuple[SeedOutcome, float]] = field(default_factory=list)

    async def pieces_ready(self, tid: str, epoch: int, first: int, md5s: list[str], seeded_bytes: int) -> int | None:
        self.calls.append(Publish(first, list(md5s), seeded_bytes, time.monotonic()))
        if self.lose_after_pieces is not None and first + len(md5s) > self.lose_after_pieces:
            return None
        for offset, md5 in enumerate(md5s):
            self.listed[first + offset] = md5
            for lost in self.forget_at.pop(first + offset, []):  # a failover that lost these writes
                self.listed.pop(lost, None)
        return len(self.listed)

    async def heartbeat(self, tid: str, epoch: int) -> bool:
        self.heartbeats += 1
        return self.heartbeat_ok

    async def finished(self, tid: str, epoch: int, outcome: SeedOutcome) -> FinishResult:
        self.outcomes.append((outcome, time.monotonic()))
        return self.finish_results.pop(0) if self.finish_results else "done"

    @property
    def pieces(self) -> list[tuple[int, str, int, float]]:
        """(piece, md5, seeded bytes, time) of each publication of a single piece."""
        return [(c.first, c.md5s[0], c.seeded, c.at) for c in self.calls if len(c.md5s) == 1]

    @property
    def flat(self) -> list[tuple[int, str, int, float]]:
        """(piece, md5, seeded bytes of its call, time) of every piece of every call."""
        return [(c.first + i, md5, c.seeded, c.at) for c in self.calls for i, md5 in enumerate(c.md5s)]

    @property
    def bulk(self) -> list[tuple[list[str], int]]:
        """Publications of many pieces at once (a cache hit, a resume, a republication)."""
        return [(c.md5s, c.seeded) for c in self.calls if len(c.md5s) > 1]


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
    # In order (one call per piece unless an fsync took longer than a piece), each md5 over its framed
    # slice, cumulative payload bytes, all before finished().
    assert [(n, md5) for n, md5, _, _ in sink.flat] == list(enumerate(piece_md5(piece) for piece in framed))
    assert all(c.seeded == min((c.first + len(c.md5s)) * PAYLOAD, len(data)) for c in sink.calls)
    assert sink.calls[0].at < src.stats("big.bin").done_at  # published while the source still sent
    assert sink.calls[-1].at <= sink.outcomes[0][1]
    assert [o for o, _ in sink.outcomes] == [outcome]
    assert src.stats("big.bin").full_gets == 1

    md5_text = storage.data_path(job.tid).with_name(job.tid + ".md5").read_text()
    lines = md5_text.split("\n")
    assert not md5_text.endswith("\n")
    assert lines[:3] == [md5 for _, md5, _, _ in sink.flat]
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
        # Ours: what a resume needs (app.cdn.resume).
        "sourceLength",
        "acceptRanges",
        "journal",
        "failReason",
    }
    assert (meta["sourceLength"], meta["acceptRanges"]) == (len(data), "bytes")
    assert storage.read_journal(job.tid) == [meta["journal"], *(piece_md5(piece) for piece in framed)]
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
    assert again.bulk == [([md5 for _, md5, _, _ in first_sink.flat], len(data))]
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
    refused = [i for i, c in enumerate(sink.calls) if c.first + len(c.md5s) > 1]
    assert refused == [len(sink.calls) - 1]  # nothing is published after the refusal
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


# --- resume after a crash or a lost lease (app.cdn.resume) --------------------------------------------


def range_requests(src: SourceServer, name: str) -> list[dict[str, str]]:
    return [h for h in src.stats(name).headers if "Range" in h]


async def interrupted(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage, data: bytes, lose_at: int
) -> tuple[SeedJob, int]:
    """A first seed of blob "f" that loses its lease when it publishes piece ``lose_at``; returns the job
    and how many pieces it left journaled (writing goes on while a publication is out: one more, or
    two), as a worker killed at that moment would."""
    blob = src.blobs["f"]
    blob.rate = 40 * 1024 * 1024  # ~0.1 s a piece: the lost lease surfaces long before the end
    job = job_for(src.url("f"), len(data))
    outcome = await run(job, storage, RecordingSink(lose_after_pieces=lose_at), client)
    blob.rate = 0
    assert outcome.reason == LEASE_LOST
    journaled = len(storage.read_journal(job.tid)) - 1
    assert lose_at < journaled < len(expected_pieces(data)), journaled
    return job, journaled


async def test_an_interrupted_seed_continues_with_a_range_request(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(7 * PAYLOAD + 1234)
    blob = src.add("f", data)
    job, kept = await interrupted(src, client, storage, data, lose_at=2)
    sent_before = src.stats("f").bytes_sent

    sink = RecordingSink()
    outcome = await run(job_for(job.raw_url, len(data), epoch=2), storage, sink, client)

    framed = expected_pieces(data)
    assert outcome == SeedOutcome(success=True, file_length=len(data) + 5 * 8, raw_length=len(data),
                                  real_md5=hashlib.md5(data).hexdigest(), piece_total=8)
    assert storage.data_path(job.tid).read_bytes() == b"".join(framed)
    resumed = range_requests(src, "f")
    assert [(h["Range"], h["If-Range"]) for h in resumed] == [(f"bytes={kept * PAYLOAD}-", blob.etag(data))]
    assert src.stats("f").bytes_sent - sent_before == len(data) - kept * PAYLOAD  # only the rest was sent
    # The verified pieces are published at once, before any new byte; then the others, in order.
    assert (sink.calls[0].first, sink.calls[0].md5s, sink.calls[0].seeded) == (
        0, [piece_md5(p) for p in framed[:kept]], kept * PAYLOAD)
    assert [(n, md5) for n, md5, _, _ in sink.flat] == list(enumerate(piece_md5(p) for p in framed))
    assert [o for o, _ in sink.outcomes] == [outcome]
    assert storage.read_md5_lines(job.tid) == md5_file_lines([piece_md5(p) for p in framed], outcome.real_md5)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        old = handle.read(1)[0]
        handle.seek(offset)
        handle.write(bytes([old ^ 0xFF]))


async def test_a_damaged_piece_on_disk_is_fetched_again(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(6 * PAYLOAD)
    src.add("f", data)
    job, _ = await interrupted(src, client, storage, data, lose_at=2)
    flip_byte(storage.data_path(job.tid), DEFAULT_PIECE_SIZE + 1000)  # piece 1: framing intact, payload not
    sink = RecordingSink()
    outcome = await run(job_for(job.raw_url, len(data), epoch=2), storage, sink, client)
    assert outcome.success and outcome.real_md5 == hashlib.md5(data).hexdigest()
    assert storage.data_path(job.tid).read_bytes() == b"".join(expected_pieces(data))
    assert range_requests(src, "f")[-1]["Range"] == f"bytes={PAYLOAD}-"
    assert [n for n, _, _, _ in sink.flat] == list(range(6)) and len(sink.calls[0].md5s) == 1


async def test_a_changed_etag_starts_over_with_the_200_body(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(6 * PAYLOAD + 10)
    blob = src.add("f", data)
    job, _ = await interrupted(src, client, storage, data, lose_at=1)
    old_etag, gets = blob.etag(data), src.stats("f").gets
    blob.etag_suffix = "-redeployed"  # the same bytes, but the origin cannot say so
    sink = RecordingSink()
    outcome = await run(job_for(job.raw_url, len(data), epoch=2), storage, sink, client)
    assert outcome.success and outcome.real_md5 == hashlib.md5(data).hexdigest()
    assert storage.data_path(job.tid).read_bytes() == b"".join(expected_pieces(data))
    assert src.stats("f").gets == gets + 1  # the 200 to the range request was used, not asked for again
    assert range_requests(src, "f")[-1]["If-Range"] == old_etag
    assert sink.calls[0].first == 0 and len(sink.calls[0].md5s) == 1  # nothing of the old download published
    assert [n for n, _, _, _ in sink.flat] == list(range(7))
    meta = storage.read_meta(job.tid)
    assert meta is not None and meta["eTag"] == blob.etag(data)


async def test_a_source_without_ranges_starts_over_with_its_200_body(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(5 * PAYLOAD + 10)
    blob = src.add("f", data)
    job, _ = await interrupted(src, client, storage, data, lose_at=1)
    blob.ranges, gets = False, src.stats("f").gets
    outcome = await run(job_for(job.raw_url, len(data), epoch=2), storage, RecordingSink(), client)
    assert outcome.success and src.stats("f").gets == gets + 1
    assert storage.data_path(job.tid).read_bytes() == b"".join(expected_pieces(data))


async def test_a_partial_answer_from_the_wrong_offset_is_not_used(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(5 * PAYLOAD + 10)
    blob = src.add("f", data)
    job, _ = await interrupted(src, client, storage, data, lose_at=1)
    blob.range_skew, gets = 1000, src.stats("f").gets  # a 206 that starts 1000 bytes late, and says so
    outcome = await run(job_for(job.raw_url, len(data), epoch=2), storage, RecordingSink(), client)
    assert outcome.success and outcome.real_md5 == hashlib.md5(data).hexdigest()
    assert storage.data_path(job.tid).read_bytes() == b"".join(expected_pieces(data))
    assert src.stats("f").gets == gets + 2  # the 206 was dropped after its headers; then a whole GET
    assert src.stats("f").headers[-1].get("Range") is None


async def test_a_body_cut_short_is_continued_by_the_retry(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(5 * PAYLOAD)
    blob = src.add("f", data, truncate=True)  # the connection drops after half of the body
    job = job_for(src.url("f"), len(data))
    assert (await run(job, storage, RecordingSink(), client)).reason == "truncated"
    blob.truncate = False
    outcome = await run(job_for(job.raw_url, len(data), epoch=2), storage, RecordingSink(), client)
    assert outcome.success and outcome.real_md5 == hashlib.md5(data).hexdigest()
    assert range_requests(src, "f")[-1]["Range"] == f"bytes={2 * PAYLOAD}-"


async def test_killed_after_the_last_piece_needs_no_download(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(2 * PAYLOAD + 5)
    src.add("f", data)
    job = job_for(src.url("f"), len(data))
    # Every piece durable, then the lease is lost before the seed could call itself finished.
    assert (await run(job, storage, RecordingSink(heartbeat_ok=False), client)).reason == LEASE_LOST
    meta = storage.read_meta(job.tid)
    assert meta is not None and not meta["finish"]
    sink = RecordingSink()
    outcome = await run(job_for(job.raw_url, len(data), epoch=2), storage, sink, client)
    assert outcome.success and outcome.real_md5 == hashlib.md5(data).hexdigest()
    stats = src.stats("f")
    assert (stats.not_modified, stats.bytes_sent) == (1, len(data))  # checked, not fetched again
    assert [(c.first, len(c.md5s)) for c in sink.calls] == [(0, 3)]


def _meta(job: SeedJob, **changes: object) -> dict[str, object]:
    meta: dict[str, object] = {
        "taskID": job.tid, "url": job.task_url, "pieceSize": job.piece_size, "bizId": job.identifier, "md5": job.md5,
        "finish": False, "success": False, "sourceLength": 100, "eTag": '"abc"', "lastModified": 0,
        "acceptRanges": "bytes", "journal": "0123", "failReason": "",
    }
    return meta | changes


@pytest.mark.parametrize(
    ("job_changes", "meta_changes", "why"),
    [
        ({}, {}, ""),
        ({}, {"lastModified": 1_700_000_000_000, "eTag": ""}, ""),
        ({"http_file_length": 100}, {}, ""),
        ({}, {"finish": True, "failReason": "truncated"}, ""),
        ({}, {"finish": True, "failReason": "unreachable"}, ""),
        ({}, {"url": "http://127.0.0.1/other"}, "differ"),
        ({}, {"pieceSize": 2 * DEFAULT_PIECE_SIZE}, "differ"),
        ({"md5": "a" * 32}, {"md5": "b" * 32}, "differ"),
        ({"identifier": "v2"}, {"bizId": "v1"}, "differ"),
        ({}, {"finish": True, "success": True}, "ended"),
        ({}, {"finish": True, "failReason": "md5_mismatch"}, "ended"),
        ({}, {"finish": True, "failReason": "length_changed"}, "ended"),
        ({}, {"sourceLength": -1}, "never known"),
        ({}, {"sourceLength": 0}, "never known"),
        ({"http_file_length": 101}, {}, "length changed"),
        ({}, {"eTag": "", "lastModified": 0}, "no ETag"),
        ({}, {"acceptRanges": "none"}, "no ranges"),
        ({"headers": {"range": "bytes=0-9"}}, {}, "range"),
        ({}, {"journal": ""}, "journal"),
    ],
)
def test_when_a_seed_may_resume(job_changes: dict[str, object], meta_changes: dict[str, object], why: str) -> None:
    job = dataclasses.replace(job_for("http://127.0.0.1/f"), **job_changes)  # type: ignore[arg-type]
    found = refusal(_meta(job, **meta_changes), job)
    assert (why in found) if why else found == "", found
    assert refusal(None, job) == "no earlier seed on disk"


def _answer(status: int, headers: dict[str, str]) -> SourceResponse:
    response = httpx.Response(status, headers=headers)
    return SourceResponse(response=response, url="u", length=int(headers.get("content-length", -1)),
                          last_modified_ms=parse_http_date_ms(headers.get("last-modified")),
                          etag=headers.get("etag", ""), decoded=True,
                          content_range=parse_content_range(headers.get("content-range")))


@pytest.mark.parametrize(
    ("status", "headers", "why"),
    [
        (206, {"content-range": "bytes 40-99/100", "content-length": "60", "etag": '"abc"'}, ""),
        (206, {"content-range": "bytes 40-99/100"}, ""),
        (200, {"content-length": "100"}, "answered 200"),
        (206, {"content-range": "bytes 0-99/100"}, "does not continue"),
        (206, {"content-range": "bytes 40-98/100"}, "does not continue"),
        (206, {"content-range": "bytes 40-100/101"}, "does not continue"),
        (206, {"content-range": "bytes 40-99/*"}, "does not continue"),
        (206, {"content-range": "bytes 40-99/100", "content-length": "59"}, "Content-Length"),
        (206, {"content-range": "bytes 40-99/100", "etag": '"new"'}, "ETag changed"),
        (206, {"content-range": "bytes 40-99/100", "last-modified": "Sat, 28 Nov 2026 04:48:13 GMT"}, "Last-Modified"),
    ],
)
def test_which_answers_continue_a_resume(status: int, headers: dict[str, str], why: str) -> None:
    point = ResumePoint(download_id="x", md5s=["m:1"], offset=40, whole=hashlib.md5(), length=100, etag='"abc"',
                        last_modified_ms=1_700_000_000_000)
    found = point.mismatch(_answer(status, headers))
    assert (why in found) if why else found == "", found
    assert point.if_range == '"abc"'
    assert dataclasses.replace(point, etag='W/"abc"').if_range == format_http_date(1_700_000_000_000)


# --- a state that lost published pieces (a Redis failover) ------------------------------------------


async def test_published_pieces_lost_by_the_state_are_published_again(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(4 * PAYLOAD)
    src.add("f", data)
    sink = RecordingSink(forget_at={2: [0, 1]})  # publishing piece 2 finds 0 and 1 gone
    outcome = await run(job_for(src.url("f"), len(data)), storage, sink, client)
    assert outcome.success
    md5s = [piece_md5(p) for p in expected_pieces(data)]
    # After the loss, everything published so far goes out again in one call, from piece 0.
    again = next(i for i, c in enumerate(sink.calls) if c.first == 0 and i > 0)
    assert sink.calls[again].md5s == md5s[: len(sink.calls[again].md5s)] and len(sink.calls[again].md5s) >= 3
    assert sink.listed == dict(enumerate(md5s))


async def test_a_final_report_refused_for_missing_pieces_republishes_them(
    src: SourceServer, client: httpx.AsyncClient, storage: LocalSeedStorage
) -> None:
    data = os.urandom(2 * PAYLOAD + 1)
    src.add("f", data)
    sink = RecordingSink(finish_results=["missing"])
    outcome = await run(job_for(src.url("f"), len(data)), storage, sink, client)
    assert outcome.success
    assert sink.calls[-1].first == 0 and len(sink.calls[-1].md5s) == 3  # all of them, before the 2nd report
    assert sink.calls[-1].at < sink.outcomes[1][1]
    assert [o for o, _ in sink.outcomes] == [outcome, outcome]


# --- the Redis sink: one run per epoch, republication, outages ---------------------------------------


def registration(url: str) -> PeerRegistration:
    return PeerRegistration(
        tid=task_id(url), cid="c1", task_url=url, raw_url=url, md5="", identifier="", headers={}, peer_id="p1",
        ip="127.0.0.1", port=40000, path="/peer/file/c1", host_name="vm", version="1.0.6",
        super_node_ip="127.0.0.1", call_system="", dfdaemon=False,
    )


async def started_task(state: ClusterState, url: str, length: int) -> int:
    out = await state.register(registration(url), length, DEFAULT_PIECE_SIZE, max(1, -(-length // PAYLOAD)))
    assert out.result == "ok" and out.seed_epoch == 1
    return out.seed_epoch


async def test_an_epoch_is_seeded_by_one_run_only(redis: Redis, settings: Settings) -> None:
    state = ClusterState(redis, settings)
    url = "http://127.0.0.1:9/f"
    tid, epoch = task_id(url), await started_task(state, url, 10)
    first, second = RedisSeedSink(state), RedisSeedSink(state)
    assert await first.heartbeat(tid, epoch)
    # A second run of the same epoch (a redelivered job, or an epoch number handed out again after a
    # failover lost its bump) is refused everything.
    assert not await second.heartbeat(tid, epoch)
    assert await second.pieces_ready(tid, epoch, 0, ["m0:15"], 10) is None
    assert await first.pieces_ready(tid, epoch, 0, ["m0:15"], 10) == 1
    done = SeedOutcome(success=True, file_length=30, raw_length=20, real_md5="abc", piece_total=2)
    assert await second.finished(tid, epoch, done) == "lost"
    # Finished with a piece the state does not list (lost in a failover): refused until republished.
    assert await first.finished(tid, epoch, done) == "missing"
    assert await first.pieces_ready(tid, epoch, 1, ["m1:15"], 20) == 2
    assert await first.finished(tid, epoch, done) == "done"
    assert await redis.hget(schema.task_key(tid), "cdnStatus") == "SUCCESS"
    assert not await first.heartbeat(tid, epoch)  # over


async def test_a_claim_lost_in_a_failover_is_taken_again(redis: Redis, settings: Settings) -> None:
    state = ClusterState(redis, settings)
    url = "http://127.0.0.1:9/f"
    tid, epoch = task_id(url), await started_task(state, url, 10)
    run = RedisSeedSink(state)
    assert await run.heartbeat(tid, epoch)
    await redis.hdel(schema.task_key(tid), "seedOwner")  # the new master never got the claim
    assert await run.pieces_ready(tid, epoch, 0, ["m0:15"], 10) == 1
    assert not await RedisSeedSink(state).heartbeat(tid, epoch)


async def test_the_real_seeder_republishes_pieces_the_state_lost(
    src: SourceServer, redis: Redis, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = os.urandom(6 * PAYLOAD)
    src.add("f", data, rate=40 * 1024 * 1024)  # ~0.6 s: time to lose pieces while it runs
    url = src.url("f")
    state = ClusterState(redis, settings)
    tid, epoch = task_id(url), await started_task(state, url, len(data))
    cdn = schema.task_prefix(tid) + "cdn"
    seeding = asyncio.create_task(run_seed_job(state, LocalSeedStorage(settings.seed_path), tid, epoch))
    while await redis.hlen(cdn) < 2:
        assert not seeding.done()
        await asyncio.sleep(0.005)
    await redis.hdel(cdn, "0", "1")  # what a failover to a lagging replica does
    outcome = await seeding
    assert outcome is not None and outcome.success
    md5s = [piece_md5(p) for p in expected_pieces(data)]
    assert await redis.hgetall(cdn) == {str(n): md5 for n, md5 in enumerate(md5s)}
    assert await redis.hget(schema.task_key(tid), "cdnStatus") == "SUCCESS"
    assert any("publishing them" in r.getMessage() for r in caplog.records)
    assert src.stats("f").bytes_sent == len(data)


async def test_a_lost_final_report_is_healed_by_the_next_pull(
    src: SourceServer, redis: Redis, settings: Settings
) -> None:
    data = os.urandom(2 * PAYLOAD + 3)
    src.add("f", data)
    url = src.url("f")
    state = ClusterState(redis, settings)
    tid, epoch = task_id(url), await started_task(state, url, len(data))
    storage = LocalSeedStorage(settings.seed_path)
    assert (outcome := await run_seed_job(state, storage, tid, epoch)) is not None and outcome.success
    # A failover to a replica that never got seed_finish (nor the last lease renewal).
    await redis.hset(schema.task_key(tid), mapping={"cdnStatus": "RUNNING", "seedLease": 0})
    answer = await state.pull(tid, "c1", 700, 502, -1, "", "q1")
    assert answer["kind"] == "wait" and answer["seedEpoch"] == epoch + 1  # the lapsed lease restarts it
    again = await run_seed_job(state, storage, tid, epoch + 1)
    assert again == outcome  # from the finished copy on disk: a conditional GET, no download
    assert (src.stats("f").full_gets, src.stats("f").not_modified) == (1, 1)
    assert await redis.hget(schema.task_key(tid), "cdnStatus") == "SUCCESS"
    assert await redis.hlen(schema.task_prefix(tid) + "cdn") == 3


async def test_a_job_whose_lease_lapsed_in_the_queue_seeds_the_new_epoch_and_the_new_job_stops(
    src: SourceServer, redis: Redis, settings: Settings
) -> None:
    # 1,000 new tasks queue 1,000 seed jobs; one waiting longer than the lease gets a new epoch at the
    # next pull, whose job joins the tail. The old job, when a worker gets to it, must seed (else the
    # task would go to the back of the queue at every lapse), and the new one must find nothing to do.
    data = os.urandom(2 * PAYLOAD + 5)
    src.add("f", data)
    url = src.url("f")
    state = ClusterState(redis, settings.model_copy(update={"seed_lease_seconds": 1.2}))
    tid, queued = task_id(url), await started_task(state, url, len(data))
    await asyncio.sleep(1.3)
    answer = await state.pull(tid, "c1", 700, 502, -1, "", "q1")
    assert answer["kind"] == "wait" and answer["seedEpoch"] == queued + 1  # the lapse restarted it
    outcome = await run_seed_job(state, LocalSeedStorage(settings.seed_path), tid, queued)
    assert outcome is not None and outcome.success
    fields = await redis.hmget(schema.task_key(tid), ["cdnStatus", "seedEpoch"])
    assert fields == ["SUCCESS", str(queued + 1)]
    assert await run_seed_job(state, LocalSeedStorage(settings.seed_path), tid, queued + 1) is None
    assert src.stats("f").full_gets == 1 and src.stats("f").bytes_sent == len(data)


async def test_a_job_does_not_take_an_epoch_another_run_holds(redis: Redis, settings: Settings) -> None:
    state = ClusterState(redis, settings)
    url = "http://127.0.0.1:9/f"
    tid, epoch = task_id(url), await started_task(state, url, 10)
    holder = RedisSeedSink(state)
    assert await holder.claim(tid) == epoch
    assert await RedisSeedSink(state).claim(tid) is None  # a duplicate message of the task
    assert await run_seed_job(state, LocalSeedStorage(settings.seed_path), tid, epoch) is None
    assert await holder.heartbeat(tid, epoch)  # the holder is untouched
    await holder.finished(tid, epoch, SeedOutcome(success=False, error="x", reason="internal"))
    assert await RedisSeedSink(state).claim(tid) is None  # FAILED: nothing to seed until a retry starts one


async def test_a_seeder_cut_off_from_redis_stops_once_its_lease_is_over(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Nobody listens there: every attempt is an outage. Retried for one lease, then given up.
    unreachable = Redis.from_url(f"redis://127.0.0.1:{closed_port()}/0", decode_responses=True)
    state = ClusterState(unreachable, settings.model_copy(update={"seed_lease_seconds": 0.8}))
    sink = RedisSeedSink(state)
    caplog.set_level(logging.INFO, "app.state.store")
    started = time.monotonic()
    assert not await sink.heartbeat("t" * 64, 1)
    assert 0.8 <= time.monotonic() - started < 2.0
    assert await sink.pieces_ready("t" * 64, 1, 0, ["m:5"], 0) is None  # at once: the lease is over
    warnings = [r.getMessage() for r in caplog.records if r.name == "app.state.store"]
    assert len(warnings) == 2, warnings  # the outage began; the lease ran out. Not one per retry.
    assert "Redis unreachable" in warnings[0] and "stopping" in warnings[1]
    await unreachable.aclose()
