"""Bounds on what one request to the API port may make the replica hold: body, headers and time.

The dfget API is unauthenticated by design, so these bounds are the only thing between a hostile or
broken client and the replica's memory and connection table.

* ``BodyLimitMiddleware``: a body over the route's limit is refused while it is read, before it is
  buffered (Starlette's ``request.body()`` would otherwise hold all of it).
* ``GuardedHttpToolsProtocol``: uvicorn's httptools protocol (what ``uvicorn[standard]`` picks) with a
  bound on the request line plus headers, on the header count, and on the time the headers may take.
  httptools itself has no such limits (llhttp buffers a header of any size) and uvicorn has no
  header-read timeout: its keep-alive timer is cancelled by the first byte, so a client trickling a
  byte every 2 s held a connection forever. Its transport sends each response in one write
  (app.api.onewrite).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httptools
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.api.middleware import without_version
from app.api.onewrite import HeadHoldingTransport

log = logging.getLogger("app.api.limits")

# dfget's routes: their refusal is an HTTP 200 with a result code, as for any bad input (PROTOCOL
# §5.1): code 501 sends dfget to the next node at once; an HTTP error status would count as a
# transport failure of this node.
PEER_BODY_ROUTES = frozenset({"/peer/registry", "/task/metrics"})
PARAM_ERROR = 501


class BodyLimitMiddleware:
    """413 (or code 501 on dfget's routes) for a body over the limit, with ``Connection: close``.

    A declared Content-Length over the limit is refused before the app runs; a chunked body is counted
    as it arrives and refused at the first chunk over the limit. The app then sees a disconnect, and
    whatever it still tries to answer is dropped. Outermost middleware: the refusal is the only answer.
    """

    def __init__(self, app: ASGIApp, peer_limit: int, rest_limit: int) -> None:
        self.app = app
        self.peer_limit = peer_limit
        self.rest_limit = rest_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, chunked = _body_headers(scope)
        if declared is None and not chunked:
            # No Content-Length and no Transfer-Encoding: HTTP/1.1 says there is no body (RFC 9112
            # §6.3), and uvicorn reads none. Every pull and piece report of dfget is such a GET.
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = without_version(path)
        is_peer = route in PEER_BODY_ROUTES or route.startswith("/peer/")
        limit = self.peer_limit if is_peer else self.rest_limit
        if declared is not None and declared > limit:
            await _refuse(send, is_peer, limit, path)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _refuse(send, is_peer, limit, path)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:  # the app's answer to a body it never got is not sent
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _body_headers(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length (None: absent or malformed) and whether a Transfer-Encoding is set."""
    length, chunked = None, False
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                pass  # uvicorn's parser has refused a malformed one already
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked


async def _refuse(send: Send, is_peer: bool, limit: int, path: str) -> None:
    log.warning("refused a request body over %d bytes on %s", limit, path)
    message = f"request body over the {limit}-byte limit of this route"
    if is_peer:
        status, payload = 200, orjson.dumps({"code": PARAM_ERROR, "msg": message})
    else:
        status, payload = 413, orjson.dumps({"code": 413, "message": message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        # The rest of the body is not read: the connection cannot carry another request.
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class _HeaderLimit(Exception):
    """Raised from a parser callback: stops httptools at the first header over a bound."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header bounds and a header-read timeout.

    Class attributes are set by ``guarded_protocol`` (uvicorn builds one protocol per connection from
    the class alone).
    """

    max_header_bytes = 16384
    max_headers = 100
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = False
        self._header_bytes = 0
        self._header_count = 0
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # One send per response (app.api.onewrite): uvicorn writes a head and a body separately.
        super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]
        # uvicorn arms its keep-alive timer only after a response: a connection that never sends a
        # byte would stay open for good. The idle bound applies from the accept on.
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if not self._in_headers and self._header_timer is None and self.cycle_idle():
            self._start_header_timer()  # the first byte of a request: its headers are now due
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            # httptools turns a callback's exception into HttpParserCallbackError, the original as context.
            if isinstance(exc.__context__, _HeaderLimit):
                self._reject(431, "Request Header Fields Too Large")
                return
            log.warning("invalid HTTP request received: %s", type(exc).__name__)
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self._in_headers:
            # Counted after parsing, so a chunk that also holds the body is not counted as headers;
            # one read (at most 256 KiB from asyncio) is the most httptools buffers beyond the bound.
            self._header_bytes += len(data)
            if self._header_bytes > self.max_header_bytes:
                self._reject(431, "Request Header Fields Too Large")

    def cycle_idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        self._header_count = 0
        if self._header_timer is None:
            self._start_header_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.max_headers or len(name) + len(value) > self.max_header_bytes:
            raise _HeaderLimit
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_header_timer()
        super().on_headers_complete()

    def _start_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        log.warning("closed a connection whose request headers took over %.0fs", self.header_timeout)
        self._reject(408, "Request Timeout")

    def _reject(self, status: int, reason: str) -> None:
        self._cancel_header_timer()
        if status == 431:
            log.warning("refused a request over the header bounds (%d bytes, %d headers)",
                        self.max_header_bytes, self.max_headers)
        if not self.transport.is_closing():
            self.transport.write(
                f"HTTP/1.1 {status} {reason}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode()
            )
            self.transport.close()


def guarded_protocol(max_header_bytes: int, max_headers: int, header_timeout: float) -> type[HttpToolsProtocol]:
    """A protocol class for ``uvicorn.Config(http=...)`` with these bounds."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "max_headers": max_headers, "header_timeout": header_timeout},
    )
