"""A local origin ("source") server for tests, with request counters.

Serves named byte blobs at ``/<name>`` with Content-Length, Last-Modified and ETag; honours
If-None-Match / If-Modified-Since (304), single ``Range`` requests (206/416) and If-Range. Per blob it
can simulate a fixed status (404, 500, ...), 401 unless ``Authorization`` matches, no Content-Length
(chunked), a truncated body, a length change after the first GET (``then``), a slow start
(``delay``), a slow steady body (``pace`` between chunks, or a ``rate`` in bytes/s), a redirect, a
pre-encoded body (``content_encoding``), a new ETag for the same bytes (``etag_suffix``), and ranges
served from the wrong offset (``range_skew``).

Counters per path (:class:`PathStats`): ``requests`` (anything), ``gets``, ``full_gets`` (GETs whose
*whole* 200 body was written: a probe that hangs up after the headers does not count), ``range_gets``,
``not_modified``, ``aborted``, ``bytes_sent`` (body bytes handed to the connection, over every
request, aborted ones included), ``bodies`` ((status, bytes sent) of each body, in the order they
ended), ``done_at`` (monotonic time the last full body was written) and
the request headers seen. A short pause between the headers and
the body (``grace``) lets a client that closes after the headers be told apart from one that reads.

In-process::

    async with SourceServer() as src:
        src.add("f.bin", data)                 # Blob options as keywords, e.g. status=404
        url = src.url("f.bin")
        src.stats("f.bin").full_gets

As a subprocess (next to other server processes)::

    python -m tests.sources --port 0 --file f.bin=/tmp/f.bin   # prints "READY http://127.0.0.1:PORT"

    with SourceProcess({"f.bin": path_or_bytes}) as src:   # same idea, from a synchronous test
        src.url("f.bin"); src.stats("f.bin")["full_gets"]; src.put("g.bin", b"...", status=500)

Control endpoints (also usable with curl): ``GET /_stats``, ``POST /_reset``,
``PUT /_blobs/<name>?opt=value`` (raw body = content; with ``as_then=1`` it becomes the blob's
``then`` content instead), ``POST /_blobs/<name>`` (JSON options only).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from app.swarm.site import serve
from app.swarm.source import single_range
from tests import probe

_CHUNK = 256 * 1024
_CONTROL = "/_"


@dataclass
class Blob:
    data: bytes
    mtime: float = field(default_factory=lambda: float(int(time.time()) - 3600))
    status: int = 200  # anything else is answered as is, with a short text body
    auth: str | None = None  # required Authorization value; 401 otherwise
    chunked: bool = False  # no Content-Length
    truncate: bool = False  # announce the full length, close after half of the body
    then: bytes | None = None  # served, with new validators, from the second GET on (length change)
    delay: float = 0.0  # seconds before the response headers (slow source)
    redirect: str | None = None  # 302 to this URL or path
    validators: bool = True  # send Last-Modified and ETag (and honour conditional requests)
    ranges: bool = True  # honour Range
    content_encoding: str | None = None  # sent as Content-Encoding; ``data`` must already be encoded
    pace: float = 0.0  # seconds between 256 KiB body chunks (a slow, steady source)
    rate: float = 0.0  # body bytes per second of each response (0: as fast as the client reads)
    etag_suffix: str = ""  # appended inside the ETag: the same bytes under a new validator
    range_skew: int = 0  # a broken origin: a range is served (and announced) this many bytes late
    served: int = 0  # GETs that reached the content; drives ``then``
    _etags: list[tuple[bytes, str]] = field(default_factory=list, repr=False)

    def etag(self, data: bytes) -> str:
        # Hashing a big blob on every request would make the origin slow to answer; remember it.
        for known, tag in self._etags:
            if known is data:
                return tag[:-1] + self.etag_suffix + '"'
        self._etags = [*self._etags[-1:], (data, etag_of(data))]
        return self._etags[-1][1][:-1] + self.etag_suffix + '"'

    def current(self) -> tuple[bytes, float]:
        if self.then is not None and self.served > 1:
            return self.then, self.mtime + 60
        return self.data, self.mtime


@dataclass
class PathStats:
    requests: int = 0
    gets: int = 0
    full_gets: int = 0
    range_gets: int = 0
    not_modified: int = 0
    aborted: int = 0
    bytes_sent: int = 0
    bodies: list[tuple[int, int]] = field(default_factory=list)
    done_at: float = 0.0  # time.monotonic() when the last body was completely written
    headers: list[dict[str, str]] = field(default_factory=list)


def etag_of(data: bytes) -> str:
    return '"' + hashlib.md5(data).hexdigest()[:16] + '"'


def closed_port() -> int:
    """A loopback port nobody listens on (for "connection refused"); never handed out again as free."""
    from tests.cluster import free_port

    return free_port()


def _not_modified(request: web.Request, etag: str, mtime: float) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags
    since = request.headers.get("If-Modified-Since")
    if since:
        try:
            return int(mtime) <= parsedate_to_datetime(since).timestamp()
        except (TypeError, ValueError):
            return False
    return False


class SourceServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, grace: float = 0.05) -> None:
        self.host, self.port, self.grace = host, port, grace
        self.blobs: dict[str, Blob] = {}
        self._stats: dict[str, PathStats] = {}
        self._runner: web.AppRunner | None = None

    # --- setup and inspection ----------------------------------------------------------------

    def add(self, name: str, data: bytes, **options: Any) -> Blob:
        self.blobs[name] = blob = Blob(data, **options)
        return blob

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stats(self, name: str) -> PathStats:
        return self._stats.setdefault("/" + name, PathStats())

    def reset(self) -> None:
        self._stats.clear()
        for blob in self.blobs.values():
            blob.served = 0

    async def __aenter__(self) -> SourceServer:
        app = web.Application(client_max_size=1 << 31)
        app.router.add_get("/_stats", self._get_stats)
        app.router.add_post("/_reset", self._post_reset)
        app.router.add_put("/_blobs/{name:.+}", self._put_blob)
        app.router.add_post("/_blobs/{name:.+}", self._post_blob)
        app.router.add_route("*", "/{name:.*}", self._serve)
        # Do not wait for slow-start handlers at shutdown; tests end with requests still parked.
        self._runner, self.port = await serve(app, self.host, self.port, shutdown_timeout=0.1)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- serving -------------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        stats = self._stats.setdefault(request.path, PathStats())
        stats.requests += 1
        stats.headers.append(dict(request.headers))
        blob = self.blobs.get(request.match_info["name"])
        if blob is None:
            return web.Response(status=404, text="no such blob\n")
        if blob.delay:
            await asyncio.sleep(blob.delay)
        if blob.status != 200:
            return web.Response(status=blob.status, text=f"simulated {blob.status}\n")
        if blob.auth is not None and request.headers.get("Authorization") != blob.auth:
            return web.Response(status=401, text="unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="t"'})
        if blob.redirect:
            return web.Response(status=302, headers={"Location": blob.redirect})
        if request.method == "GET":
            stats.gets += 1
            blob.served += 1
        data, mtime = blob.current()
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes" if blob.ranges else "none"}
        if blob.content_encoding:
            headers["Content-Encoding"] = blob.content_encoding
        etag = blob.etag(data)
        if blob.validators:
            headers.update({"ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True)})
            if _not_modified(request, etag, mtime):
                stats.not_modified += 1
                return web.Response(status=304, headers=headers)
        status, body = 200, memoryview(data)
        wanted = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if wanted and blob.ranges and (if_range is None or if_range in (etag, headers.get("Last-Modified"))):
            parsed = single_range(wanted, len(data))
            if parsed == "416":
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
            if isinstance(parsed, tuple):
                first = min(parsed[0] + blob.range_skew, parsed[1])
                status, body = 206, body[first : parsed[1] + 1]
                headers["Content-Range"] = f"bytes {first}-{parsed[1]}/{len(data)}"
        return await self._send(request, stats, blob, status, headers, body)

    async def _send(
        self,
        request: web.Request,
        stats: PathStats,
        blob: Blob,
        status: int,
        headers: dict[str, str],
        body: memoryview,
    ) -> web.StreamResponse:
        response = web.StreamResponse(status=status, headers=headers)
        if blob.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(body)
        await response.prepare(request)
        if request.method != "GET":
            return response
        if self.grace:
            await asyncio.sleep(self.grace)  # a prober hangs up here
        limit = len(body) // 2 if blob.truncate else len(body)
        started, sent = time.monotonic(), 0
        try:
            for offset in range(0, limit, _CHUNK):
                if blob.pace and offset:
                    await asyncio.sleep(blob.pace)
                if blob.rate and offset:
                    # Against the clock, not per chunk: sleep overheads do not add up.
                    await asyncio.sleep(max(started + offset / blob.rate - time.monotonic(), 0))
                chunk = bytes(body[offset : min(offset + _CHUNK, limit)])
                await response.write(chunk)
                sent += len(chunk)
                stats.bytes_sent += len(chunk)
            if blob.truncate:
                assert request.transport is not None
                request.transport.close()  # the client sees EOF before the announced length
                stats.bodies.append((status, sent))
                return response
            await response.write_eof()
        except ConnectionError:
            stats.aborted += 1
            stats.bodies.append((status, sent))
            return response
        stats.bodies.append((status, sent))
        stats.done_at = time.monotonic()
        if status == 206:
            stats.range_gets += 1
        else:
            stats.full_gets += 1
        return response

    # --- control endpoints (for the subprocess mode) ---------------------------------------------

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response({path: asdict(stats) for path, stats in self._stats.items()})

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({})

    async def _put_blob(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        name, body = request.match_info["name"], await request.read()
        if query.pop("as_then", "") in ("1", "true") and name in self.blobs:
            self.blobs[name].then = body
        else:
            self.add(name, body, **_typed_options(query))
        return web.json_response({"url": self.url(request.match_info["name"])})

    async def _post_blob(self, request: web.Request) -> web.Response:
        blob = self.blobs.get(request.match_info["name"])
        if blob is None:
            return web.json_response({"error": "no such blob"}, status=404)
        for key, value in (await request.json()).items():
            setattr(blob, key, value)
        return web.json_response({})


def _typed_options(raw: dict[str, str]) -> dict[str, Any]:
    """Query-string options → Blob field types (bool "1"/"true", numbers, strings)."""
    kinds = {f.name: str(f.type) for f in fields(Blob)}
    typed: dict[str, Any] = {}
    for key, value in raw.items():
        kind = kinds.get(key, "str")
        if kind == "bool":
            typed[key] = value.lower() in ("1", "true", "yes")
        elif kind in ("int", "float"):
            typed[key] = int(value) if kind == "int" else float(value)
        else:
            typed[key] = value
    return typed


class SourceProcess:
    """``python -m tests.sources`` in a child process, driven synchronously over HTTP."""

    def __init__(self, files: dict[str, Path | bytes] | None = None, port: int = 0, grace: float = 0.05) -> None:
        self.files, self.port, self.grace = files or {}, port, grace
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SourceProcess:
        args = [sys.executable, "-m", "tests.sources", "--port", str(self.port), "--grace", str(self.grace)]
        args += [f"--file={name}={path}" for name, path in self.files.items() if isinstance(path, Path)]
        root = Path(__file__).resolve().parents[1]
        self._proc = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.__exit__(None, None, None)
            raise RuntimeError(f"source server did not start: {line!r}")
        self.base_url = line.split()[1]
        for name, content in self.files.items():
            if isinstance(content, bytes):
                self.put(name, content)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def put(self, name: str, data: bytes, **options: object) -> None:
        params = {key: str(value) for key, value in options.items()}
        probe.client().put(f"{self.base_url}/_blobs/{name}", content=data, params=params).raise_for_status()

    def configure(self, name: str, **options: object) -> None:
        probe.client().post(f"{self.base_url}/_blobs/{name}", json=options).raise_for_status()

    def stats(self, name: str | None = None) -> dict[str, Any]:
        """All counters by path, or those of one blob (zeros if it was never requested)."""
        every: dict[str, Any] = probe.client().get(f"{self.base_url}/_stats").json()
        if name is None:
            return every
        one: dict[str, Any] = every.get("/" + name, asdict(PathStats()))
        return one

    def reset(self) -> None:
        probe.client().post(f"{self.base_url}/_reset").raise_for_status()


async def _run(args: argparse.Namespace) -> None:
    server = SourceServer(args.host, args.port, args.grace)
    for spec in args.file:
        name, _, path = spec.partition("=")
        blob = server.add(name, Path(path).read_bytes())  # noqa: ASYNC240 - before serving anything
        blob.etag(blob.data)  # hashed now: a 1 GiB file would make the first request wait seconds
    async with server:
        print(f"READY {server.base_url}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--grace", type=float, default=0.05, help="pause between headers and body")
    parser.add_argument("--file", action="append", default=[], metavar="NAME=PATH")
    asyncio.run(_run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()


def random_file(path: Path, size: int) -> tuple[Path, str]:
    """``size`` random bytes written to ``path``, and their sha256 (what every download must match)."""
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()
