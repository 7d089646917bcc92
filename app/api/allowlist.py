"""``DF_DFGET_ALLOWLIST``: which client networks may use the dfget API (``/peer/*``, ``/task/metrics``).

A refused client gets HTTP 403: dfget takes any non-200 as a transport error and tries its next node,
then goes to the source, so a refusal never breaks a download. The client address is the TCP peer,
or the ``X-Forwarded-For`` of a proxy uvicorn trusts (``FORWARDED_ALLOW_IPS``).
"""

from __future__ import annotations

import ipaddress

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_body, is_dfget_path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(spec: str) -> list[Network]:
    """Comma-separated CIDRs (a bare address is a /32 or /128); raises ValueError naming a bad item."""
    networks = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"DF_DFGET_ALLOWLIST: {item!r} is not a CIDR") from None
    return networks


def allowed(host: str, networks: list[Network]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def refusal(host: str) -> bytes:
    return orjson.dumps(error_body(403, f"client {host} is not allowed to use the dfget API"))


class DfgetAllowlistMiddleware:
    def __init__(self, app: ASGIApp, networks: list[Network]) -> None:
        self.app = app
        self.networks = networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_dfget_path(scope["path"]):
            client = scope.get("client")
            host = client[0] if client else ""
            if not allowed(host, self.networks):
                body = refusal(host)
                await send({"type": "http.response.start", "status": 403, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
