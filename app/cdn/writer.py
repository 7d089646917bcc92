"""Cutting the source stream into pieces: frame, write, fsync, journal, publish (PROTOCOL §9.1–9.3).

Memory stays bounded: two piece buffers (one filling from the network while the other is written and
fsync'd), whatever the file size, and one md5 string per piece.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from app.cdn.sink import SeedJob, SeedSink
from app.protocol.pieces import FRAME_OVERHEAD, frame_header, payload_size

log = logging.getLogger("app.cdn.seeder")

_PROGRESS_SECONDS = 5.0


class LeaseLost(Exception):
    """Another seeder owns the task now: stop without touching shared state."""


class Progress:
    """Logs about every 10 % of a known length, or every few seconds."""

    def __init__(self, tid: str, base: int = 0) -> None:
        self.tid = tid
        self.total = -1
        self.base = base  # bytes already on disk when this run started (a resume)
        self.started = self.last_log = time.monotonic()
        self.next_tenth = 1

    def update(self, seeded: int, pieces: int) -> None:
        now = time.monotonic()
        tenth = seeded * 10 // self.total if self.total > 0 else 0
        if tenth < self.next_tenth and now - self.last_log < _PROGRESS_SECONDS:
            return
        self.next_tenth, self.last_log = tenth + 1, now
        rate = (seeded - self.base) / max(now - self.started, 1e-6) / (1024 * 1024)
        share = f" ({100 * seeded // self.total}%)" if self.total > 0 else ""
        log.info("seed %s: %d/%d bytes%s, %d pieces, %.1f MiB/s", self.tid, seeded, self.total, share, pieces, rate)

    def log_end(self) -> None:
        log.info("seed %s: download done in %.1fs", self.tid, time.monotonic() - self.started)


class PieceWriter:
    """Writes pieces in order; fsyncs and publishes them behind the writes.

    Each piece is framed in its buffer, written at ``num * pieceSize``, hashed, and named in the journal
    (not fsync'd: a resume re-checks every journaled piece's md5 on disk, so a line whose bytes never
    reached the disk only costs that piece). Its buffer is then free again, so the source keeps being
    read while the fsync runs: what a killed seeder received but left unjournaled, and a resume must
    fetch again, stays about one piece. Pieces are published only after an fsync that followed their
    write, so every piece a client can be sent survives a crash; a resume publishes its verified
    pieces after one more fsync for the same reason.

    Writes and hashing run on one private thread, in file order; fsyncs on another. The descriptors
    are closed on the fsync thread after both are idle, so none is ever closed under a writer.
    """

    def __init__(
        self, fd: int, journal_fd: int, job: SeedJob, sink: SeedSink, *, md5s: list[str] | None = None,
        offset: int = 0, whole: Any = None,
    ) -> None:
        """``md5s``/``offset``/``whole``: the verified pieces a resumed seed starts from."""
        self._fd, self._journal_fd, self._job, self._sink = fd, journal_fd, job, sink
        self._payload = payload_size(job.piece_size)
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"seed-{job.tid[:8]}")
        self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sync-{job.tid[:8]}")
        self._buffers = [bytearray(job.piece_size), bytearray(job.piece_size)]
        self._current = 0
        self._filled = 0
        self._writing: asyncio.Task[None] | None = None  # the piece being written (its buffer is busy)
        self._publisher: asyncio.Task[None] | None = None  # fsync + publish, behind the writes
        self._whole = whole if whole is not None else hashlib.md5()
        self.md5s: list[str] = list(md5s or [])  # written and journaled pieces, in order from piece 0
        self._next_piece = len(self.md5s)
        self.received = offset  # source bytes so far, counted from byte 0
        self._written = offset  # source bytes in written pieces
        self.durable = 0  # leading pieces fsync'd (a resume fsyncs its verified pieces once more)
        self.seeded = 0  # source bytes in durable pieces
        self.published = 0  # leading pieces the state has been told about
        self.progress = Progress(job.tid, offset)

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
        """Emit the last (short or, for an empty body, empty) piece; return once all are published."""
        if self._filled or self._next_piece == 0:
            await self._emit()
        await self.settle()
        # The file may be longer than this seed's: an earlier, bigger copy rewritten in place.
        framed = self._written + FRAME_OVERHEAD * len(self.md5s)
        await asyncio.get_running_loop().run_in_executor(self._io, os.ftruncate, self._fd, framed)
        await self.flush()

    async def settle(self) -> None:
        """Wait until the piece being written is on disk and journaled."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            await writing

    async def flush(self) -> None:
        """Wait until every written piece is fsync'd and published (raises LeaseLost)."""
        self._wake_publisher()
        while self._publisher is not None and not self._publisher.done():
            await self._publisher
            self._wake_publisher()  # pieces written while it was finishing
        self._raise_publisher_error()

    def real_md5(self) -> str:
        return str(self._whole.hexdigest())

    async def publish(self) -> None:
        """Tell the state about every durable piece it has not heard of, in one call.

        When its answer shows that pieces published earlier are gone (a Redis failover lost writes
        the old master had acknowledged), all of them are published again: clients are then offered
        them again instead of waiting for pieces nobody will announce.
        """
        while self.published < self.durable:
            first, batch = self.published, self.md5s[self.published : self.durable]
            listed = await self._sink.pieces_ready(self._job.tid, self._job.epoch, first, batch, self.seeded)
            if listed is None:
                raise LeaseLost
            self.published = first + len(batch)
            if listed < self.published:
                log.warning(
                    "seed %s: the state lists %d of the %d pieces published (writes lost in a Redis failover);"
                    " publishing them all again", self._job.tid, listed, self.published,
                )
                self.published = 0

    async def republish(self) -> None:
        self.published = 0
        await self.publish()

    async def aclose(self) -> None:
        for task in (self._writing, self._publisher):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in (self._writing, self._publisher) if t is not None), return_exceptions=True)
        # Queued behind a write still running on the io thread, then behind an fsync on the other.
        self._io.submit(self._syncer.submit, self._close_files)
        self._io.shutdown(wait=False)

    def _close_files(self) -> None:
        os.close(self._fd)
        os.close(self._journal_fd)
        self._syncer.shutdown(wait=False)

    async def _emit(self) -> None:
        # Wait for the previous write: keeps the file order and frees its buffer for reuse.
        await self.settle()
        self._raise_publisher_error()
        num, data_len, buffer = self._next_piece, self._filled, self._buffers[self._current]
        self._writing = asyncio.create_task(self._write(num, buffer, data_len))
        self._next_piece += 1
        self._current ^= 1
        self._filled = 0

    async def _write(self, num: int, buffer: bytearray, data_len: int) -> None:
        loop = asyncio.get_running_loop()
        md5 = await loop.run_in_executor(self._io, self._write_piece, num, buffer, data_len)
        self.md5s.append(md5)
        self._written += data_len
        self._wake_publisher()

    def _wake_publisher(self) -> None:
        idle = self._publisher is None or (
            self._publisher.done() and not self._publisher.cancelled() and self._publisher.exception() is None
        )
        if idle and (self.durable < len(self.md5s) or self.published < self.durable):
            self._publisher = asyncio.create_task(self._publish_written())

    def _raise_publisher_error(self) -> None:
        if self._publisher is not None and self._publisher.done() and not self._publisher.cancelled():
            failure = self._publisher.exception()
            if failure is not None:
                raise failure

    async def _publish_written(self) -> None:
        loop = asyncio.get_running_loop()
        while self.durable < len(self.md5s) or self.published < self.durable:
            if self.durable < len(self.md5s):
                pieces, written = len(self.md5s), self._written
                # One fsync covers every piece written before it started.
                await loop.run_in_executor(self._syncer, os.fsync, self._fd)
                self.durable, self.seeded = pieces, written
            await self.publish()
            self.progress.update(self.seeded, self.durable)

    def _write_piece(self, num: int, buffer: bytearray, data_len: int) -> str:
        """Frame in place (header + payload already there + 0x7F), write at num*pieceSize, journal."""
        piece_size = self._job.piece_size
        buffer[0:4] = frame_header(data_len, piece_size)
        buffer[4 + data_len] = 0x7F
        framed = memoryview(buffer)[: data_len + FRAME_OVERHEAD]
        self._whole.update(framed[4 : 4 + data_len])
        offset, written = num * piece_size, 0
        while written < len(framed):
            written += os.pwrite(self._fd, framed[written:], offset + written)
        # Same value as app.protocol.pieces.piece_md5, without copying the piece.
        md5 = f"{hashlib.md5(framed).hexdigest()}:{len(framed)}"
        os.write(self._journal_fd, f"{md5}\n".encode())
        return md5
