"""Seed-cache disk GC: pure victim selection, and one pass over real files and real Redis."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from app.cdn import gc
from app.cdn.gc import GC_LOCK, CachedTask, Thresholds, collect_once, locked_pass, plan, select_victims, thresholds
from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.state import schema

GIB = 1 << 30


def test_nothing_goes_while_there_is_room() -> None:
    cached = [CachedTask("a", 10, 1), CachedTask("b", 20, 1)]
    assert select_victims(cached, set(), 200 * GIB, 100 * GIB, 5 * GIB, 0.1) == []


def test_young_gc_takes_the_longest_idle_share_and_spares_live_tasks() -> None:
    cached = [CachedTask(f"t{i}", idle_ms=i, size=1) for i in range(20)]
    victims = select_victims(cached, {"t19"}, 50 * GIB, 100 * GIB, 5 * GIB, 0.1)
    assert victims == ["t18", "t17"]


def test_full_gc_takes_every_task_without_state() -> None:
    cached = [CachedTask("a", 1, 1), CachedTask("b", 2, 1), CachedTask("live", 3, 1)]
    assert select_victims(cached, {"live"}, 1 * GIB, 100 * GIB, 5 * GIB, 0.1) == ["b", "a"]


def test_of_bytes_and_percent_the_larger_free_space_requirement_wins(settings: Settings) -> None:
    both = settings.model_copy(update={"gc_young_free_bytes": 30 * GIB, "gc_young_free_percent": 20,
                                       "gc_full_free_bytes": 5 * GIB, "gc_full_free_percent": 0})
    assert thresholds(both, 100 * GIB) == Thresholds(30 * GIB, 5 * GIB)  # 20 % of 100 GiB is less than 30 GiB
    assert thresholds(both, 1000 * GIB) == Thresholds(200 * GIB, 5 * GIB)  # 20 % of 1000 GiB is more
    percent_only = settings.model_copy(update={"gc_young_free_bytes": 0, "gc_young_free_percent": 12.5,
                                               "gc_full_free_bytes": 0, "gc_full_free_percent": 2.5})
    assert thresholds(percent_only, 999) == Thresholds(125, 25)  # rounded up: never a byte less than asked


@pytest.mark.parametrize("update", [{"gc_young_free_percent": 100.5}, {"gc_full_free_percent": -1},
                                    {"gc_young_free_percent": 5, "gc_full_free_percent": 10}])
def test_percent_settings_out_of_range_or_inverted_are_refused(tmp_path: Path, update: dict[str, float]) -> None:
    with pytest.raises(ValidationError, match=r"(?i)gc_\w*_percent"):
        Settings(home=tmp_path, **update)


def test_pinned_seeds_are_spared_and_do_not_shrink_the_young_share() -> None:
    cached = [CachedTask(f"t{i}", idle_ms=i, size=1) for i in range(10)]
    pinned = {"t9", "t8"}
    young = plan(cached, {"t0"}, pinned, 50 * GIB, Thresholds(100 * GIB, 5 * GIB), 0.5)
    # 7 idle unpinned (t1..t7): ceil(3.5) = 4 of them, the longest idle first; the pinned t9, t8 stay.
    assert (young.reason, [t.tid for t in young.victims]) == ("young", ["t7", "t6", "t5", "t4"])
    assert [t.tid for t in young.spared_pinned] == ["t9", "t8"]
    full = plan(cached, {"t0"}, pinned, 1 * GIB, Thresholds(100 * GIB, 5 * GIB), 0.5)
    assert full.reason == "full" and {t.tid for t in full.victims} == {f"t{i}" for i in range(1, 8)}
    assert plan(cached, set(), pinned, 200 * GIB, Thresholds(100 * GIB, 5 * GIB), 0.5).victims == []


def put_file(storage: LocalSeedStorage, tid: str) -> None:
    fd = storage.open_for_write(tid, truncate=True)
    os.write(fd, b"x" * 10)
    os.close(fd)


def nearly_full(settings: Settings) -> Settings:
    """Thresholds no disk meets, so that the full GC applies."""
    return settings.model_copy(update={"gc_young_free_bytes": 1 << 62, "gc_full_free_bytes": 1 << 61})


async def test_one_pass_deletes_only_files_of_expired_tasks(tmp_path: Path, redis: Redis, settings: Settings) -> None:
    storage = LocalSeedStorage(tmp_path / "seed")
    live_tid, dead_tid = "a" * 64, "b" * 64
    for tid in (live_tid, dead_tid):
        put_file(storage, tid)
        storage.write_meta(tid, {"taskID": tid})
    await redis.hset(schema.task_key(live_tid), "cdnStatus", "SUCCESS")
    full = nearly_full(settings)
    victims = await collect_once(redis, storage, full, int(time.time() * 1000))
    assert victims == [dead_tid]
    assert storage.data_path(live_tid).exists() and storage.read_meta(live_tid) is not None
    assert not storage.data_path(dead_tid).exists() and storage.read_meta(dead_tid) is None


async def test_a_stray_directory_named_like_a_task_is_skipped_and_reported_once(
    tmp_path: Path, redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    storage = LocalSeedStorage(tmp_path / "seed")
    stray, dead_tid = "c" * 64, "d" * 64
    storage.data_path(stray).mkdir(parents=True)
    (storage.data_path(stray) / "inside").write_bytes(b"kept")
    outside = tmp_path / "outside"
    outside.write_bytes(b"not ours")
    linked = "e" * 64
    storage.data_path(linked).parent.mkdir(parents=True, exist_ok=True)
    storage.data_path(linked).symlink_to(outside)
    full = nearly_full(settings)
    caplog.set_level(logging.WARNING, logger="app.cdn.gc")
    for _round in range(2):  # the loop meets the stray entries every round, but says so once
        put_file(storage, dead_tid)
        victims = await collect_once(redis, storage, full, int(time.time() * 1000))
        assert victims == [dead_tid]
        assert not storage.data_path(dead_tid).exists()
    assert (storage.data_path(stray) / "inside").read_bytes() == b"kept"
    assert outside.read_bytes() == b"not ours" and storage.data_path(linked).is_symlink()
    skipped = [r.getMessage() for r in caplog.records if "disk GC skips" in r.getMessage()]
    assert len(skipped) == 2, skipped
    assert any(stray in m for m in skipped) and any(linked in m for m in skipped)


async def test_the_gc_lock_is_held_for_the_pass_only_and_a_held_lock_skips_the_round(
    tmp_path: Path, redis: Redis, settings: Settings
) -> None:
    storage = LocalSeedStorage(tmp_path / "seed")
    full = nearly_full(settings)
    first, second = "a" * 64, "b" * 64
    put_file(storage, first)
    assert await locked_pass(redis, storage, full) == [first]
    assert not await redis.exists(GC_LOCK)  # given back: the next replica's round need not wait it out
    put_file(storage, second)
    await redis.set(GC_LOCK, "pause", ex=60)  # another replica in a pass, or an operator's pause
    assert await locked_pass(redis, storage, full) is None
    assert storage.data_path(second).exists()
    assert await redis.get(GC_LOCK) == "pause" and await redis.ttl(GC_LOCK) > 50
    await redis.delete(GC_LOCK)
    assert await locked_pass(redis, storage, full) == [second]


async def test_a_pass_that_outlived_its_lock_leaves_the_next_holder_s_lock_alone(
    tmp_path: Path, redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    storage = LocalSeedStorage(tmp_path / "seed")
    full = nearly_full(settings)
    put_file(storage, "c" * 64)
    real_pass = gc.collect_once

    async def slow_pass(*args: object) -> list[str]:
        deleted = await real_pass(*args)  # type: ignore[arg-type]
        # What a pass longer than GC_LOCK_SECONDS meets: its lock expired, another replica holds it now.
        await redis.set(GC_LOCK, "other replica", ex=60)
        return deleted

    monkeypatch.setattr(gc, "collect_once", slow_pass)
    caplog.set_level(logging.WARNING, logger="app.cdn.gc")
    assert await locked_pass(redis, storage, full) == ["c" * 64]
    assert await redis.get(GC_LOCK) == "other replica"
    assert any("outlasted" in r.getMessage() for r in caplog.records)
