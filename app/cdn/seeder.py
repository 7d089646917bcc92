"""Fill the shared seed cache from the origin (PROTOCOL §9.1–9.4, §12.3–12.4).

:func:`seed` is the one entry point, used by the Celery worker and by the embedded in-process mode.
It reports to the cluster state only through :class:`~app.cdn.sink.SeedSink`: one ``piece_ready`` per
durable piece (peers start fetching before the file is complete), ``heartbeat`` to keep its lease,
and ``finished`` once. Memory stays bounded: two piece buffers (one filling from the network while
the other is written and fsync'd), whatever the file size.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from app.cdn.sink import SeedJob, SeedOutcome, SeedSink
from app.cdn.source import SourceError, is_fresh, open_source
from app.cdn.storage import SeedStorage
from app.protocol.pieces import FRAME_OVERHEAD, frame_header, header_data_len, payload_size

log = logging.getLogger("app.cdn.seeder")

LEASE_LOST = "lease_lost"
_PROGRESS_SECONDS = 5.0


class _LeaseLost(Exception):
    """Another seeder owns the task now: stop without touching shared state."""


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
    work = asyncio.create_task(_seed(job, storage, sink, client, check_timeout))
    keeper = asyncio.create_task(_keep_lease(sink, job, lease_seconds))
    try:
        await asyncio.wait({work, keeper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # Also reached when our caller cancels us: never leave either task running.
        for task in (work, keeper):
            task.cancel()
        await asyncio.gather(work, keeper, return_exceptions=True)
    elapsed = time.monotonic() - started
    if work.cancelled() or isinstance(work.exception(), _LeaseLost):
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
    """Returns only when the lease is lost; the caller then cancels the work."""
    interval = lease_seconds / 3
    last_ok = time.monotonic()
    while True:
        await asyncio.sleep(interval)
        try:
            async with asyncio.timeout(interval):
                if not await sink.heartbeat(job.tid, job.epoch):
                    return
            last_ok = time.monotonic()
        except Exception:  # a state-store hiccup: keep going until the lease must have expired
            log.warning("heartbeat for %s failed", job.tid, exc_info=True)
            if time.monotonic() - last_ok > lease_seconds:
                return


async def _seed(
    job: SeedJob, storage: SeedStorage, sink: SeedSink, client: httpx.AsyncClient, check_timeout: float
) -> SeedOutcome:
    old = await asyncio.to_thread(storage.read_meta, job.tid)
    if old is not None and _same_task(old, job) and old.get("finish") and old.get("success"):
        hit = await _cache_hit(job, storage, sink, client, old, check_timeout)
        if hit is not None:
            return hit
    # Resuming an unfinished file with Range is not implemented: anything but a full hit starts over.
    meta = _fresh_meta(job, old)
    await asyncio.to_thread(storage.delete, job.tid)
    await asyncio.to_thread(storage.write_meta, job.tid, meta)
    try:
        return await _download(job, storage, sink, client, meta)
    except SourceError as exc:
        return await _fail(job, storage, sink, meta, exc.reason, exc.message)
    except OSError as exc:
        log.exception("seed %s: local storage error", job.tid)
        return await _fail(job, storage, sink, meta, "storage", f"seed cache write failed: {exc}")


def _same_task(meta: dict[str, Any], job: SeedJob) -> bool:
    """§12.3 step 1: same id, taskUrl and piece size, and same md5 (or identifier without md5)."""
    if meta.get("taskID") != job.tid or meta.get("url") != job.task_url:
        return False
    if meta.get("pieceSize") != job.piece_size:
        return False
    if job.md5:
        return bool(meta.get("md5") == job.md5)
    return bool(meta.get("bizId", "") == job.identifier)


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


# --- full cache hit ------------------------------------------------------------------------------


async def _cache_hit(
    job: SeedJob,
    storage: SeedStorage,
    sink: SeedSink,
    client: httpx.AsyncClient,
    meta: dict[str, Any],
    check_timeout: float,
) -> SeedOutcome | None:
    """Publish a complete cached copy if the origin says it is unchanged; None: download again."""
    fresh = await is_fresh(
        client,
        job.raw_url,
        job.headers,
        last_modified_ms=int(meta.get("lastModified") or 0),
        etag=str(meta.get("eTag") or ""),
        timeout=check_timeout,
    )
    if not fresh:
        log.info("seed %s: cached copy expired at the origin, downloading again", job.tid)
        return None
    md5s = await asyncio.to_thread(_cached_piece_md5s, storage, job, meta)
    if md5s is None:
        log.warning("seed %s: cached copy is damaged, downloading again", job.tid)
        return None
    framed = int(meta["fileLength"])
    raw = framed - FRAME_OVERHEAD * len(md5s)
    if not await sink.pieces_ready(job.tid, job.epoch, md5s, raw):
        raise _LeaseLost
    now = _now_ms()
    touched = {**meta, "accessTime": now, "interval": now - int(meta.get("accessTime") or now)}
    await asyncio.to_thread(storage.write_meta, job.tid, touched)
    outcome = SeedOutcome(
        success=True, file_length=framed, raw_length=raw, real_md5=str(meta["realMd5"]), piece_total=len(md5s)
    )
    log.info("seed %s: cache hit, %d pieces published without downloading", job.tid, len(md5s))
    await sink.finished(job.tid, job.epoch, outcome)
    return outcome


def md5_file_lines(piece_md5s: list[str], real_md5: str) -> list[str]:
    """The ``.md5`` file (§9.4): piece lines, the whole-file md5, SHA-1 of all previous lines."""
    lines = [*piece_md5s, real_md5]
    return [*lines, hashlib.sha1("".join(lines).encode()).hexdigest()]


def _cached_piece_md5s(storage: SeedStorage, job: SeedJob, meta: dict[str, Any]) -> list[str] | None:
    """Piece md5s of a finished copy, from a valid ``.md5`` file or else by re-scanning the data."""
    framed = meta.get("fileLength")
    real_md5 = meta.get("realMd5")
    if not isinstance(framed, int) or framed < FRAME_OVERHEAD or not isinstance(real_md5, str):
        return None
    try:
        if os.stat(storage.data_path(job.tid)).st_size != framed:
            return None
    except FileNotFoundError:
        return None
    lines = storage.read_md5_lines(job.tid)
    if lines and len(lines) >= 3 and md5_file_lines(lines[:-2], real_md5) == lines:
        pieces = lines[:-2]
        sizes = [line.rpartition(":")[2] for line in pieces]
        if all(size.isdigit() for size in sizes) and sum(map(int, sizes)) == framed:
            return pieces
    scanned = _rescan(storage, job.tid, job.piece_size, framed)
    if scanned is None or scanned[1] != real_md5:
        return None
    storage.write_md5_lines(job.tid, md5_file_lines(scanned[0], real_md5))
    return scanned[0]


def _rescan(storage: SeedStorage, tid: str, piece_size: int, framed: int) -> tuple[list[str], str] | None:
    """Walk the framed file piece by piece (header length, trailer check); None if it is malformed."""
    md5s: list[str] = []
    whole = hashlib.md5()
    with open(storage.data_path(tid), "rb") as handle:
        for offset in range(0, framed, piece_size):
            handle.seek(offset)
            header = handle.read(4)
            if len(header) != 4:
                return None
            data_len = header_data_len(header)
            rest = handle.read(data_len + 1)
            if header != frame_header(data_len, piece_size) or len(rest) != data_len + 1 or rest[-1] != 0x7F:
                return None
            whole.update(memoryview(rest)[:-1])
            md5s.append(f"{hashlib.md5(header + rest).hexdigest()}:{data_len + FRAME_OVERHEAD}")
    return md5s, whole.hexdigest()


# --- download ------------------------------------------------------------------------------------


async def _download(
    job: SeedJob, storage: SeedStorage, sink: SeedSink, client: httpx.AsyncClient, meta: dict[str, Any]
) -> SeedOutcome:
    fd = await asyncio.to_thread(storage.open_for_write, job.tid, True)
    writer = _PieceWriter(fd, job, sink)
    try:
        async with open_source(client, job.raw_url, job.headers) as source:
            if job.http_file_length >= 0 and source.length >= 0 and source.length != job.http_file_length:
                # Fail fast: the file changed between the registration probe and now.
                raise SourceError(
                    "length_changed",
                    f"source length of {job.raw_url} changed from "
                    f"{job.http_file_length} to {source.length} since registration",
                )
            meta["lastModified"], meta["eTag"] = source.last_modified_ms, source.etag
            writer.progress.total = source.length if source.length >= 0 else job.http_file_length
            async for chunk in source.chunks():
                await writer.feed(chunk)
            # Checked before the tail piece goes out: a short or changed body publishes no more pieces.
            _check_length(job, source.length, writer.received)
            await writer.finish()
    finally:
        await writer.aclose()
    real_md5 = writer.real_md5()
    if job.md5 and job.md5.lower() != real_md5:
        raise SourceError("md5_mismatch", f"md5 of {job.raw_url} is {real_md5}, expected {job.md5}")
    received = writer.received
    framed = received + FRAME_OVERHEAD * len(writer.md5s)
    outcome = SeedOutcome(
        success=True, file_length=framed, raw_length=received, real_md5=real_md5, piece_total=len(writer.md5s)
    )
    meta.update(fileLength=framed, realMd5=real_md5, finish=True, success=True)
    # Make sure we still own the task before claiming the files for ourselves.
    if not await sink.heartbeat(job.tid, job.epoch):
        raise _LeaseLost
    await asyncio.to_thread(storage.write_md5_lines, job.tid, md5_file_lines(writer.md5s, real_md5))
    await asyncio.to_thread(storage.write_meta, job.tid, meta)
    writer.progress.log_end()
    await sink.finished(job.tid, job.epoch, outcome)
    return outcome


def _check_length(job: SeedJob, announced: int, received: int) -> None:
    if announced >= 0 and received != announced:
        raise SourceError("truncated", f"source sent {received} of {announced} bytes for {job.raw_url}")
    if job.http_file_length >= 0 and received != job.http_file_length:
        raise SourceError(
            "length_changed",
            f"source sent {received} bytes for {job.raw_url}, {job.http_file_length} were announced at registration",
        )


async def _fail(
    job: SeedJob, storage: SeedStorage, sink: SeedSink, meta: dict[str, Any], reason: str, error: str
) -> SeedOutcome:
    log.warning("seed %s failed (%s): %s", job.tid, reason, error)
    if not await sink.heartbeat(job.tid, job.epoch):
        raise _LeaseLost
    meta.update(finish=True, success=False)
    await asyncio.to_thread(storage.write_meta, job.tid, meta)
    outcome = SeedOutcome(success=False, error=error, reason=reason)
    await sink.finished(job.tid, job.epoch, outcome)
    return outcome


class _Progress:
    """Logs about every 10 % of a known length, or every few seconds."""

    def __init__(self, tid: str) -> None:
        self.tid = tid
        self.total = -1
        self.started = self.last_log = time.monotonic()
        self.next_tenth = 1

    def update(self, seeded: int, pieces: int) -> None:
        now = time.monotonic()
        tenth = seeded * 10 // self.total if self.total > 0 else 0
        if tenth < self.next_tenth and now - self.last_log < _PROGRESS_SECONDS:
            return
        self.next_tenth, self.last_log = tenth + 1, now
        rate = seeded / max(now - self.started, 1e-6) / (1024 * 1024)
        share = f" ({100 * seeded // self.total}%)" if self.total > 0 else ""
        log.info("seed %s: %d/%d bytes%s, %d pieces, %.1f MiB/s", self.tid, seeded, self.total, share, pieces, rate)

    def log_end(self) -> None:
        log.info("seed %s: download done in %.1fs", self.tid, time.monotonic() - self.started)


class _PieceWriter:
    """Cuts the stream into pieces; frames, writes, fsyncs and publishes each one in order.

    All file work (framing, pwrite, fsync, hashing, close) runs on one private thread: the event loop
    keeps serving, hashing order is the file order, and ``close`` is queued behind any write that is
    still running when we are cancelled, so a descriptor is never closed under a writer.
    """

    def __init__(self, fd: int, job: SeedJob, sink: SeedSink) -> None:
        self._fd, self._job, self._sink = fd, job, sink
        self._payload = payload_size(job.piece_size)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"seed-{job.tid[:8]}")
        self._buffers = [bytearray(job.piece_size), bytearray(job.piece_size)]
        self._current = 0
        self._filled = 0
        self._next_piece = 0
        self._pending: asyncio.Task[None] | None = None
        self._whole = hashlib.md5()
        self.received = 0
        self.seeded = 0
        self.md5s: list[str] = []
        self.progress = _Progress(job.tid)

    async def feed(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            take = min(len(view), self._payload - self._filled)
            start = 4 + self._filled
            self._buffers[self._current][start : start + take] = view[:take]
            self._filled += take
            self.received += take
            view = view[take:]
            if self._filled == self._payload:
                await self._emit()

    async def finish(self) -> None:
        """Emit the last (short or, for an empty body, empty) piece and wait until all are published."""
        if self._filled or self._next_piece == 0:
            await self._emit()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending

    def real_md5(self) -> str:
        return self._whole.hexdigest()

    async def aclose(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            await asyncio.gather(self._pending, return_exceptions=True)
        self._io.submit(os.close, self._fd)
        self._io.shutdown(wait=False)

    async def _emit(self) -> None:
        # Wait for the previous piece: keeps publication in order and frees its buffer for reuse.
        if self._pending is not None:
            pending, self._pending = self._pending, None
            await pending
        num, data_len, buffer = self._next_piece, self._filled, self._buffers[self._current]
        self._pending = asyncio.create_task(self._commit(num, buffer, data_len))
        self._next_piece += 1
        self._current ^= 1
        self._filled = 0

    async def _commit(self, num: int, buffer: bytearray, data_len: int) -> None:
        loop = asyncio.get_running_loop()
        md5 = await loop.run_in_executor(self._io, self._write_piece, num, buffer, data_len)
        self.md5s.append(md5)
        self.seeded += data_len
        if not await self._sink.piece_ready(self._job.tid, self._job.epoch, num, md5, self.seeded):
            raise _LeaseLost
        self.progress.update(self.seeded, len(self.md5s))

    def _write_piece(self, num: int, buffer: bytearray, data_len: int) -> str:
        """Frame in place (header + payload already there + 0x7F), write at num*pieceSize, fsync."""
        piece_size = self._job.piece_size
        buffer[0:4] = frame_header(data_len, piece_size)
        buffer[4 + data_len] = 0x7F
        framed = memoryview(buffer)[: data_len + FRAME_OVERHEAD]
        self._whole.update(framed[4 : 4 + data_len])
        offset, written = num * piece_size, 0
        while written < len(framed):
            written += os.pwrite(self._fd, framed[written:], offset + written)
        os.fsync(self._fd)
        # Same value as app.protocol.pieces.piece_md5, without copying the piece.
        return f"{hashlib.md5(framed).hexdigest()}:{len(framed)}"
