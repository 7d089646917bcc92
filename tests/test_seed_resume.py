"""A Celery worker SIGKILLed in the middle of a seed: the next epoch resumes with a Range request.

Real processes throughout: a replica, Celery workers, the Redis of the test run, a source process that
counts every body byte it sends, and emulated dfget 1.0.6 clients downloading through the crash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import struct
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from app.cdn.runner import run_seed_job
from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.core.redis import create_redis
from app.protocol.pieces import frame_piece, payload_size, piece_size_for
from app.protocol.taskid import task_id
from app.state import schema
from app.state.store import ClusterState, PeerRegistration
from app.swarm import DfgetResult, Swarm
from tests.cluster import Cluster, Proc
from tests.redis_servers import RedisServer
from tests.sources import SourceProcess, SourceServer

pytestmark = pytest.mark.slow

GIB = 1024 * 1024 * 1024
MIB = 1024 * 1024
CLIENTS = 3  # dfget 1.0.6 clients through the crash; each one costs ~10 s of CPU for 1 GiB on loopback


@dataclass(frozen=True)
class Payload:
    path: Path
    size: int
    md5: str
    sha256: str


def write_payload(path: Path, size: int) -> Payload:
    """A file that is different in every 16 MiB block, written and hashed without holding it in memory
    (os.urandom for a whole GiB takes seconds; a numbered random block is as good for these checks)."""
    block = bytearray(os.urandom(16 * MIB))
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "wb") as handle:
        for index, offset in enumerate(range(0, size, len(block))):
            block[:8] = struct.pack(">Q", index)
            chunk = memoryview(block)[: min(len(block), size - offset)]
            handle.write(chunk)
            md5.update(chunk)
            sha256.update(chunk)
    return Payload(path, size, md5.hexdigest(), sha256.hexdigest())


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, broker_url: str) -> Iterator[Cluster]:
    state = redis.Redis.from_url(redis_url)
    state.flushdb()
    redis.Redis.from_url(broker_url).flushdb()
    # A short seed lease: the killed worker's seed is taken over 3 s after its last write.
    nodes = Cluster(tmp_path / "cluster", redis_url, broker_url, extra_env={"DF_SEED_LEASE_SECONDS": "3"})
    nodes.workdir.mkdir()
    try:
        nodes.start_replica()
        nodes.start_worker()
        yield nodes
    finally:
        nodes.stop()
        state.flushdb()


def kill_worker(worker: Proc) -> None:
    """The whole worker at once, as when its pod dies: the Celery parent and its pool processes."""
    pid = worker.popen.pid
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    worker.kill()
    for child in children:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone with its parent (Celery sets PDEATHSIG on pool processes)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{child}").exists() and "zombie" not in _state(child) for child in children):
        assert time.monotonic() < deadline, "worker processes survived SIGKILL"
        time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (FileNotFoundError, IndexError):
        return "zombie"


async def wait_published(state: aioredis.Redis, tid: str, pieces: int, running: asyncio.Task[object]) -> int:
    """Polls the seed-cache map until it lists ``pieces`` pieces; returns how many it lists then."""
    cdn = schema.task_prefix(tid) + "cdn"
    deadline = time.monotonic() + 60
    while (listed := await state.hlen(cdn)) < pieces:
        assert not running.done() and time.monotonic() < deadline, "the seed never got that far"
        await asyncio.sleep(0.002)
    return int(listed)


async def wait_journal_grows(journal: Path, running: asyncio.Task[object]) -> None:
    def lines() -> int:
        try:
            return journal.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0

    seen = lines()
    deadline = time.monotonic() + 60
    while lines() == seen:
        assert not running.done() and time.monotonic() < deadline, "no piece was written"
        await asyncio.sleep(0.001)


async def wait_seeded(state: aioredis.Redis, tid: str, timeout: float) -> dict[str, str]:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while True:
        task: dict[str, str] = await state.hgetall(schema.task_key(tid))  # type: ignore[assignment]
        if task.get("cdnStatus") == "SUCCESS":
            return task
        assert task.get("cdnStatus") != "FAILED" and time.monotonic() < deadline, task
        await asyncio.sleep(0.05)


def check_clients(results: list[DfgetResult], sha256: str) -> None:
    for result in results:
        assert result.success, (result.error, result.traceback)
        assert result.sha256 == sha256
        assert not result.back_sourced
        assert not result.md5_mismatch
        assert not [f for f in result.piece_fetches if f.reason == "md5 mismatch"]


def range_requests(stats: dict[str, object]) -> list[dict[str, str]]:
    headers = stats["headers"]
    assert isinstance(headers, list)
    return [h for h in headers if "Range" in h]


async def test_a_killed_worker_seed_resumes_with_a_range_request(
    cluster: Cluster, tmp_path: Path, redis_url: str
) -> None:
    started = time.monotonic()
    payload = write_payload(tmp_path / "big.bin", GIB)
    piece = piece_size_for(payload.size)  # 12 MiB for 1 GiB
    state = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with SourceProcess({"big.bin": payload.path}) as source:
            # Paced until the kill (a piece a second), slower than the seeder writes even on a busy machine:
            # what the source sent beyond the journaled pieces is then the piece being filled, not megabytes
            # queued in socket buffers in front of a seeder starved of CPU (SO_RCVBUF autotunes to 32 MiB).
            source.configure("big.bin", rate=12 * MIB)
            url = source.url("big.bin")
            tid = task_id(url)
            async with Swarm(CLIENTS, [r.node for r in cluster.replicas], url, tmp_path / "out", versions=["1.0.6"],
                             sleep_scale=0.25, timeout=180) as swarm:
                running = asyncio.create_task(swarm.run())
                published = await wait_published(state, tid, 2, running)
                # Killed the moment the next piece is journaled: what the source then sent twice is exactly
                # what the seeder had received beyond the pieces it can resume from, and that is measurable.
                journal = cluster.seed_dir / "download" / tid[:3] / f"{tid}.journal"
                await wait_journal_grows(journal, running)
                kill_worker(cluster.workers[0])
                killed_at = time.monotonic()
                journaled = len(journal.read_text().splitlines()) - 1  # after the kill: the final count
                source.configure("big.bin", rate=0)
                # While the lease of the dead seed runs out, a new worker comes up (off the event loop:
                # the clients keep running meanwhile).
                await asyncio.to_thread(cluster.start_worker)
                results = await running
            stats = source.stats("big.bin")
        task = await wait_seeded(state, tid, 10)
    finally:
        await state.aclose()
    check_clients(results, payload.sha256)
    assert (task["seedEpoch"], task["realMd5"], int(task["rawLength"])) == ("2", payload.md5, payload.size)
    resumed = range_requests(stats)
    assert len(resumed) == 1, resumed
    offset = int(resumed[0]["Range"].removeprefix("bytes=").removesuffix("-"))
    # Resumed from every piece the dead seeder had journaled, not one less.
    assert offset == journaled * payload_size(piece) and journaled > published, (offset, journaled, published)
    assert resumed[0]["If-Range"]
    assert stats["bytes_sent"] <= payload.size + piece, (stats["bytes_sent"], payload.size, offset, stats["bodies"])
    assert [tuple(body) for body in stats["bodies"]][-1] == (206, payload.size - offset)  # read to the end
    assert f"resuming at byte {offset}" in cluster.workers[1].tail(400)
    print(  # the figures for the report (pytest -s)
        f"\nresume: killed after {published} pieces, resumed at byte {offset} ({offset // payload_size(piece)}"
        f" pieces), source sent {stats['bytes_sent'] - payload.size} bytes more than the file,"
        f" clients done {time.monotonic() - killed_at:.1f}s after the kill, test {time.monotonic() - started:.1f}s"
    )


async def test_a_file_changed_during_the_crash_is_seeded_again(
    cluster: Cluster, tmp_path: Path, redis_url: str
) -> None:
    payload = write_payload(tmp_path / "blob.bin", 96 * MIB)
    state = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with SourceProcess({"blob.bin": payload.path}) as source:
            source.configure("blob.bin", rate=40 * MIB)
            url = source.url("blob.bin")
            tid = task_id(url)
            async with Swarm(1, [r.node for r in cluster.replicas], url, tmp_path / "out", versions=["1.0.6"],
                             sleep_scale=0.25, timeout=120) as swarm:
                running = asyncio.create_task(swarm.run())
                await wait_published(state, tid, 4, running)
                kill_worker(cluster.workers[0])
                # Redeployed origin: the same bytes under a new ETag, so If-Range no longer matches.
                source.configure("blob.bin", rate=0, etag_suffix="-v2")
                await asyncio.to_thread(cluster.start_worker)
                results = await running
            stats = source.stats("blob.bin")
        task = await wait_seeded(state, tid, 10)
    finally:
        await state.aclose()
    check_clients(results, payload.sha256)
    assert (task["seedEpoch"], task["realMd5"]) == ("2", payload.md5)
    resumed = range_requests(stats)
    assert len(resumed) == 1 and resumed[0]["If-Range"] and not resumed[0]["If-Range"].endswith('-v2"')
    # The 200 answer to the range request was the new download: no third request, one whole body.
    assert stats["full_gets"] == 1 and stats["range_gets"] == 0
    bodies = [tuple(body) for body in stats["bodies"]]
    assert bodies.count((200, payload.size)) == 1 and sum(n for _, n in bodies) < 2 * payload.size, bodies
    assert "starting over with that body" in cluster.workers[1].tail(400)


# --- Redis going away mid-seed: the seeder rides it out --------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]


async def wait_for(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("outage", ["paused", "killed"])
async def test_a_seed_rides_out_a_redis_outage(
    outage: str, tmp_path: Path, settings: Settings
) -> None:
    data = os.urandom(16 * payload_size(4 * MIB))  # 16 pieces, 5 s at the source's pace
    with RedisServer(tmp_path / "redis", aof=True) as server:
        settings = settings.model_copy(update={"redis_url": server.url(0), "seed_lease_seconds": 8.0})
        client = create_redis(settings)
        admin = aioredis.Redis.from_url(server.url(0), decode_responses=True)
        handler, logger = Records(), logging.getLogger("app.state.store")
        level = logger.level
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            async with SourceServer() as src:
                src.add("f", data, rate=12 * MIB)
                url, state = src.url("f"), ClusterState(client, settings)
                tid = task_id(url)
                reg = PeerRegistration(
                    tid=tid, cid="c1", task_url=url, raw_url=url, md5="", identifier="", headers={}, peer_id="p",
                    ip="127.0.0.1", port=40000, path="/peer/file/c1", host_name="vm", version="1.0.6",
                    super_node_ip="127.0.0.1", call_system="", dfdaemon=False,
                )
                epoch = (await state.register(reg, len(data), 4 * MIB, 16)).seed_epoch
                storage = LocalSeedStorage(settings.seed_path)
                seeding = asyncio.create_task(run_seed_job(state, storage, tid, epoch))
                cdn = schema.task_prefix(tid) + "cdn"

                async def published(n: int) -> bool:
                    assert not seeding.done()
                    return bool(await admin.hlen(cdn) >= n)

                await wait_for(lambda: published(4), "4 pieces published")
                # Everything so far on disk (a rewritten AOF): a kill loses at most what the seeder wrote since.
                rewrites = int((await admin.info("persistence"))["aof_rewrites"])
                await admin.bgrewriteaof()

                async def rewritten() -> bool:
                    info = await admin.info("persistence")
                    return int(info["aof_rewrites"]) > rewrites and not info["aof_rewrite_in_progress"]

                await wait_for(rewritten, "the AOF rewrite")
                outage_started = time.monotonic()
                journaled = len(storage.read_journal(tid))
                await asyncio.to_thread(server.pause if outage == "paused" else server.kill)

                async def downloading_on() -> bool:
                    assert not seeding.done()
                    return len(storage.read_journal(tid)) >= journaled + 6 and bool(handler.messages(logging.WARNING))

                # The download goes on to disk while nothing can be published (memory stays bounded).
                await wait_for(downloading_on, "6 more pieces on disk during the outage")
                await asyncio.to_thread(server.resume if outage == "paused" else server.restart)
                outage_seconds = time.monotonic() - outage_started
                outcome = await seeding
                await admin.aclose()
                admin = aioredis.Redis.from_url(server.url(0), decode_responses=True)
                stats = src.stats("f")
                task = await admin.hgetall(schema.task_key(tid))
                listed = await admin.hlen(cdn)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            await client.aclose()
            await admin.aclose()
    assert outcome is not None and outcome.success, outcome
    assert (task["cdnStatus"], task["realMd5"], listed) == ("SUCCESS", hashlib.md5(data).hexdigest(), 16)
    assert (stats.full_gets, stats.range_gets, stats.bytes_sent) == (1, 0, len(data))  # one fetch, no resume
    assert storage.data_path(tid).read_bytes() == b"".join(
        frame_piece(data[i : i + payload_size(4 * MIB)], 4 * MIB) for i in range(0, len(data), payload_size(4 * MIB))
    )
    # One line when the outage began and one when it ended, however many retries there were between.
    assert len(handler.messages(logging.WARNING)) == 1, handler.messages(logging.WARNING)
    assert len([m for m in handler.messages(logging.INFO) if "reachable again" in m]) == 1
    print(f"\n{outage}: Redis away {outage_seconds:.1f}s, seed succeeded, {listed} pieces listed")
