"""Read and delete tasks in the shared state (PROTOCOL §6.3), for the REST API.

Reads are plain Redis reads, pipelined: they see each key as some replica last wrote it, which is
all an operator view needs. Deletion is the one mutation here; see :meth:`TaskService.delete`.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from app.cdn.storage import SeedStorage
from app.core.masking import mask_headers, mask_text, mask_url
from app.core.timefmt import rfc3339_ms
from app.observability import legacy
from app.state import schema
from app.state.listing import task_page
from app.tasks.models import PieceHolder, PieceInfo, PiecePage, SeedProgress, TaskPage, TaskStatus, TaskView
from app.tasks.refusals import read_refusal, refused_view

TASK_ID_PATTERN = r"^[0-9a-f]{64}$"  # sha256 hex (§7.2); anything else cannot name a task
_LIST_CHUNK = 1000
_FILTER_FIELDS = ["cdnStatus", "taskUrl", "rawUrl"]  # what _matches reads (cdnStatus first: None = expired)
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
REDACTED = "<redacted>"


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _nonzero(value: int | None) -> int | None:
    return value or None


def _headers(raw: str | None) -> dict[str, str] | None:
    """The registration headers, with credentials masked: Go showed them verbatim, but a read API
    (possibly public, DF_PUBLIC_READ_API) must not hand out a registry's bearer tokens."""
    try:
        loaded = orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(loaded, dict) or not loaded:
        return None
    return mask_headers(loaded, REDACTED)


def _shown_url(raw: str | None) -> str | None:
    """rawUrl/taskUrl as shown: the task id was computed from the real URL (PROTOCOL §7.2), which stays
    in Redis for the seeder; a reader gets it with userinfo and signed-URL parameters masked."""
    return mask_url(raw) if raw else None


def _progress(fields: dict[str, str], seeded_pieces: int, now_ms: int) -> SeedProgress:
    status = fields.get("cdnStatus", "")
    seeded_bytes = _int(fields.get("seedBytes")) or 0
    length = _int(fields.get("httpFileLength")) or 0
    started = _int(fields.get("seedStarted"))
    finished = _int(fields.get("seedFinished"))
    # seedFinished survives a retry (a FAILED task seeded again): it belongs to this run only if later.
    if started is None or finished is None or finished < started or status == TaskStatus.RUNNING:
        finished = None
    percent: float | None = None
    if status == TaskStatus.SUCCESS:
        percent = 100.0
    elif length > 0:
        percent = round(min(100.0, seeded_bytes * 100.0 / length), 2)
    rate: float | None = None
    if started is not None and status in (TaskStatus.RUNNING, TaskStatus.SUCCESS, TaskStatus.FAILED):
        elapsed = ((finished if finished is not None else now_ms) - started) / 1000
        rate = round(seeded_bytes / elapsed, 1) if elapsed > 0 else None
    return SeedProgress(
        piecesSeeded=seeded_pieces,
        pieceTotal=_int(fields.get("pieceTotal")),
        bytes=seeded_bytes,
        percent=percent,
        rateBytesPerSecond=rate,
        started=rfc3339_ms(started) if started else None,
        finished=rfc3339_ms(finished) if finished else None,
        error=mask_text(fields.get("seedError") or "") or None,  # a source error may quote the URL
        reason=fields.get("seedReason") or None,
    )


def task_view(tid: str, fields: dict[str, str], peers: int, seeded_pieces: int, now_ms: int) -> TaskView:
    created, accessed = _int(fields.get("created")), _int(fields.get("accessed"))
    return TaskView(
        ID=tid,
        cdnStatus=fields.get("cdnStatus") or None,
        fileLength=_nonzero(_int(fields.get("fileLength"))),
        httpFileLength=_nonzero(_int(fields.get("httpFileLength"))),
        pieceSize=_nonzero(_int(fields.get("pieceSize"))),
        pieceTotal=_nonzero(_int(fields.get("pieceTotal"))),
        rawURL=_shown_url(fields.get("rawUrl")),
        taskURL=_shown_url(fields.get("taskUrl")),
        md5=fields.get("md5") or None,
        realMd5=fields.get("realMd5") or None,
        identifier=fields.get("identifier") or None,
        headers=_headers(fields.get("headers")),
        created=rfc3339_ms(created) if created else None,
        accessed=rfc3339_ms(accessed) if accessed else None,
        peers=peers,
        progress=_progress(fields, seeded_pieces, now_ms),
    )


def _matches(fields: dict[str, str], status: TaskStatus | None, url: str | None) -> bool:
    if status is not None and fields.get("cdnStatus") != status:
        return False
    # Matched against what is shown: a substring search must not be an oracle for a hidden signature.
    return not url or any(url in (_shown_url(fields.get(name)) or "") for name in ("taskUrl", "rawUrl"))


class TaskService:
    def __init__(self, redis: aioredis.Redis, storage: SeedStorage, ttl_seconds: int | None = None) -> None:
        """``ttl_seconds`` (DF_TASK_TTL_SECONDS): lets listings without a URL filter run in Redis."""
        self.redis = redis
        self.storage = storage
        self.ttl_seconds = ttl_seconds

    async def _views(self, tids: list[str]) -> list[tuple[str, dict[str, str], int, int]]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in tids:
                pipe.hgetall(schema.task_key(tid))
                pipe.scard(schema.cids_key(tid))
                pipe.hlen(schema.cdn_key(tid))
            replies: list[Any] = await pipe.execute()
        rows = []
        for i, tid in enumerate(tids):
            fields, peers, seeded = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
            if fields:  # the index outlives expired task hashes until the next registration prunes it
                rows.append((tid, fields, int(peers), int(seeded)))
        return rows

    async def list(self, status: TaskStatus | None, url: str | None, limit: int, offset: int) -> TaskPage:
        """Tasks by last access, newest first. The order is a snapshot of the index taken at the call;
        paging while clients keep pulling can show a task twice or skip one, as any live listing.

        Without a URL filter the page is found inside Redis (app.state.listing, one call); the URL
        filter matches what is shown (masked), so it reads three fields of each task (pipelined a chunk
        at a time). Either way the full view is built only for the page (issue 8: 10,000 tasks)."""
        if not url and self.ttl_seconds is not None:
            total, wanted = await task_page(self.redis, self.ttl_seconds, status, offset, limit)
            now = int(time.time() * 1000)
            views = await self._views(wanted)
            return TaskPage(total=total, offset=offset, limit=limit,
                            tasks=[task_view(tid, fields, peers, seeded, now) for tid, fields, peers, seeded in views])
        tids: list[str] = await self.redis.zrevrange(schema.TASK_INDEX, 0, -1)  # type: ignore[assignment]
        total, wanted = 0, []
        for start in range(0, len(tids), _LIST_CHUNK):
            chunk = tids[start : start + _LIST_CHUNK]
            async with self.redis.pipeline(transaction=False) as pipe:
                for tid in chunk:
                    pipe.hmget(schema.task_key(tid), _FILTER_FIELDS)
                replies: list[list[str | None]] = await pipe.execute()
            for tid, values in zip(chunk, replies, strict=True):
                if values[0] is None:
                    continue  # expired: the index outlives task hashes until a registration prunes it
                fields = {name: value for name, value in zip(_FILTER_FIELDS, values, strict=True) if value is not None}
                if not _matches(fields, status, url):
                    continue
                if offset <= total < offset + limit:
                    wanted.append(tid)
                total += 1
        now = int(time.time() * 1000)
        page = [task_view(tid, fields, peers, seeded, now) for tid, fields, peers, seeded in await self._views(wanted)]
        return TaskPage(total=total, offset=offset, limit=limit, tasks=page)

    async def get(self, tid: str) -> TaskView | None:
        """The task, with the source policy's last refusal for its id if one is kept; a task id that only
        has a refusal (its registrations were refused, so it was never created) is shown as REFUSED."""
        rows = await self._views([tid])
        kept = await read_refusal(self.redis, tid)
        if not rows:
            return refused_view(tid, *kept) if kept is not None else None
        _, fields, peers, seeded = rows[0]
        view = task_view(tid, fields, peers, seeded, int(time.time() * 1000))
        if kept is not None:
            view.sourceRefusal = kept[0]
        return view

    async def pieces(self, tid: str, offset: int, limit: int) -> PiecePage | None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(schema.task_key(tid), "pieceTotal")
            pipe.hgetall(schema.cdn_key(tid))
            piece_total, cdn = await pipe.execute()
        if piece_total is None:
            return None
        seeded: dict[int, str] = {int(n): value for n, value in cdn.items() if n.isdigit()}
        # pieceTotal is provisional while seeding (unknown length: 0); the seed cache may know more.
        total = max(int(piece_total), max(seeded, default=-1) + 1)
        numbers = list(range(offset, min(total, offset + limit)))
        async with self.redis.pipeline(transaction=False) as pipe:
            for n in numbers:
                pipe.smembers(schema.holders_key(tid, n))
            holder_sets: list[set[str]] = await pipe.execute()
        cids = sorted(set().union(*holder_sets)) if holder_sets else []
        async with self.redis.pipeline(transaction=False) as pipe:
            for cid in cids:
                pipe.hmget(schema.dt_key(tid, cid), ["ip", "port", "peerId"])
            infos = dict(zip(cids, await pipe.execute(), strict=True))
        pieces = []
        for n, holders in zip(numbers, holder_sets, strict=True):
            md5, _, length = seeded.get(n, "").partition(":")
            pieces.append(
                PieceInfo(
                    pieceNum=n,
                    seeded=n in seeded,
                    md5=md5 or None,
                    length=_int(length),
                    holders=[
                        PieceHolder(cid=cid, ip=infos[cid][0], port=_int(infos[cid][1]), peerId=infos[cid][2])
                        for cid in sorted(holders)
                    ],
                )
            )
        return PiecePage(taskId=tid, pieceTotal=total, offset=offset, limit=limit, pieces=pieces)

    async def delete(self, tid: str, full: bool) -> bool:
        """Remove every ``df:{T}:*`` key (one UNLINK: they share a slot) and the index entry, in one
        pipeline; with ``full`` the seed files too. True when there was something to remove.

        Races, all benign: a registration or pull landing between the SCAN and the EXEC can write a key
        the SCAN did not see (e.g. a new ``dt:{cid}``); without the task hash nothing uses it and it
        expires with the task TTL. A registration right after the EXEC creates the task afresh
        (probe, seed), as after a TTL expiry. A seed job still running notices at its next progress
        report (its epoch is gone) and stops; a file it re-created meanwhile has no task state and goes
        with the next disk GC.
        """
        pattern = _GLOB_SPECIAL.sub(r"\\\1", schema.task_prefix(tid)) + "*"
        keys = [key async for key in self.redis.scan_iter(match=pattern, count=1000)]
        # Not one MULTI: the index is in another slot on a Redis Cluster. An index entry whose task is
        # gone is skipped by every listing and pruned by the next registration.
        async with self.redis.pipeline(transaction=False) as pipe:
            if keys:
                # The raw command: a cluster pipeline's unlink() splits keys by slot outside the pipeline.
                pipe.execute_command("UNLINK", *keys)
            pipe.zrem(schema.TASK_INDEX, tid)
            await pipe.execute()
        if keys:
            legacy.gc_tasks.inc()
        had_files = False
        if full:
            had_files = await asyncio.to_thread(self._delete_files, tid)
        return bool(keys) or had_files

    def _delete_files(self, tid: str) -> bool:
        existed = self.storage.data_path(tid).exists() or self.storage.read_meta(tid) is not None
        self.storage.delete(tid)
        return existed
