"""Bounds of the piece port: header size and count, a header-read timeout, and quiet bad requests.

aiohttp bounds each header line and the header count itself; what it lacks is a bound on the time the
headers may take (its keep-alive timer runs only while no request is pending) and a quiet answer to
a malformed request: by default it logs an ERROR traceback per bad request and echoes the offending
bytes back in its 400 body. A port every dfget of the datacenter can reach gets neither.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

_log = logging.getLogger("app.download.server")


@dataclass(frozen=True)
class PieceBounds:
    """Defaults match the API port's settings (DF_MAX_HEADER_BYTES, DF_MAX_HEADERS,
    DF_HEADER_TIMEOUT_SECONDS, DF_KEEPALIVE_TIMEOUT_SECONDS)."""

    max_header_bytes: int = 16384
    max_headers: int = 100
    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with a header-read timeout and a total header bound."""

    __slots__ = ("_bounds", "_header_bytes", "_header_timer")

    def __init__(self, manager: web.Server, *, bounds: PieceBounds, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._bounds = bounds
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._force_close or self._close:
            return
        parsed_before = self._request_count
        if self._header_timer is None and not self._request_in_progress and not self._messages:
            # The first byte of a request: its line and headers are now due.
            self._header_bytes = 0
            self._header_timer = self._loop.call_later(self._bounds.header_timeout, self._header_timed_out)
        super().data_received(data)
        if self._request_count > parsed_before:  # the head is parsed (or refused by aiohttp)
            self._cancel_header_timer()
        elif self._header_timer is not None:
            self._header_bytes += len(data)
            if self._header_bytes > self._bounds.max_header_bytes:
                _log.warning("refused a piece request over %d header bytes", self._bounds.max_header_bytes)
                self._reject(b"431 Request Header Fields Too Large")

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        _log.warning("closed a piece connection whose request headers took over %.0fs", self._bounds.header_timeout)
        self._reject(b"408 Request Timeout")

    def _reject(self, status: bytes) -> None:
        self._cancel_header_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        self.force_close()

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """One rate-limited WARNING line without a traceback, and a body that names the status only.

        aiohttp's message for a bad request quotes the request bytes (a header line, the method); they
        are the client's own input and not echoed back, nor logged.
        """
        reason = type(exc).__name__ if exc is not None else "error"
        if status >= 500:
            _log.error("piece request failed: %s", reason, exc_info=exc)
        else:
            _log.warning("refused a malformed piece request (%s), answered %d", reason, status)
        response = web.Response(status=status, text=f"{status}: {'Bad Request' if status == 400 else 'Error'}")
        response.force_close()
        return response


class GuardedSite(web.TCPSite):
    """A TCP site whose connections get ``GuardedRequestHandler`` (aiohttp's Server makes the plain one)."""

    def __init__(
        self, runner: web.AppRunner, host: str, port: int, *, backlog: int, bounds: PieceBounds,
        handler_args: dict[str, Any], sock: socket.socket | None = None,
    ) -> None:
        super().__init__(runner, host, port, backlog=backlog)
        self._sock = sock
        self._bounds = bounds
        self._handler_args = handler_args

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner, as TCPSite.start does
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def connection() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=loop, bounds=self._bounds, **self._handler_args)

        if self._sock is not None:
            self._server = await loop.create_server(connection, sock=self._sock, backlog=self._backlog)
        else:
            self._server = await loop.create_server(connection, self._host, self._port, backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1]
