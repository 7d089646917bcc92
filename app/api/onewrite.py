"""One send per response on the API port: a response head waits for its body.

uvicorn writes a response in two calls, its head on ``http.response.start`` and its body on
``http.response.body``; on uvloop each call is a ``write`` syscall at once, and with TCP_NODELAY a
segment of its own, so a client (and a load balancer in between) handles two packets and wakes twice
for one answer. Nearly every request of a swarm (a pull, a piece report) is a small answer whose two
halves are written in the same turn of the loop. ``HeadHoldingTransport`` keeps a head back until the
next write and sends both together; a head with nothing after it in the same turn (a streamed response
still being produced, the head of a HEAD request, an interim ``100 Continue``) goes out at the end of
that turn, so no response waits longer than one turn of the loop. (The replica's own CPU per request
did not move measurably: benchmarks/RESULTS.md, 2026-12-03.)
"""

from __future__ import annotations

import asyncio
from typing import Any

_HEAD_START = b"HTTP/1."
_HEAD_END = b"\r\n\r\n"


class HeadHoldingTransport:
    """Wraps a connection's transport for the HTTP protocol; every other call goes to the transport."""

    __slots__ = ("_flush_handle", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._flush_handle: asyncio.Handle | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if self._flush_handle is not None:
                self._flush_handle.cancel()
                self._flush_handle = None
            self._transport.write(held + bytes(data))
        elif isinstance(data, bytes) and data.startswith(_HEAD_START) and data.endswith(_HEAD_END):
            self._held = data
            self._flush_handle = self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a held head now."""
        self._flush_handle = None
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        # A refusal is written and closed in one go (app.api.limits): its bytes go out before the FIN.
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
