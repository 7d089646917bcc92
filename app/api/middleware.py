"""Every route is also served under ``/v<version>`` (e.g. ``/v1.0/peer/registry``), as in Go."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

_VERSION_PREFIX = re.compile(r"^/v[0-9.]+(/.*)$")


class VersionPrefixMiddleware:
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
