"""ASGI middlewares: the ``/v<version>`` prefix, and the answer to an error no route handled."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import orjson
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.redis import is_outage

log = logging.getLogger("app.api")

_VERSION_PREFIX = re.compile(r"^/v[0-9.]+(/.*)$")


def without_version(path: str) -> str:
    """``/v1.0/peer/task`` -> ``/peer/task``; any other path as it is."""
    match = _VERSION_PREFIX.match(path)
    return match.group(1) if match else path


class VersionPrefixMiddleware:
    """Every route is also served under ``/v<version>`` (e.g. ``/v1.0/peer/registry``), as in Go."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = _VERSION_PREFIX.match(scope["path"])
            if match:
                scope = dict(scope)
                scope["path"] = match.group(1)
                scope["raw_path"] = match.group(1).encode()
        await self.app(scope, receive, send)


class UnhandledErrorMiddleware:
    """The last word on an exception no route handled: one log record, one JSON answer, no re-raise.

    Starlette's own server-error handler re-raises after answering, so uvicorn logs the traceback a
    second time and closes the keep-alive connection; a client (dfget, haproxy's pooled connection)
    then fails its next request on the dead connection. Added innermost, so the metrics middleware
    still counts the 500/503.
    """

    def __init__(self, app: ASGIApp, on_outage: Callable[[BaseException], None] | None = None) -> None:
        self.app = app
        self.on_outage = on_outage

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            # Routine (a client timed out or was killed mid-body), and nobody is left to answer.
            log.info("%s %s: client went away before its request was read", scope.get("method"), scope.get("path"))
        except Exception as exc:
            method, path = scope.get("method"), scope.get("path", "")
            headers = [(b"content-type", b"application/json")]
            if is_outage(exc):
                if self.on_outage is not None:
                    self.on_outage(exc)
                log.warning("%s %s: redis unavailable (%s), answered 503", method, path, type(exc).__name__)
                status, message = 503, "cluster state unavailable, retry shortly"
                headers.append((b"retry-after", b"1"))
            else:
                log.exception("unhandled error on %s %s", method, path)
                status, message = 500, "internal error"
            if started:
                return  # the answer is on its way already; nothing sensible can be added to it
            payload = orjson.dumps({"code": status, "message": message})
            headers.append((b"content-length", str(len(payload)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
