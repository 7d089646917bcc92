"""Peer shapes. ``PeerInfo`` is Go's (PROTOCOL §6.2, samples/14), field for field and in Go's key order;
an empty ``version`` is omitted (the seed-cache peer has none). ``PeerView`` adds our fields."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, Field, field_validator

from app.api.bodies import any_case

# RFC 1123 host name, as Go's swagger validation (`format: hostname`) accepts it.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*")


class PeerInfo(BaseModel):
    ID: str
    IP: str
    created: str = Field(description="Registration time, RFC3339 with milliseconds (UTC).")
    hostName: str
    port: int
    version: str | None = None


class PeerTask(BaseModel):
    """One download of the peer's uploader (its IP:port) that still has state."""

    taskId: str
    cid: str
    peerId: str | None = None
    status: str | None = Field(None, description="dfget task status: WAITING, RUNNING, SUCCESS or FAILED.")
    down: bool = Field(False, description="The uploader reported service down or lost the file.")
    servedPieces: int = Field(0, description="Pieces other peers reported having fetched from it.")
    servedBytes: int = Field(0, description="Framed bytes of those pieces (what went over the wire).")


class PeerView(PeerInfo):
    seedCache: bool = Field(False, description="The supernode's own seed-cache peer.")
    tasks: list[PeerTask] = Field(default_factory=list)
    servedPieces: int = 0
    servedBytes: int = 0


class PeerCreated(BaseModel):
    ID: str


class PeerCreate(BaseModel):
    """Body of ``POST /peers``; key case does not matter (Go decodes case-insensitively)."""

    ip: str = Field(description="IPv4 address.")
    hostname: str = Field(description="RFC 1123 host name.")
    port: int = Field(0, description="15000..65000, or 0.")
    version: str = ""

    @field_validator("ip")
    @classmethod
    def _ipv4(cls, value: str) -> str:
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError("IP must be an IPv4 address") from None
        return value

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        if not _HOSTNAME.fullmatch(value):
            raise ValueError("hostName must be an RFC 1123 host name")
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if value and not 15000 <= value <= 65000:
            raise ValueError("port must be within 15000..65000")
        return value


# Documents the body for /docs and schemathesis; the route parses it itself to match keys in any case.
PEER_CREATE_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": any_case({
                "type": "object",
                "required": ["IP", "hostName"],
                "properties": {
                    "IP": {"type": "string", "format": "ipv4"},
                    "hostName": {"type": "string", "minLength": 1, "maxLength": 253,
                                 "pattern": f"^{_LABEL}(?:\\.{_LABEL})*$"},
                    "port": {"anyOf": [{"type": "integer", "minimum": 15000, "maximum": 65000},
                                       {"enum": [0, None]}]},
                    "version": {"type": ["string", "null"]},
                },
            })
        }
    },
}
