"""Disk GC of the shared seed cache (PROTOCOL §11.7), so that the cache does not grow forever.

Files of tasks that still have state in Redis are never touched, nor are files a preheat pinned
(app.cdn.pins) while the pin lasts. When free space falls below the young threshold, the longest-idle
tenth (``DF_GC_CLEAN_RATIO``) of the other tasks goes; below the full threshold, all of them do. A
threshold is the larger of its bytes and its % of the volume. One replica at a time runs a pass, under
a Redis lock; the pass is counted on /metrics of that replica (app.observability.diskgc).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import shutil
import stat as statmod
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import LockNotOwnedError

from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.core.redis import OutageLog
from app.observability import diskgc, legacy
from app.state import schema

log = logging.getLogger("app.cdn.gc")

GC_LOCK = f"{schema.PREFIX}gc:lock"
# Longer than any pass on a real cache (a scan and one pipeline); what a replica that died mid-pass
# costs the others: no GC pass for this long.
GC_LOCK_SECONDS = 120


@dataclass(frozen=True)
class CachedTask:
    tid: str
    idle_ms: int  # since the seed file was last used (atime) or written
    size: int


@dataclass(frozen=True)
class Thresholds:
    young_free: int
    full_free: int


def thresholds(settings: Settings, total_bytes: int) -> Thresholds:
    """The free-space thresholds in bytes on a volume of ``total_bytes``; pure. Of the bytes and the %
    forms of one level, the larger free-space requirement wins (a % of 0 is off)."""

    def level(free_bytes: int, percent: float) -> int:
        return max(free_bytes, math.ceil(total_bytes * percent / 100))

    return Thresholds(
        level(settings.gc_young_free_bytes, settings.gc_young_free_percent),
        level(settings.gc_full_free_bytes, settings.gc_full_free_percent),
    )


@dataclass(frozen=True)
class Plan:
    reason: str  # "full", "young", or "" when there is room
    victims: list[CachedTask] = field(default_factory=list)
    spared_pinned: list[CachedTask] = field(default_factory=list)  # idle, would be candidates, but pinned


def plan(
    cached: list[CachedTask], live: set[str], pinned: set[str], free_bytes: int, limits: Thresholds,
    clean_ratio: float,
) -> Plan:
    """What one pass deletes; pure. Pinned seeds are left out before the young share is taken, so a pin
    never makes the young GC take fewer of the unpinned idle seeds."""
    if free_bytes <= limits.full_free:
        reason = "full"
    elif free_bytes <= limits.young_free:
        reason = "young"
    else:
        return Plan("")
    idle = sorted((t for t in cached if t.tid not in live), key=lambda t: t.idle_ms, reverse=True)
    spared = [t for t in idle if t.tid in pinned]
    candidates = [t for t in idle if t.tid not in pinned]
    if reason == "young":
        candidates = candidates[: math.ceil(len(candidates) * clean_ratio)]
    return Plan(reason, candidates, spared)


def select_victims(
    cached: list[CachedTask], live: set[str], free_bytes: int, young_free: int, full_free: int, clean_ratio: float
) -> list[str]:
    """Task ids whose seed files to delete, nothing pinned; pure."""
    chosen = plan(cached, live, set(), free_bytes, Thresholds(young_free, full_free), clean_ratio)
    return [t.tid for t in chosen.victims]


# Entries GC will not touch (a stray directory or symlink named like a task id, a prefix that is a
# file): said once per path and process, since the loop meets them again every round.
_reported: set[str] = set()


def _skip(path: os.PathLike[str] | str, why: str) -> None:
    key = os.fspath(path)
    if key not in _reported:
        _reported.add(key)
        log.warning("disk GC skips %s: %s; remove it by hand if it is not needed", key, why)


def scan(storage: LocalSeedStorage, now_ms: int) -> list[CachedTask]:
    cached = []
    for prefix in storage.download_dir.iterdir() if storage.download_dir.is_dir() else []:
        if prefix.is_symlink() or not prefix.is_dir():
            _skip(prefix, "not a directory of the seed cache layout")
            continue
        for path in prefix.iterdir():
            if len(path.name) != 64:  # .meta/.md5 siblings and temp files go with their task
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = path.lstat()  # lstat: a symlink is not followed out of the cache
                if not statmod.S_ISREG(stat.st_mode):
                    _skip(path, "not a regular file")
                    continue
                last = max(stat.st_atime, stat.st_mtime) * 1000
                cached.append(CachedTask(path.name, int(now_ms - last), stat.st_blocks * 512))
    return cached


async def _states(redis: aioredis.Redis, tids: list[str]) -> tuple[set[str], set[str]]:
    """(tasks with state in Redis, pinned tasks) among ``tids``: one pipeline. Not atomic with the
    deletes that follow: a task registered or pinned in between (milliseconds) can still lose its file,
    the window this GC has always had."""
    if not tids:
        return set(), set()
    async with redis.pipeline(transaction=False) as pipe:
        for tid in tids:
            pipe.exists(schema.task_key(tid))
            pipe.exists(schema.pin_key(tid))
        found = await pipe.execute()
    live = {tid for tid, present in zip(tids, found[0::2], strict=True) if present}
    pinned = {tid for tid, present in zip(tids, found[1::2], strict=True) if present}
    return live, pinned


# Seed caches whose last pass ended still at or below the full threshold: said once when that starts
# and once when it ends, not every round.
_short: set[str] = set()


def _report_pressure(base: str, free: int, limits: Thresholds, chosen: Plan, live: int) -> None:
    short, was_short = free <= limits.full_free, base in _short
    if short and not was_short:
        _short.add(base)
        kept = sum(t.size for t in chosen.spared_pinned)
        log.warning(
            "disk GC: still only %d MiB free (full GC threshold %d MiB) after deleting every idle seed it may: "
            "%d seeds have task state, %d pinned seeds (%d MiB) are kept until their pin expires",
            free >> 20, limits.full_free >> 20, live, len(chosen.spared_pinned), kept >> 20,
        )
    elif was_short and not short:
        _short.discard(base)
        log.info("disk GC: %d MiB free again, above the full GC threshold", free >> 20)


async def collect_once(redis: aioredis.Redis, storage: LocalSeedStorage, settings: Settings, now_ms: int) -> list[str]:
    """One GC pass, metrics included; returns the task ids whose seed files it deleted."""
    started = time.monotonic()
    cached = await asyncio.to_thread(scan, storage, now_ms)
    live, pinned = await _states(redis, [task.tid for task in cached])
    usage = shutil.disk_usage(storage.base)
    limits = thresholds(settings, usage.total)
    chosen = plan(cached, live, pinned, usage.free, limits, settings.gc_clean_ratio)
    deleted: list[CachedTask] = []
    for task in chosen.victims:
        try:
            await asyncio.to_thread(storage.delete, task.tid)
        except OSError as exc:  # one entry it cannot delete must not stop the collection of the rest
            _skip(storage.data_path(task.tid), f"cannot delete it ({exc.strerror or exc})")
            continue
        deleted.append(task)
    free_after = shutil.disk_usage(storage.base).free if deleted else usage.free
    if deleted:
        log.info("disk GC (%s): %d MiB free, deleted %d idle seed files (%d MiB); %d pinned kept",
                 chosen.reason, usage.free >> 20, len(deleted), sum(t.size for t in deleted) >> 20,
                 len(chosen.spared_pinned))
    _report_pressure(os.fspath(storage.base), free_after, limits, chosen, len(live))
    if chosen.reason:
        diskgc.evicted_files.labels(chosen.reason).inc(len(deleted))
        diskgc.evicted_bytes.labels(chosen.reason).inc(sum(t.size for t in deleted))
        diskgc.skipped_pinned.inc(len(chosen.spared_pinned))
    legacy.gc_disks.inc(len(deleted))
    diskgc.runs.inc()
    diskgc.free_bytes.set(free_after)
    diskgc.pinned_bytes.set(sum(t.size for t in cached if t.tid in pinned and t.tid not in live))
    diskgc.threshold_bytes.labels("young").set(limits.young_free)
    diskgc.threshold_bytes.labels("full").set(limits.full_free)
    diskgc.last_duration.set(time.monotonic() - started)
    legacy.last_gc_disks.set_to_current_time()
    return [task.tid for task in deleted]


async def run_gc_loop(redis: aioredis.Redis, storage: LocalSeedStorage, settings: Settings) -> None:
    interval = settings.gc_interval_seconds
    outage = OutageLog(log, "disk GC")
    while True:
        await asyncio.sleep(interval)
        try:
            await locked_pass(redis, storage, settings)
        except Exception as exc:  # Redis away or a disk error: the next round tries again
            outage.failed(exc)
        else:
            outage.succeeded()


async def locked_pass(
    redis: aioredis.Redis, storage: LocalSeedStorage, settings: Settings
) -> list[str] | None:
    """A pass under the cluster-wide lock, which is held for the pass only. redis-py's lock takes it with
    a token of its own and gives it back only if the token is still there, so a pass that outlived
    ``GC_LOCK_SECONDS`` never frees a lock another replica took since. Skips the round if the lock is
    taken: another replica is in a pass over the same shared cache, or an operator paused the GC. Returns
    what the pass deleted, or None when it skipped the round."""
    lock = redis.lock(GC_LOCK, timeout=GC_LOCK_SECONDS, blocking=False)
    if not await lock.acquire():
        return None
    try:
        return await collect_once(redis, storage, settings, int(time.time() * 1000))
    finally:
        try:
            await lock.release()
        except LockNotOwnedError:
            log.warning("disk GC: a pass outlasted its %d s lock; another replica may have run one meanwhile",
                        GC_LOCK_SECONDS)
