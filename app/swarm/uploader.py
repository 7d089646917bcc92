"""dfget's peer server ("uploader", PROTOCOL §10) on aiohttp, bound to one loopback IP.

It serves the RAW data file that the in-process downloader writes and re-frames each piece on the fly,
bit-exact with ``peer_server.go`` of dfget 0.4.x/1.0.x, so a supernode under test sees real peers.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx
from aiohttp import web

from app.protocol.pieces import FRAME_OVERHEAD, TRAILER, frame_header
from app.swarm.api import ExchangeLog, SupernodeApi, tls_context
from app.swarm.ratelimit import READ_CHUNK, TokenBucket
from app.swarm.site import serve
from app.swarm.wire import service_down_query

OCTET_STREAM = "application/octet-stream"
_LIMITED_CHUNK = 4 * READ_CHUNK  # at most this many bytes are sent between two payments to an upload limit
RANGE_NOT_SATISFIABLE = "range not satisfiable"
_GO_INT = re.compile(r"[+-]?[0-9]+")


@dataclass
class UploadTask:
    """What the Go server keeps per taskFileName (``taskConfig``)."""

    data_dir: Path
    path: Path | None = None  # explicit file from add_task(); else <data_dir>/<name>.service
    task_id: str = ""
    cid: str = ""
    super_node: str = ""
    finished: bool = False
    rate_limit: int = 0

    def service_file(self, name: str) -> Path:
        return self.path if self.path is not None else self.data_dir / f"{name}.service"


@dataclass(frozen=True)
class UploadParams:
    start: int
    length: int
    piece_num: int
    piece_size: int


def _go_parse_int(text: str) -> int:
    # strconv.ParseInt(s, 10, 64): optional sign, digits only; error text as Go prints it.
    if not _GO_INT.fullmatch(text):
        raise ValueError(f'strconv.ParseInt: parsing "{text}": invalid syntax')
    return int(text)


def parse_upload_params(range_value: str, piece_num: str, piece_size: str) -> UploadParams:
    """``parseParams``: any failure is a 400 with the error text (§10.3 step 1)."""
    num = _go_parse_int(piece_num)
    size = _go_parse_int(piece_size)
    if range_value.count("=") != 1:
        raise ValueError(f"invalid range: {range_value}")
    range_text = range_value.split("=")[1]
    if range_text.count("-") != 1:
        raise ValueError(f"invalid range: {range_text}")
    start_text, end_text = range_text.split("-")
    start = _go_parse_int(start_text)
    end = _go_parse_int(end_text)
    if end <= start:
        raise ValueError(f"invalid range: {range_text}")
    return UploadParams(start=start, length=end - start + 1, piece_num=num, piece_size=size)


def amend_range(params: UploadParams, file_size: int) -> tuple[int, int] | None:
    """``amendRange`` with framing: (raw offset, framed length), or None for 416 (§10.3 steps 3-4)."""
    offset = params.start - params.piece_num * FRAME_OVERHEAD
    length = params.length
    if length < FRAME_OVERHEAD or offset < 0:
        return None
    if offset + length - FRAME_OVERHEAD > file_size:
        length = file_size - offset + FRAME_OVERHEAD
        if file_size == 0:
            length = FRAME_OVERHEAD
    # Past EOF the Go server writes a garbage header with a bogus Content-Length; call it 416 instead.
    if length < FRAME_OVERHEAD:
        return None
    return offset, length


@dataclass
class _Served:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


@dataclass
class _Slice:
    """A piece ready to send: ``length`` raw bytes of ``file`` from ``offset``, framed on the way out."""

    file: BinaryIO
    offset: int
    length: int


def _open_piece(path: Path, params: UploadParams) -> _Served | _Slice:
    """Blocking part of a piece upload (run in a thread): open, stat, amend; or the error answer."""
    try:
        handle = open(path, "rb")  # closed by the caller once the piece is sent
    except PermissionError as exc:
        return _Served(403, f"open {path}: {exc.strerror.lower() if exc.strerror else 'denied'}\n".encode())
    except FileNotFoundError:
        return _Served(404, f"stat {path}: no such file or directory\n".encode())
    except OSError as exc:
        return _Served(500, f"{exc}\n".encode())
    amended = amend_range(params, os.fstat(handle.fileno()).st_size)
    if amended is None:
        handle.close()
        return _Served(416, f"{RANGE_NOT_SATISFIABLE}\n".encode())
    offset, length = amended
    return _Slice(handle, offset, length - FRAME_OVERHEAD)


@dataclass
class UploaderStats:
    pieces_served: int = 0
    bytes_served: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    first_byte_at: float = 0.0  # time.monotonic() of the first piece body, and the end of the last one:
    last_byte_at: float = 0.0  # bytes_served over that span is the upload rate as seen at this end


class Uploader:
    """One dfget peer server. ``await Uploader().start()``; ``await stop()`` notifies the supernode."""

    def __init__(
        self,
        ip: str = "127.0.0.1",
        *,
        data_dir: Path | None = None,
        version: str = "0.4.1",
        supernode: str | None = None,
        port: int = 0,
        http: httpx.AsyncClient | None = None,
        rate_limit: int | None = None,
    ) -> None:
        self.ip = ip
        # Upload bandwidth of this host (bytes/s over every piece it serves): the seed's testbed link.
        self.bucket = TokenBucket(rate_limit, rate_limit / 4, start_full=False) if rate_limit else None
        self.version = version
        # Fallback for service/down of tasks whose /client/finish carried no superNode.
        self.supernode = supernode
        self._requested_port = port
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix="dfget-uploader-")
            data_dir = Path(self._own_tmp.name)
        self.data_dir = data_dir
        self.tasks: dict[str, UploadTask] = {}
        self.stats = UploaderStats()
        self.total_limit = 0
        self.log = ExchangeLog()  # service/down exchanges with the supernode
        self._http = http
        self._own_http = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.running = False

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> Uploader:
        app = web.Application()
        app.router.add_get("/peer/file/{name:.*}", self._upload, allow_head=False)
        app.router.add_get("/rate/{name:.*}", self._rate, allow_head=False)
        app.router.add_get("/check/{name:.*}", self._check, allow_head=False)
        app.router.add_get("/client/finish", self._finish, allow_head=False)
        app.router.add_get("/server/ping", self._ping, allow_head=False)
        self._runner, self.port = await serve(app, self.ip, self._requested_port, shutdown_timeout=1.0)
        if self._http is None:
            self._http = httpx.AsyncClient(verify=tls_context())
            self._own_http = True
        self.running = True
        return self

    async def stop(self, *, notify: bool = True, delete_files: bool = False, supernode: str | None = None) -> None:
        """Shut down like the real server: service/down per task, optional file removal, close."""
        if not self.running:
            return
        self.running = False
        if notify and self._http is not None:
            api = SupernodeApi(self._http, self.log)
            calls = []
            for task in self.tasks.values():
                node = supernode or task.super_node or self.supernode
                if node and task.task_id and task.cid:
                    calls.append(api.get(node, service_down_query(task_id=task.task_id, cid=task.cid)))
            await asyncio.gather(*calls)
        if delete_files:
            for name, task in self.tasks.items():
                task.service_file(name).unlink(missing_ok=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
        if self._own_tmp is not None and delete_files:
            self._own_tmp.cleanup()
            self._own_tmp = None

    async def crash(self) -> None:
        """The peer vanishes: no service/down, files left behind, connections dropped."""
        await self.stop(notify=False)

    async def __aenter__(self) -> Uploader:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- in-process registration -----------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    def add_task(self, task_file_name: str, path: Path) -> None:
        """What ``/check/`` does for a real dfget, with an explicit raw data file path."""
        task = self.tasks.get(task_file_name)
        if task is None:
            self.tasks[task_file_name] = UploadTask(data_dir=path.parent, path=path)
        else:
            task.path = path

    def finish_task(self, task_file_name: str, task_id: str, cid: str, super_node: str) -> None:
        """What ``/client/finish`` records; unknown names are created (as in the Go server)."""
        task = self.tasks.setdefault(task_file_name, UploadTask(data_dir=self.data_dir))
        task.task_id, task.cid, task.super_node = task_id, cid, super_node
        task.finished, task.rate_limit = True, 0

    def remove_task_file(self, task_file_name: str) -> None:
        """Emulate the expiry GC deleting the data file: later piece requests get 404."""
        task = self.tasks.get(task_file_name)
        if task is not None:
            task.service_file(task_file_name).unlink(missing_ok=True)

    # -- handlers --------------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        headers = request.headers  # case-insensitive, like Go's Header.Get
        try:
            params = parse_upload_params(
                headers.get("Range", ""), headers.get("pieceNum", ""), headers.get("pieceSize", "")
            )
        except ValueError as exc:
            return self._count(_Served(400, f"{exc}\n".encode()))
        task = self.tasks.get(name)
        if task is None:
            return self._count(_Served(500, f"failed to get taskPath: {name}\n".encode()))
        opened = await asyncio.to_thread(_open_piece, task.service_file(name), params)
        if isinstance(opened, _Served):
            return self._count(opened)
        started = time.monotonic()
        try:
            response = await self._send_framed(request, opened, params.piece_size)
        finally:
            opened.file.close()
        if not self.stats.first_byte_at:
            self.stats.first_byte_at = started
        self.stats.last_byte_at = time.monotonic()
        self.stats.pieces_served += 1
        self.stats.bytes_served += opened.length + FRAME_OVERHEAD
        self.stats.statuses[206] += 1
        return response

    async def _send_framed(self, request: web.Request, piece: _Slice, piece_size: int) -> web.StreamResponse:
        """Header ``(length-5) | (P << 4)`` from the *request's* pieceSize, payload, 0x7F: the bytes of
        peer_server.go, with the payload sent by sendfile(2) so that a swarm of emulated peers does not
        copy every byte through Python (as aiohttp's FileResponse does); in chunks paid to the upload
        bucket when this peer has an upload limit."""
        response = web.StreamResponse(status=206, headers={"Content-Type": OCTET_STREAM})
        response.content_length = piece.length + FRAME_OVERHEAD
        await response.prepare(request)
        await response.write(frame_header(piece.length, piece_size))
        if piece.length:  # count=0 would mean "to the end of the file"
            transport = request.transport
            if transport is None:
                raise ConnectionResetError("the client went away")
            loop = asyncio.get_running_loop()
            if self.bucket is None:
                # asyncio flushes what is buffered on the transport before it hands the file to the kernel.
                await loop.sendfile(transport, piece.file, piece.offset, piece.length)
            else:
                # Paid chunk by chunk, still by sendfile: a swarm of rate-limited peers must not spend the
                # emulating host's CPU copying bytes through Python.
                # A chunk over half the burst would lose the refill of any late wake-up (tokens are capped
                # at the burst), and the uploads would run under their rate.
                end, step = piece.offset + piece.length, max(min(_LIMITED_CHUNK, int(self.bucket.burst // 2)), 4096)
                for offset in range(piece.offset, end, step):
                    size = min(step, end - offset)
                    await self.bucket.take(size)
                    if transport.is_closing():
                        return response  # the downloader left (churn, a killed dfget): nothing to tell it
                    await loop.sendfile(transport, piece.file, offset, size)
        await response.write(TRAILER)
        await response.write_eof()
        return response

    def _count(self, served: _Served) -> web.Response:
        self.stats.statuses[served.status] += 1
        response = web.Response(status=served.status, body=served.body)
        response.headers["Content-Type"] = served.content_type
        if served.status >= 400:
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    async def _rate(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw = request.headers.get("rateLimit", "")
        try:
            rate = _go_parse_int(raw)
        except ValueError:
            return _text(400, f'strconv.Atoi: parsing "{raw}": invalid syntax')
        task = self.tasks.get(name)
        if task is not None:
            task.rate_limit = rate
        if self.total_limit <= 0:
            return _text(200, raw, OCTET_STREAM)  # echoed verbatim, as Go does
        return _text(200, str(self._share(rate)), OCTET_STREAM)

    def _share(self, rate: int) -> int:
        total = sum(t.rate_limit for t in self.tasks.values() if not t.finished)
        if total > self.total_limit:
            return (rate * self.total_limit + total - 1) // total
        return rate

    async def _check(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        raw_limit = request.headers.get("totalLimit", "")
        if _GO_INT.fullmatch(raw_limit) and int(raw_limit) > 0:
            self.total_limit = int(raw_limit)
        data_dir = request.headers.get("dataDir", "")
        existing = self.tasks.get(name)
        if existing is not None and existing.path is not None:
            existing.data_dir = Path(data_dir) if data_dir else existing.data_dir
        else:
            self.tasks[name] = UploadTask(data_dir=Path(data_dir) if data_dir else self.data_dir)
        return _text(200, f"{name}@{self.version}", OCTET_STREAM)

    async def _finish(self, request: web.Request) -> web.Response:
        query = request.query
        name, task_id, cid = query.get("taskFileName", ""), query.get("taskID", ""), query.get("cid", "")
        if not name or not task_id or not cid:
            return _text(400, "invalid params", OCTET_STREAM)
        self.finish_task(name, task_id, cid, query.get("superNode", ""))
        return _text(200, "success", OCTET_STREAM)

    async def _ping(self, request: web.Request) -> web.Response:
        return _text(200, "success", OCTET_STREAM)


def _text(status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> web.Response:
    response = web.Response(status=status, body=body.encode())
    response.headers["Content-Type"] = content_type
    return response
