"""Piece download server on port 8001: what nginx did for the Go supernode (PROTOCOL §9.2, §9.5).

Serves ``GET|HEAD /download/{tid[:3]}/{tid}`` from the seed storage with nginx-compatible single
ranges (see ``ranges``), zero-copy via ``loop.sendfile`` (``os.sendfile`` on the stdlib asyncio loop).
aiohttp's ``FileResponse`` is not used: it answers 416 to Range values nginx ignores (``items=0-1``,
multi-range), serves ``.gz`` siblings on ``Accept-Encoding`` and hops to a thread twice per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import Callable
from typing import IO, Any, Final

from aiohttp import hdrs, web
from aiohttp.log import access_logger

from app.cdn.storage import SeedStorage
from app.download import metrics
from app.download.guard import GuardedSite, PieceBounds
from app.download.ranges import Partial, Unsatisfiable, decide, etag_for, if_range_allows
from app.limits.throttle import RateSource, UploadThrottle, copy_throttled

STORAGE_KEY: Final = web.AppKey("seed_storage", SeedStorage)
DrainingCheck = Callable[[], bool]
DRAINING_KEY: Final = web.AppKey[DrainingCheck]("draining")
THROTTLE_KEY: Final = web.AppKey("upload_throttle", UploadThrottle)  # live limit seedUploadKiBps (app.limits)
OCTET_STREAM: Final = "application/octet-stream"
_HEX: Final = frozenset("0123456789abcdef")
# Honoured like aiohttp's FileResponse does, so an operator can rule sendfile out when debugging.
_NOSENDFILE: Final = bool(os.environ.get("AIOHTTP_NOSENDFILE"))
_FALLBACK_CHUNK: Final = 256 * 1024
_log = logging.getLogger(__name__)


def _never() -> bool:
    return False


def create_download_app(
    storage: SeedStorage, draining: Callable[[], bool] = _never, upload_rate: RateSource | None = None
) -> web.Application:
    app = web.Application()
    app[STORAGE_KEY] = storage
    app[DRAINING_KEY] = draining
    if upload_rate is not None:
        app[THROTTLE_KEY] = UploadThrottle(upload_rate)
    app.router.add_get("/download/{prefix}/{tid}", _download)  # also answers HEAD
    app.router.add_get("/_ping", _ping)
    app.router.add_get("/readyz", _readyz)
    if metrics.available():
        app.router.add_get("/metrics", _metrics)
    return app


# nginx's Linux listen backlog, for callers that name none (the replica passes app.core.backlog's).
DOWNLOAD_BACKLOG = 511


async def start_download_server(
    storage: SeedStorage,
    host: str,
    port: int,
    *,
    access_log: bool = False,
    draining: Callable[[], bool] = _never,
    shutdown_timeout: float = 60.0,
    bounds: PieceBounds | None = None,
    upload_rate: RateSource | None = None,
    sock: socket.socket | None = None,
    backlog: int = DOWNLOAD_BACKLOG,
) -> web.AppRunner:
    """Listen on ``host:port`` (0 = any free port, see ``bound_port``), or on the listening ``sock``
    (shared by a replica's workers), until ``stop_download_server``.

    ``stop_download_server`` closes the listener first, then lets uploads in flight finish for up to
    ``shutdown_timeout`` seconds (a dfget 1.0.x piece may take pieceSize/64 KiB + 10 s).
    """
    bounds = bounds or PieceBounds()
    # Off by default: formatting a log line costs more CPU than the sendfile of a piece.
    runner = web.AppRunner(
        create_download_app(storage, draining, upload_rate), handle_signals=False,
        access_log=access_logger if access_log else None, shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    handler_args: dict[str, Any] = {
        "access_log": access_logger if access_log else None,
        "keepalive_timeout": bounds.keepalive_timeout,
        "max_headers": bounds.max_headers,
        # nginx's 8 KiB header line; the whole request head is bounded by max_header_bytes.
        "max_line_size": min(8190, bounds.max_header_bytes),
        "max_field_size": min(8190, bounds.max_header_bytes),
    }
    await GuardedSite(
        runner, host, port, backlog=backlog, bounds=bounds, handler_args=handler_args, sock=sock
    ).start()
    return runner


async def stop_download_server(runner: web.AppRunner) -> None:
    await runner.cleanup()


def bound_port(runner: web.AppRunner) -> int:
    port: int = runner.addresses[0][1]
    return port


def is_task_path(prefix: str, tid: str) -> bool:
    return len(tid) == 64 and _HEX.issuperset(tid) and prefix == tid[:3]


async def _ping(_request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def _readyz(request: web.Request) -> web.Response:
    """Pieces come from the shared disk, not from Redis: only a drain makes this port not ready."""
    if request.app[DRAINING_KEY]():
        return web.json_response({"ready": False, "reasons": ["draining"]}, status=503)
    return web.json_response({"ready": True})


async def _metrics(_request: web.Request) -> web.Response:
    body, content_type = metrics.exposition()
    response = web.Response(body=body)
    response.headers[hdrs.CONTENT_TYPE] = content_type
    return response


def _plain(status: int, text: str) -> web.Response:
    metrics.record(status, 0)
    return web.Response(status=status, text=text)


async def _download(request: web.Request) -> web.StreamResponse:
    prefix, tid = request.match_info["prefix"], request.match_info["tid"]
    if not is_task_path(prefix, tid):
        return _plain(404, "404: Not Found")
    # open()/fstat() stay on the loop like in nginx: on a local or cached volume they are cheaper
    # than a thread hop, and an NFS stall would block sendfile() just the same.
    # A symlink (the file or its prefix directory) is refused by the open itself: a file whose real
    # path lies outside the seed directory is never served (issue 7).
    try:
        fileobj = open(request.app[STORAGE_KEY].open_for_read(tid), "rb", buffering=0)  # noqa: ASYNC230
    except PermissionError:
        return _plain(403, "403: Forbidden")
    except OSError:  # missing, a symlink (ELOOP), a directory, a name too long for the filesystem...
        return _plain(404, "404: Not Found")
    with fileobj:
        return await _respond(request, fileobj)


async def _respond(request: web.Request, fileobj: IO[bytes]) -> web.StreamResponse:
    # Size comes from the open file, not the path: the seeder may still be appending pieces, and a
    # published piece is always below the size seen here.
    st = os.fstat(fileobj.fileno())
    if not stat.S_ISREG(st.st_mode):
        return _plain(404, "404: Not Found")
    size = st.st_size
    etag = etag_for(st.st_mtime, size)
    range_header = request.headers.get(hdrs.RANGE)
    if_range = request.headers.get(hdrs.IF_RANGE)
    if range_header is not None and if_range is not None and not if_range_allows(if_range, etag, st.st_mtime):
        range_header = None
    decision = decide(range_header, size)
    if isinstance(decision, Unsatisfiable):
        refusal = _plain(416, "416: Range Not Satisfiable")
        refusal.headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
        return refusal

    if isinstance(decision, Partial):
        offset, count, status = decision.start, decision.stop - decision.start, 206
    else:
        offset, count, status = 0, size, 200
    response = web.StreamResponse(status=status)
    headers = response.headers
    headers[hdrs.CONTENT_TYPE] = OCTET_STREAM
    headers[hdrs.ACCEPT_RANGES] = "bytes"
    headers[hdrs.ETAG] = etag
    if status == 206:
        headers[hdrs.CONTENT_RANGE] = f"bytes {offset}-{offset + count - 1}/{size}"
    response.last_modified = int(st.st_mtime)  # aiohttp rounds a float up, nginx truncates
    response.content_length = count
    try:
        await response.prepare(request)
    except ConnectionError:
        return response  # gone before the headers; aiohttp's write_eof() then drops it quietly
    sent = 0
    if count and request.method != hdrs.METH_HEAD:
        sent = await _send_body(request, response, fileobj, offset, count)
    metrics.record(response.status, sent)
    if sent < count and request.method != hdrs.METH_HEAD:
        # Client gone, or the file shrank under us (task deleted or re-seeded). Content-Length is
        # already promised, so only a closed connection tells the client that the body is short.
        response.force_close()
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def _send_body(
    request: web.Request, response: web.StreamResponse, fileobj: IO[bytes], offset: int, count: int
) -> int:
    """Bytes sent; fewer than ``count`` means the connection must be dropped."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return 0
    loop = asyncio.get_running_loop()
    throttle = request.app.get(THROTTLE_KEY)
    try:
        rate = await throttle.rate() if throttle is not None else 0
        if throttle is not None and rate > 0:
            return await copy_throttled(response.write, fileobj.fileno(), offset, count, throttle, rate)
        if not _NOSENDFILE:
            try:
                # prepare() has flushed the headers; asyncio waits for the write buffer to drain,
                # then loops os.sendfile() on the non-blocking socket.
                return await loop.sendfile(transport, fileobj, offset, count)
            except NotImplementedError:
                pass  # uvloop has no loop.sendfile()
        return await _copy_chunks(response, fileobj, offset, count)
    except OSError as exc:
        # A dfget that timed out or was killed is routine, not an error worth a traceback.
        _log.debug("piece transfer aborted: %r", exc)
        return 0


async def _copy_chunks(response: web.StreamResponse, fileobj: IO[bytes], offset: int, count: int) -> int:
    loop = asyncio.get_running_loop()
    fd = fileobj.fileno()
    sent = 0
    while sent < count:
        size = min(_FALLBACK_CHUNK, count - sent)
        chunk = await loop.run_in_executor(None, os.pread, fd, size, offset + sent)
        if not chunk:
            break
        await response.write(chunk)
        sent += len(chunk)
    return sent
