"""Disk GC of the shared seed cache (PROTOCOL §11.7), so that the cache does not grow forever.

Files of tasks that still have state in Redis are never touched. When free space falls below the young
threshold, the longest-idle tenth of the other tasks goes; below the full threshold, all of them do.
One replica at a time runs it, under a Redis lock.
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
from dataclasses import dataclass

import redis.asyncio as aioredis

from app.cdn.storage import LocalSeedStorage
from app.core.config import Settings
from app.core.redis import OutageLog
from app.observability import legacy
from app.state import schema

log = logging.getLogger("app.cdn.gc")

GC_LOCK = f"{schema.PREFIX}gc:lock"


@dataclass(frozen=True)
class CachedTask:
    tid: str
    idle_ms: int  # since the seed file was last used (atime) or written
    size: int


def select_victims(
    cached: list[CachedTask], live: set[str], free_bytes: int, young_free: int, full_free: int, clean_ratio: float
) -> list[str]:
    """Task ids whose seed files to delete; pure."""
    if free_bytes > young_free:
        return []
    idle = sorted((t for t in cached if t.tid not in live), key=lambda t: t.idle_ms, reverse=True)
    if free_bytes <= full_free:
        return [t.tid for t in idle]
    return [t.tid for t in idle[: math.ceil(len(idle) * clean_ratio)]]


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


async def collect_once(redis: aioredis.Redis, storage: LocalSeedStorage, settings: Settings, now_ms: int) -> list[str]:
    cached = await asyncio.to_thread(scan, storage, now_ms)
    if not cached:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for task in cached:
            pipe.exists(schema.task_key(task.tid))
        exists = await pipe.execute()
    live = {task.tid for task, present in zip(cached, exists, strict=True) if present}
    free = shutil.disk_usage(storage.base).free
    victims = select_victims(
        cached, live, free, settings.gc_young_free_bytes, settings.gc_full_free_bytes, settings.gc_clean_ratio
    )
    deleted = []
    for tid in victims:
        try:
            await asyncio.to_thread(storage.delete, tid)
        except OSError as exc:  # one entry it cannot delete must not stop the collection of the rest
            _skip(storage.data_path(tid), f"cannot delete it ({exc.strerror or exc})")
            continue
        deleted.append(tid)
    victims = deleted
    if victims:
        log.info("disk GC: %d MiB free, deleted %d idle seed files", free >> 20, len(victims))
    return victims


async def run_gc_loop(redis: aioredis.Redis, storage: LocalSeedStorage, settings: Settings) -> None:
    interval = settings.gc_interval_seconds
    outage = OutageLog(log, "disk GC")
    while True:
        await asyncio.sleep(interval)
        try:
            if await redis.set(GC_LOCK, os.getpid(), nx=True, ex=max(1, int(interval))):
                deleted = await collect_once(redis, storage, settings, int(time.time() * 1000))
                legacy.gc_disks.inc(len(deleted))
                legacy.last_gc_disks.set_to_current_time()
        except Exception as exc:  # Redis away or a disk error: the next round tries again
            outage.failed(exc)
        else:
            outage.succeeded()
