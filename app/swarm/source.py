"""The origin ("source") df-swarm serves itself: generated files with counters and an egress limit.

``df-swarm --size 64MiB`` needs a file every peer (and the supernode's seeder) can fetch, and a way to
tell how many times the origin was read: that is the seed's chart's whole point. Content is
deterministic pseudo-random bytes (incompressible, so no layer in between can cheat), served with
Content-Length, ETag, Last-Modified and single ``Range`` requests, which is what the supernode's probe
and seeder and dfget's back-source use. ``rate`` bounds the origin's total egress (one token bucket over
every response), as the seed's 1,000 Mb/s server link did; each response is recorded (client address,
status, bytes, first/last byte times) so tests can measure rates at this end.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from aiohttp import web

from app.swarm.ratelimit import READ_CHUNK, TokenBucket
from app.swarm.site import serve

_FAST_CHUNK = 1 << 20


def generated_bytes(size: int, seed: int = 0) -> bytes:
    """``size`` reproducible, incompressible bytes (the same ``seed`` gives the same file anywhere)."""
    return random.Random(seed).randbytes(size)


@dataclass(frozen=True)
class Served:
    """One response body as this server sent it."""

    path: str
    client: str
    status: int
    bytes: int
    started: float  # time.monotonic() when the first body byte was handed to the connection
    ended: float
    complete: bool
    half_at: float = 0.0  # when half of the body had been handed over

    @property
    def steady_rate(self) -> float:
        """The rate the client read at, seen from this end: the second half of the body over its time.

        The whole body's time would not do: the first megabytes vanish into the socket buffers at once,
        and by the second half the buffers are full, so every write waits for the reader (0: too short).
        """
        spent = self.ended - self.half_at
        return (self.bytes - self.bytes // 2) / spent if self.half_at and spent > 0 else 0.0


@dataclass
class SourceStats:
    requests: int = 0
    full_gets: int = 0  # whole 200 bodies written
    range_gets: int = 0
    bytes_sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    served: list[Served] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "requests": self.requests,
            "full_gets": self.full_gets,
            "range_gets": self.range_gets,
            "bytes_sent": self.bytes_sent,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


@dataclass(frozen=True)
class _File:
    data: bytes
    etag: str
    last_modified: str


class GeneratedSource:
    """``async with GeneratedSource(rate=40e6) as src: url = src.add("f.bin", 64 << 20)``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, rate: float | None = None,
                 advertise: str | None = None) -> None:
        self.host, self.port = host, port
        self.advertise = advertise or host  # the address put in URLs (the host's IP when bound to 0.0.0.0)
        # A small burst (a few chunks), so that even a short body goes out at the rate, not ahead of it.
        self.bucket = TokenBucket(rate, burst=4 * READ_CHUNK) if rate else None
        self.stats = SourceStats()
        self.files: dict[str, _File] = {}
        self._runner: web.AppRunner | None = None

    def add(self, name: str, size_or_data: int | bytes, seed: int = 0) -> str:
        data = generated_bytes(size_or_data, seed) if isinstance(size_or_data, int) else size_or_data
        etag = '"' + hashlib.md5(data).hexdigest()[:16] + '"'
        self.files[name] = _File(data, etag, time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() - 60)))
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://{self.advertise}:{self.port}/{name}"

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name].data).hexdigest()

    def served(self, name: str | None = None, *, complete: bool = True) -> list[Served]:
        return [s for s in self.stats.served if (name is None or s.path == "/" + name) and (s.complete or not complete)]

    async def __aenter__(self) -> GeneratedSource:
        app = web.Application()
        app.router.add_get("/_stats", self._get_stats)  # for a driver in another process (SourceProcess)
        app.router.add_post("/_reset", self._post_reset)
        app.router.add_route("GET", "/{name:.+}", self._serve)
        self._runner, self.port = await serve(app, self.host, self.port, shutdown_timeout=0.1)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _get_stats(self, _request: web.Request) -> web.Response:
        return web.json_response(self.stats.as_dict())

    async def _post_reset(self, _request: web.Request) -> web.Response:
        self.stats = SourceStats()
        return web.json_response({})

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self.stats.requests += 1
        found = self.files.get(request.match_info["name"])
        if found is None:
            self.stats.statuses[404] += 1
            return web.Response(status=404, text="no such file\n")
        headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes",
                   "ETag": found.etag, "Last-Modified": found.last_modified}
        if request.headers.get("If-None-Match") == found.etag:
            self.stats.statuses[304] += 1
            return web.Response(status=304, headers=headers)
        first, last = 0, len(found.data) - 1
        status = 200
        wanted = single_range(request.headers.get("Range", ""), len(found.data))
        if wanted == "416":
            self.stats.statuses[416] += 1
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(found.data)}"})
        if isinstance(wanted, tuple):
            status, (first, last) = 206, wanted
            headers["Content-Range"] = f"bytes {first}-{last}/{len(found.data)}"
        self.stats.statuses[status] += 1
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = last - first + 1
        await response.prepare(request)
        await self._body(request, response, memoryview(found.data)[first : last + 1], status)
        return response

    async def _body(self, request: web.Request, response: web.StreamResponse, body: memoryview, status: int) -> None:
        chunk = READ_CHUNK if self.bucket is not None else _FAST_CHUNK
        client = request.remote or ""
        started, sent, complete, half_at = time.monotonic(), 0, False, 0.0
        try:
            for offset in range(0, len(body), chunk):
                if not half_at and sent >= len(body) // 2:
                    half_at = time.monotonic()
                piece = body[offset : offset + chunk]
                if self.bucket is not None:
                    await self.bucket.take(len(piece))
                await response.write(bytes(piece))
                sent += len(piece)
                self.stats.bytes_sent += len(piece)
            await response.write_eof()
            complete = True
        except ConnectionError:
            pass  # the client went away: what it got is still egress, recorded below as incomplete
        finally:
            self.stats.served.append(Served(request.path, client, status, sent, started, time.monotonic(), complete,
                                            half_at))
            if complete:
                if status == 200:
                    self.stats.full_gets += 1
                else:
                    self.stats.range_gets += 1


def single_range(value: str, size: int) -> tuple[int, int] | str | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n``; None: serve the whole file; "416": unsatisfiable."""
    unit, _, spec = value.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    start_text, dash, end_text = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not start_text:
            start, end = max(size - int(end_text), 0), size - 1
        else:
            start, end = int(start_text), int(end_text) if end_text else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return "416"
    return start, min(end, size - 1)


class SourceProcess:
    """``python -m app.swarm.source`` in a child process (so its CPU is not the caller's), driven over HTTP.

    ``with SourceProcess({"f.bin": path}) as src: src.url("f.bin"); src.stats()["full_gets"]; src.reset()``
    """

    def __init__(self, files: dict[str, Path], rate: float | None = None) -> None:
        self.files, self.rate = files, rate
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> SourceProcess:
        args = [sys.executable, "-m", "app.swarm.source", *(f"--file={n}={p}" for n, p in self.files.items())]
        if self.rate:
            args.append(f"--rate={self.rate}")
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.__exit__()
            raise RuntimeError(f"source server did not start: {line!r}")
        self.base_url = line.split()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def stats(self, _name: str | None = None) -> dict[str, Any]:
        """The server's counters (one server per file set: they cover every file it serves)."""
        counters: dict[str, Any] = httpx.get(f"{self.base_url}/_stats").json()
        return counters

    def reset(self) -> None:
        httpx.post(f"{self.base_url}/_reset").raise_for_status()


async def _serve_forever(args: argparse.Namespace) -> None:
    source = GeneratedSource(args.host, args.port, rate=args.rate)
    for spec in args.file:
        name, _, path = spec.partition("=")
        source.add(name, Path(path).read_bytes())  # noqa: ASYNC240 - before serving anything
    async with source:
        print(f"READY http://{source.advertise}:{source.port}", flush=True)
        await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve files with counters (df-swarm's origin).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=float, default=None, help="total egress, bytes/s")
    parser.add_argument("--file", action="append", default=[], metavar="NAME=PATH")
    asyncio.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
