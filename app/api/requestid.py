"""X-Request-Id: the id of a request in every log line written while serving it (JSON logs), and in
its response, so an operator can find the log lines of the answer a user shows them.

An incoming X-Request-Id (from haproxy's ``unique-id-header``, an ingress, a client) is kept when it
looks like an id: 1..128 characters of letters, digits and ``._:-``. Anything else (too long, spaces,
control characters a log line must not carry) is replaced by a fresh one rather than refused: the
header is advisory and dfget never sends it.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logjson import request_id

HEADER = "x-request-id"
_SANE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def choose_id(incoming: str | None) -> str:
    if incoming is not None and _SANE.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        rid = choose_id(incoming)
        token = request_id.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)
