"""The seed-cache disk GC on a small real filesystem (a 64 MiB tmpfs): thresholds in % of the volume,
preheat pins, and the GC's series on the real /metrics of a running replica against real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as sync_redis
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from app.cdn.gc import GC_LOCK, collect_once
from app.cdn.pins import pin
from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.protocol.taskid import task_id
from app.state import schema
from tests.cluster import Cluster
from tests.preheat_support import AUTH, poll_legacy, seeded_payload
from tests.sources import SourceServer

MIB = 1 << 20
VOLUME = 64 * MIB
HOUR_S = 3600
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB tmpfs, unmounted at the end whatever happened (after the replica using it stopped)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the GC filesystem test runs as root in make test)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        assert shutil.disk_usage(mount).total == VOLUME
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], check=True)  # still busy: detach it now, freed when idle


def put_seed(storage: LocalSeedStorage, tid: str, size: int, idle_hours: float) -> str:
    """A seed file of ``size`` bytes (its .meta beside it), last used ``idle_hours`` ago; its sha256."""
    data = hashlib.sha256(tid.encode()).digest() * (size // 32)
    fd = storage.open_for_write(tid, truncate=True)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    storage.write_meta(tid, {"taskID": tid})
    age(storage, tid, idle_hours)
    return hashlib.sha256(data).hexdigest()


def age(storage: LocalSeedStorage, tid: str, idle_hours: float) -> None:
    then = time.time() - idle_hours * HOUR_S
    os.utime(storage.data_path(tid), (then, then))


def digest(storage: LocalSeedStorage, tid: str) -> str | None:
    path = storage.data_path(tid)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


async def scrape(http: httpx.AsyncClient) -> Samples:
    answer = await http.get("/metrics")
    assert answer.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(f"dragonfly_supernode_{name}", tuple(sorted(labels.items())))]


async def gc_runs_past(http: httpx.AsyncClient, runs: float, within: float = 20.0) -> Samples:
    """/metrics once the replica ran more than ``runs`` GC passes."""
    deadline = time.monotonic() + within
    while True:
        found = await scrape(http)
        if value(found, "disk_gc_runs_total") > runs:
            return found
        assert time.monotonic() < deadline, f"no disk GC pass past {runs} within {within} s"
        await asyncio.sleep(0.1)


async def hold_gc_lock(redis: Redis) -> None:
    """Take the GC's own Redis lock, so that the replica's GC waits while a stage is set up."""
    deadline = time.monotonic() + 10
    while not await redis.set(GC_LOCK, "test", nx=True, ex=300):
        assert time.monotonic() < deadline, "the replica never let the GC lock go"
        await asyncio.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, small_fs: Path) -> Iterator[Cluster]:
    sync_redis.Redis.from_url(redis_url).flushdb()
    nodes = Cluster(tmp_path / "cluster", redis_url, None, extra_env={
        "DF_SEED_DIR": str(small_fs),
        # Percent thresholds only: young below 40 % free (25.6 MiB), full below 10 % (6.4 MiB).
        "DF_GC_YOUNG_FREE_BYTES": "0", "DF_GC_FULL_FREE_BYTES": "0",
        "DF_GC_YOUNG_FREE_PERCENT": "40", "DF_GC_FULL_FREE_PERCENT": "10",
        "DF_GC_CLEAN_RATIO": "0.5", "DF_GC_INTERVAL_SECONDS": "0.2", "DF_GC_PREHEAT_PIN_SECONDS": "3600",
        "DF_WORKERS": "1",  # one process: /metrics shows the one registry that ran the GC
    })
    nodes.workdir.mkdir()
    try:
        yield nodes
    finally:
        nodes.stop()
        sync_redis.Redis.from_url(redis_url).flushdb()


async def test_gc_by_percent_keeps_live_and_pinned_seeds(cluster: Cluster, small_fs: Path, redis: Redis) -> None:
    storage = LocalSeedStorage(small_fs)
    await hold_gc_lock(redis)  # before the replica starts: no pass until the disk is set up
    replica = cluster.start_replica()
    warmed = os.urandom(4 * MIB)
    async with SourceServer() as source, httpx.AsyncClient(base_url=f"http://{replica.node}") as http:
        # A blob Harbor preheated, whose task state then expired (nobody pulled it yet).
        source.add("warm.bin", warmed)
        created = await http.post("/preheats", json={"type": "file", "url": source.url("warm.bin")}, headers=AUTH)
        pid = created.json()["ID"]
        assert (await poll_legacy(http, pid))["status"] == "SUCCESS", cluster.logs()
        warm = task_id(source.url("warm.bin"))
        assert hashlib.sha256(seeded_payload(small_fs, warm)).digest() == hashlib.sha256(warmed).digest()
        assert await redis.get(schema.pin_key(warm)) == pid
        assert 3590 <= await redis.ttl(schema.pin_key(warm)) <= 3600
        for key in await redis.keys(schema.task_prefix(warm) + "*"):
            if key != schema.pin_key(warm):
                await redis.pexpire(key, 1)  # what the task TTL does, sooner
        deadline = time.monotonic() + 5
        while await redis.exists(schema.task_key(warm)):
            assert time.monotonic() < deadline, "the task state never expired"
            await asyncio.sleep(0.01)
        sums = {warm: digest(storage, warm) or ""}  # read before age(): a read moves the atime the GC sorts by
        age(storage, warm, 100)  # the longest idle of all: the first victim, were it not pinned
        # A seed whose task is live, and four idle ones; 44 MiB in all leave about 20 MiB free.
        live, idle = "1" * 64, [f"{i}" * 64 for i in (2, 3, 4, 5)]
        sums[live] = put_seed(storage, live, 20 * MIB, idle_hours=60)
        await redis.hset(schema.task_key(live), "cdnStatus", schema.CdnStatus.SUCCESS)
        for tid, hours in zip(idle, (50, 40, 30, 20), strict=True):
            sums[tid] = put_seed(storage, tid, 5 * MIB, idle_hours=hours)
        free = shutil.disk_usage(small_fs).free
        assert 0.10 * VOLUME < free <= 0.40 * VOLUME, f"{free >> 20} MiB free: not a young GC stage"

        # Young GC: half (0.5) of the idle unpinned seeds, the longest idle first; then room again.
        await redis.delete(GC_LOCK)
        found = await gc_runs_past(http, 0)
        gone = {tid for tid in sums if digest(storage, tid) is None}
        assert gone == {idle[0], idle[1]}, cluster.logs()
        assert all(digest(storage, tid) == sums[tid] for tid in sums if tid not in gone)
        assert storage.read_meta(idle[0]) is None and storage.read_meta(live) is not None
        assert value(found, "disk_gc_evicted_files_total", reason="young") == 2
        assert value(found, "disk_gc_evicted_bytes_total", reason="young") == 10 * MIB
        assert value(found, "disk_gc_evicted_files_total", reason="full") == 0
        assert value(found, "disk_gc_skipped_pinned_total") == 1
        assert value(found, "gc_disks_total") == 2
        assert value(found, "disk_gc_threshold_bytes", level="young") == math.ceil(0.40 * VOLUME)
        assert value(found, "disk_gc_threshold_bytes", level="full") == math.ceil(0.10 * VOLUME)
        assert value(found, "disk_gc_pinned_bytes") == storage.data_path(warm).stat().st_blocks * 512
        assert value(found, "disk_gc_free_bytes") == shutil.disk_usage(small_fs).free
        assert value(found, "disk_gc_last_duration_seconds") > 0
        assert time.time() - 10 < value(found, "last_gc_disks_timestamp_seconds") <= time.time()
        # The next passes find room (about 30 MiB free) and take nothing more.
        found = await gc_runs_past(http, value(found, "disk_gc_runs_total") + 1)
        assert {tid for tid in sums if digest(storage, tid) is None} == gone
        assert value(found, "gc_disks_total") == 2 and value(found, "disk_gc_skipped_pinned_total") == 1

        # Full GC: a 25 MiB idle seed leaves about 5 MiB free; every idle seed goes but the live and the pinned.
        await hold_gc_lock(redis)
        big = "6" * 64
        sums[big] = put_seed(storage, big, 25 * MIB, idle_hours=1)
        assert shutil.disk_usage(small_fs).free <= 0.10 * VOLUME
        runs = value(await scrape(http), "disk_gc_runs_total")
        await redis.delete(GC_LOCK)
        found = await gc_runs_past(http, runs)
        assert {tid for tid in sums if digest(storage, tid) is not None} == {live, warm}, cluster.logs()
        assert digest(storage, live) == sums[live] and digest(storage, warm) == sums[warm]
        assert value(found, "disk_gc_evicted_files_total", reason="full") == 3
        assert value(found, "disk_gc_evicted_bytes_total", reason="full") == 35 * MIB
        assert value(found, "disk_gc_evicted_files_total", reason="young") == 2
        assert value(found, "disk_gc_skipped_pinned_total") == 2
        assert value(found, "gc_disks_total") == 5


async def test_pinned_seeds_are_kept_on_a_full_disk_until_the_pin_expires(
    small_fs: Path, redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk is full of pinned seeds: the full GC deletes none of them and says so once; a short pin
    ends by itself and the next pass takes the seed."""
    storage = LocalSeedStorage(small_fs)
    by_percent = settings.model_copy(update={
        "gc_young_free_bytes": 0, "gc_full_free_bytes": 0, "gc_young_free_percent": 40, "gc_full_free_percent": 20,
    })
    short, long = "a" * 64, "b" * 64
    sums = {short: put_seed(storage, short, 28 * MIB, idle_hours=30),
            long: put_seed(storage, long, 28 * MIB, idle_hours=20)}
    await pin(redis, short, "preheat-short", 2)
    await pin(redis, long, "preheat-long", 3600)
    assert shutil.disk_usage(small_fs).free <= 0.20 * VOLUME
    caplog.set_level(logging.INFO, logger="app.cdn.gc")
    for _round in range(2):  # pinned, both stay; the shortage is said once, not every round
        assert await collect_once(redis, storage, by_percent, int(time.time() * 1000)) == []
        assert digest(storage, short) == sums[short] and digest(storage, long) == sums[long]
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "2 pinned seeds (56 MiB)" in warned[0], warned
    deadline = time.monotonic() + 5
    while await redis.exists(schema.pin_key(short)):  # Redis ends the 2 s pin itself
        assert time.monotonic() < deadline, "the pin never expired"
        await asyncio.sleep(0.05)
    assert await collect_once(redis, storage, by_percent, int(time.time() * 1000)) == [short]
    assert digest(storage, short) is None and digest(storage, long) == sums[long]
    assert any("free again" in r.getMessage() for r in caplog.records if r.levelno == logging.INFO)
