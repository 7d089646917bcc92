"""The dfget fast path: dfget's six routes answered in front of FastAPI.

Every piece a dfget downloads costs a pull and a success report, so these requests are nearly all the
API traffic of a swarm. Through the full stack each one paid for FastAPI's and Starlette's
middlewares, exception wrappers, request objects and routing (about a fifth of a replica's CPU in a
profile of benchmarks/bench_control_plane.py). Here a request whose path and method are a dfget route
is parsed from the ASGI scope and answered directly; everything else goes on to the app untouched.
A request with a body past the dfget limit, or a chunked one, goes on too: app.api.limits refuses it
there, in front of the same routes.

What the stack did for these routes is done here too, in the same order: the ``/v<version>`` prefix,
the request id of JSON logs, the dfget allowlist (403), the Redis round-trip count, the legacy HTTP
metrics and dfget counters (app.api.metrics, app.observability.dfget), and the error mapping of
app.api.routes.peer.
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api import metrics
from app.api.admission import Admission, deferred_total
from app.api.allowlist import Network, allowed, refusal
from app.api.middleware import without_version
from app.api.requestid import choose_id
from app.api.routes.peer import ROUTES, DfgetRoute, PeerCall, answer, busy, disconnected
from app.bridge.peer_ip import PeerAddress
from app.bridge.service import PeerBridge
from app.core.logjson import request_id
from app.observability import dfget, roundtrips

log = logging.getLogger("app.api.fastpath")

_JSON = (b"content-type", b"application/json")


class DfgetFastPath:
    def __init__(
        self, app: ASGIApp, state: Any, networks: list[Network], peer_label: bool, request_ids: bool, max_body: int,
        admission: Admission,
    ) -> None:
        self.app = app  # the rest: the body limits, then the FastAPI app
        self.admission = admission  # how many dfget requests are worked on at once (app.api.admission)
        self.max_body = max_body
        self.state = state  # the app's ``app.state``: the bridge exists once the lifespan started
        self.networks = networks
        self.peer_label = peer_label
        self.request_ids = request_ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = without_version(scope["path"])
            route = ROUTES.get(path)
            bridge = getattr(self.state, "bridge", None)
            if route is not None and route.method == scope["method"] and bridge is not None:
                head = _Head(scope["headers"])
                if self._body_fits(head, route.reads_body):
                    await self._serve(path, route, bridge, head, scope, receive, send)
                    return
        await self.app(scope, receive, send)

    def _body_fits(self, head: _Head, reads_body: bool) -> bool:
        """No body (a GET without Content-Length or Transfer-Encoding), or a declared one within the limit."""
        if head.chunked:
            return False
        length = head.content_length
        return length is None or (reads_body and length <= self.max_body) or length == 0

    async def _serve(
        self, path: str, route: DfgetRoute, bridge: PeerBridge, head: _Head, scope: Scope,
        receive: Receive, send: Send,
    ) -> None:
        started = time.perf_counter()
        token = None
        rid = b""
        if self.request_ids:
            rid_text = choose_id(head.request_id)
            token = request_id.set(rid_text)
            rid = rid_text.encode()
        trips = roundtrips.start()
        try:
            client = scope.get("client")
            host = client[0] if client else ""
            body = b""
            query: dict[str, str] = {}
            if self.networks and not allowed(host, self.networks):
                status, reply = 403, refusal(host)
            else:
                status = 200
                complete = True
                if route.reads_body:
                    body, complete = await _read_body(receive)
                if not complete:
                    log.info("%s: client went away before its request was read", path)
                    body, reply = b"", disconnected()
                elif not await self.admission.enter():
                    deferred_total.labels(path).inc()
                    reply = busy(route)
                else:
                    try:
                        query = dict(parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True))
                        call = PeerCall(query, body, head.content_type, PeerAddress(host, tuple(head.forwarded_for)))
                        reply = await answer(path, route, bridge, call)
                    finally:
                        self.admission.leave()
            out = [(b"content-length", str(len(reply)).encode()), _JSON]
            if rid:
                out.append((b"x-request-id", rid))
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": reply})
        finally:
            count = roundtrips.finish(trips)
            if token is not None:
                request_id.reset(token)
        seconds = time.perf_counter() - started
        try:
            self._count(path, status, seconds, head, query, body, reply, count)
        except Exception:  # the answer is sent already: a counting bug must not surface as an error
            log.warning("could not count a %s request", path, exc_info=True)

    def _count(
        self, path: str, status: int, seconds: float, head: _Head, query: dict[str, str],
        body: bytes, reply: bytes, trips: int,
    ) -> None:
        metrics.record_request(path, str(status), seconds, head.content_length or 0, len(reply), trips)
        if status != 200:
            return
        if path in dfget.QUERY_HANDLERS:
            dfget.record_query(path, query, seconds, self.peer_label)
        elif path == dfget.REPORT and body:
            dfget.record_report(body, self.peer_label)
        elif path == dfget.REGISTRY and body:
            dfget.record_registration(body, reply)


class _Head:
    """The request headers the fast path reads, found in one pass (the first of each, as Starlette's
    ``headers.get``; every X-Forwarded-For, as ``getlist``)."""

    __slots__ = ("chunked", "content_length", "content_type", "forwarded_for", "request_id")

    def __init__(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.content_length: int | None = None  # a malformed one counts as too long
        self.chunked = False
        self.content_type = ""
        self.request_id: str | None = None
        self.forwarded_for: list[str] = []
        seen_length = seen_type = False
        for name, value in headers:
            if name == b"content-length" and not seen_length:
                seen_length = True
                self.content_length = int(value) if value.isdigit() else _TOO_LONG
            elif name == b"transfer-encoding":
                self.chunked = True
            elif name == b"content-type" and not seen_type:
                seen_type = True
                self.content_type = value.decode("latin-1")
            elif name == b"x-request-id" and self.request_id is None:
                self.request_id = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                self.forwarded_for.append(value.decode("latin-1"))


_TOO_LONG = 1 << 62


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether it all arrived (False: the client disconnected first)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), True
