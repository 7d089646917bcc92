"""Fill the shared seed cache from the origin (PROTOCOL §9.1–9.4, §12.3–12.4).

:func:`seed` is the one entry point, used by the Celery worker and by the embedded in-process mode.
It reports to the cluster state only through :class:`~app.cdn.sink.SeedSink`: pieces as soon as each
is durable (peers start fetching before the file is complete), ``heartbeat`` to keep its lease, and
``finished`` once. A finished copy the origin says is unchanged is published without downloading
(§12.3); an unfinished one (a killed worker, a lost lease, a source that cut the body short) is
continued with a Range request (app.cdn.resume); anything else is downloaded from byte 0
(app.cdn.writer, which keeps memory bounded to two piece buffers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from app.cdn.cached import cached_piece_md5s, md5_file_lines
from app.cdn.resume import ResumePoint, find_resume_point, new_download_id, response_fields, same_task
from app.cdn.sink import SeedJob, SeedOutcome, SeedSink
from app.cdn.source import SourceError, SourceResponse, is_fresh, open_source
from app.cdn.storage import SeedStorage
from app.cdn.writer import LeaseLost, PieceWriter
from app.protocol.pieces import FRAME_OVERHEAD

log = logging.getLogger("app.cdn.seeder")

LEASE_LOST = "lease_lost"
# A final report refused for missing pieces is retried after publishing them again; more than a couple
# of rounds would mean someone keeps deleting them, which only a newer seeder does.
_FINISH_ATTEMPTS = 3


def _now_ms() -> int:
    return int(time.time() * 1000)


async def seed(
    job: SeedJob,
    storage: SeedStorage,
    sink: SeedSink,
    client: httpx.AsyncClient,
    *,
    lease_seconds: float,
    check_timeout: float = 4.0,
) -> SeedOutcome:
    """Seed one task; returns what was reported (or a ``lease_lost`` outcome that was not reported)."""
    started = time.monotonic()
    log.info(
        "seed start %s epoch=%d url=%s known_len=%d piece_size=%d",
        job.tid,
        job.epoch,
        job.raw_url,
        job.http_file_length,
        job.piece_size,
    )
    work = asyncio.create_task(_SeedRun(job, storage, sink, client, check_timeout).run())
    keeper = asyncio.create_task(_keep_lease(sink, job, lease_seconds))
    try:
        await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Also reached when our caller cancels us: never leave either task running.
        for task in (work, keeper):
            task.cancel()
        await asyncio.gather(work, keeper, return_exceptions=True)
    elapsed = time.monotonic() - started
    if keeper.done() and not keeper.cancelled() and (failure := keeper.exception()) is not None:
        raise failure  # a bug in the sink, not a lost lease
    if work.cancelled() or isinstance(work.exception(), LeaseLost):
        log.warning("seed %s epoch=%d lost its lease after %.1fs; stopped", job.tid, job.epoch, elapsed)
        return SeedOutcome(success=False, error="another seeder owns this task", reason=LEASE_LOST)
    outcome = work.result()
    log.info(
        "seed end %s success=%s reason=%s raw=%d pieces=%d in %.1fs",
        job.tid,
        outcome.success,
        outcome.reason,
        outcome.raw_length,
        outcome.piece_total,
        elapsed,
    )
    return outcome


async def _keep_lease(sink: SeedSink, job: SeedJob, lease_seconds: float) -> None:
    """Returns only when the lease is lost; the caller then cancels the work. The sink rides out
    store outages itself, for as long as the lease can hold."""
    while True:
        await asyncio.sleep(lease_seconds / 3)
        if not await sink.heartbeat(job.tid, job.epoch):
            return


def _fresh_meta(job: SeedJob, old: dict[str, Any] | None) -> dict[str, Any]:
    now = _now_ms()
    previous = old.get("accessTime") if old else None
    return {
        "taskID": job.tid,
        "url": job.task_url,
        "pieceSize": job.piece_size,
        "httpFileLen": job.http_file_length,
        "bizId": job.identifier,
        "accessTime": now,
        "interval": now - previous if isinstance(previous, int) and previous > 0 else 0,
        "fileLength": 0,
        "md5": job.md5,
        "realMd5": "",
        "lastModified": 0,
        "eTag": "",
        "finish": False,
        "success": False,
    }


class _SeedRun:
    """One seed of one task: a cache hit, a resume, or a download from byte 0."""

    def __init__(
        self, job: SeedJob, storage: SeedStorage, sink: SeedSink, client: httpx.AsyncClient, check_timeout: float
    ) -> None:
        self.job, self.storage, self.sink, self.client = job, storage, sink, client
        self.check_timeout = check_timeout
        self.old: dict[str, Any] | None = None
        self.meta: dict[str, Any] = {}
        # Whether the records on disk are this run's: only then does a failure end them (a resume that
        # could not even reach the source leaves them for the next attempt).
        self.owns_files = False

    async def run(self) -> SeedOutcome:
        job = self.job
        self.old = old = await asyncio.to_thread(self.storage.read_meta, job.tid)
        if old is not None and same_task(old, job) and old.get("finish") and old.get("success"):
            hit = await self._cache_hit(old)
            if hit is not None:
                return hit
        point, why = await asyncio.to_thread(find_resume_point, self.storage, job, old)
        if point is None and old is not None and same_task(old, job) and not old.get("success"):
            log.info("seed %s: not resuming the earlier seed on disk: %s", job.tid, why)
        try:
            return await self._download(point)
        except SourceError as exc:
            return await self._fail(exc.reason, exc.message)
        except OSError as exc:
            log.exception("seed %s: local storage error", job.tid)
            return await self._fail("storage", f"seed cache write failed: {exc}")

    # --- the origin ------------------------------------------------------------------------------

    async def _start_over(self) -> None:
        self.meta = _fresh_meta(self.job, self.old)
        await asyncio.to_thread(self.storage.reset, self.job.tid)
        await asyncio.to_thread(self.storage.write_meta, self.job.tid, self.meta)
        self.owns_files = True

    async def _open(
        self, stack: contextlib.AsyncExitStack, point: ResumePoint | None
    ) -> tuple[SourceResponse | None, ResumePoint | None]:
        """The response to read (None: nothing left to fetch) and the resume point it continues."""
        job, client = self.job, self.client
        if point is not None and point.complete:
            # Killed after the last piece: nothing to fetch, but the copy must still be current.
            if await is_fresh(client, job.raw_url, job.headers, last_modified_ms=point.last_modified_ms,
                              etag=point.etag, timeout=self.check_timeout):
                return None, point
            log.info("seed %s: the download on disk expired at the origin; starting over", job.tid)
            point = None
        elif point is not None:
            attempt = contextlib.AsyncExitStack()
            source: SourceResponse | None = None
            try:
                source = await attempt.enter_async_context(open_source(
                    client, job.raw_url, job.headers, range_start=point.offset, if_range=point.if_range
                ))
            except SourceError as exc:
                if exc.status != 416:  # 416: the file shrank below our offset; anything else fails the seed
                    raise
            why = point.mismatch(source) if source is not None else "the source answered 416 to the range request"
            if source is not None and (not why or source.status == 200):
                await stack.enter_async_context(attempt)
                if not why:
                    return source, point
                # If-Range did not match (the file changed) or ranges are not served: this body is the
                # whole file, so it is read from byte 0 rather than asked for again.
                log.info("seed %s: %s; starting over with that body", job.tid, why)
                return source, None
            log.warning("seed %s: cannot resume (%s); starting over", job.tid, why)
            await attempt.aclose()
            point = None
        source = await stack.enter_async_context(open_source(client, job.raw_url, job.headers))
        return source, None

    async def _writer(
        self, stack: contextlib.AsyncExitStack, source: SourceResponse | None, point: ResumePoint | None
    ) -> PieceWriter:
        job, storage = self.job, self.storage
        if point is not None:
            self.meta = dict(self.old or {})
            # Keep the verified lines only: a torn or unverified tail must not be appended to.
            await asyncio.to_thread(storage.write_journal, job.tid, [point.download_id, *point.md5s])
        else:
            assert source is not None
            if not self.owns_files:
                await self._start_over()
            if job.http_file_length >= 0 and source.length >= 0 and source.length != job.http_file_length:
                # Fail fast: the file changed between the registration probe and now.
                raise SourceError(
                    "length_changed",
                    f"source length of {job.raw_url} changed from "
                    f"{job.http_file_length} to {source.length} since registration",
                )
            download_id = new_download_id()
            self.meta.update(response_fields(source, download_id))
            # Recorded before any piece: a seed killed from here on can be resumed.
            await asyncio.to_thread(storage.write_meta, job.tid, self.meta)
            await asyncio.to_thread(storage.write_journal, job.tid, [download_id])
        self.owns_files = True
        fd = await asyncio.to_thread(storage.open_for_write, job.tid, False)
        try:
            journal_fd = await asyncio.to_thread(storage.open_journal, job.tid)
        except OSError:
            os.close(fd)
            raise
        if point is not None:
            writer = PieceWriter(
                fd, journal_fd, job, self.sink, md5s=point.md5s, offset=point.offset, whole=point.whole
            )
        else:
            writer = PieceWriter(fd, journal_fd, job, self.sink)
        stack.push_async_callback(writer.aclose)
        return writer

    async def _download(self, point: ResumePoint | None) -> SeedOutcome:
        job = self.job
        if point is None:
            await self._start_over()
        async with contextlib.AsyncExitStack() as stack:
            source, point = await self._open(stack, point)
            writer = await self._writer(stack, source, point)
            total = point.length if point is not None else source.length if source is not None else -1
            writer.progress.total = total if total >= 0 else job.http_file_length
            if point is not None:
                log.info("seed %s: resuming at byte %d of %d, %d pieces verified on disk", job.tid, point.offset,
                         point.length, len(point.md5s))
                await writer.flush()  # the verified pieces, fsync'd once more, all at once
            if source is not None:
                try:
                    async for chunk in source.chunks():
                        await writer.feed(chunk)
                    # Checked before the tail piece goes out: a short or changed body publishes no more pieces.
                    _check_length(job, total, writer.received)
                except SourceError:
                    await writer.settle()  # the piece being written stays, for the retry to resume from
                    raise
            await writer.finish()
        return await self._finalize(writer)

    async def _finalize(self, writer: PieceWriter) -> SeedOutcome:
        job, storage = self.job, self.storage
        real_md5 = writer.real_md5()
        if job.md5 and job.md5.lower() != real_md5:
            raise SourceError("md5_mismatch", f"md5 of {job.raw_url} is {real_md5}, expected {job.md5}")
        received = writer.received
        framed = received + FRAME_OVERHEAD * len(writer.md5s)
        outcome = SeedOutcome(
            success=True, file_length=framed, raw_length=received, real_md5=real_md5, piece_total=len(writer.md5s)
        )
        self.meta.update(fileLength=framed, realMd5=real_md5, finish=True, success=True, failReason="")
        # Make sure we still own the task before claiming the files for ourselves.
        if not await self.sink.heartbeat(job.tid, job.epoch):
            raise LeaseLost
        await asyncio.to_thread(storage.write_md5_lines, job.tid, md5_file_lines(writer.md5s, real_md5))
        await asyncio.to_thread(storage.write_meta, job.tid, self.meta)
        writer.progress.log_end()
        await self._report(outcome, writer.republish)
        return outcome

    async def _report(self, outcome: SeedOutcome, republish: Callable[[], Awaitable[None]] | None = None) -> None:
        """The final report; when the state lost published pieces meanwhile, publish them again first:
        a task marked finished with pieces nobody announces would stall its clients for good."""
        job = self.job
        for _ in range(_FINISH_ATTEMPTS):
            result = await self.sink.finished(job.tid, job.epoch, outcome)
            if result == "done":
                return
            if result == "lost" or republish is None:
                break
            log.warning("seed %s: the state lacks pieces this seed published (lost in a Redis failover);"
                        " publishing them again", job.tid)
            await republish()
        raise LeaseLost

    async def _fail(self, reason: str, error: str) -> SeedOutcome:
        job = self.job
        log.warning("seed %s failed (%s): %s", job.tid, reason, error)
        if not await self.sink.heartbeat(job.tid, job.epoch):
            raise LeaseLost
        if self.owns_files:
            # failReason lets the next seed resume after a body cut short (app.cdn.resume).
            self.meta.update(finish=True, success=False, failReason=reason)
            await asyncio.to_thread(self.storage.write_meta, job.tid, self.meta)
        outcome = SeedOutcome(success=False, error=error, reason=reason)
        await self._report(outcome)
        return outcome

    # --- a finished copy ----------------------------------------------------------------------------

    async def _cache_hit(self, meta: dict[str, Any]) -> SeedOutcome | None:
        """Publish a complete cached copy if the origin says it is unchanged; None: download again."""
        job, sink = self.job, self.sink
        fresh = await is_fresh(
            self.client,
            job.raw_url,
            job.headers,
            last_modified_ms=int(meta.get("lastModified") or 0),
            etag=str(meta.get("eTag") or ""),
            timeout=self.check_timeout,
        )
        if not fresh:
            log.info("seed %s: cached copy expired at the origin, downloading again", job.tid)
            return None
        md5s = await asyncio.to_thread(cached_piece_md5s, self.storage, job, meta)
        if md5s is None:
            log.warning("seed %s: cached copy is damaged, downloading again", job.tid)
            return None
        framed = int(meta["fileLength"])
        raw = framed - FRAME_OVERHEAD * len(md5s)

        async def publish() -> None:
            if await sink.pieces_ready(job.tid, job.epoch, 0, md5s, raw) is None:
                raise LeaseLost

        await publish()
        now = _now_ms()
        touched = {**meta, "accessTime": now, "interval": now - int(meta.get("accessTime") or now)}
        await asyncio.to_thread(self.storage.write_meta, job.tid, touched)
        outcome = SeedOutcome(
            success=True, file_length=framed, raw_length=raw, real_md5=str(meta["realMd5"]), piece_total=len(md5s),
            cached=True,
        )
        log.info("seed %s: cache hit, %d pieces published without downloading", job.tid, len(md5s))
        await self._report(outcome, publish)
        return outcome


def _check_length(job: SeedJob, announced: int, received: int) -> None:
    if announced >= 0 and received != announced:
        raise SourceError("truncated", f"source sent {received} of {announced} bytes for {job.raw_url}")
    if job.http_file_length >= 0 and received != job.http_file_length:
        raise SourceError(
            "length_changed",
            f"source sent {received} bytes for {job.raw_url}, {job.http_file_length} were announced at registration",
        )
