"""Parsing dfget's requests and shaping the answers (PROTOCOL §2, §5). Pure, no I/O.

dfget and the Go supernode decode JSON with case-insensitive key matching, so every body is read
through a lower-cased key map; a declared pydantic model would silently drop ``rawUrl`` vs ``rawURL``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import orjson

from app.protocol.codes import Code


class WireError(ValueError):
    """Bad input; answered with a result code (never an HTTP 5xx)."""


@dataclass(frozen=True)
class RegisterRequest:
    super_node_ip: str
    raw_url: str
    task_url: str
    cid: str
    ip: str
    host_name: str
    port: int
    path: str
    version: str
    md5: str = ""
    identifier: str = ""
    call_system: str = ""
    header_entries: tuple[str, ...] = field(default_factory=tuple)
    dfdaemon: bool = False


def lower_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key).lower(): value for key, value in obj.items()}


def decode_body(body: bytes, content_type: str) -> dict[str, Any]:
    """JSON whatever the Content-Type, except an exact form content type (dfget 1.0.x parity)."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        form: dict[str, Any] = {}
        for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            if key.lower() == "headers":
                form.setdefault(key, []).append(value)
            else:
                form[key] = value
        return lower_keys(form)
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise WireError("request body must be a JSON object")
    return lower_keys(decoded)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise WireError(f"{key} must be a string")


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key)
    if value in (None, ""):
        return 0
    if isinstance(value, bool):
        raise WireError(f"{key} must be an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise WireError(f"{key} must be an integer") from None


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key)
    if isinstance(value, str):
        return value.lower() in {"true", "1"}
    return bool(value)


def _header_entries(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Mapping):  # defensive: a map instead of dfget's list of "Name:Value"
        return tuple(f"{name}:{val}" for name, val in value.items())
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    raise WireError("headers must be a list of strings")


def is_ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def has_usable_host(value: str) -> bool:
    """False when the source client would refuse the URL: its host is IDNA-decoded on use, and
    ``xn--zz--.com`` (a hyphen-ended A-label) or a malformed URL raise there, not here."""
    try:
        httpx.URL(value).host  # noqa: B018 (the property is the check)
    except (ValueError, httpx.InvalidURL):  # IDNAError is a ValueError
        return False
    return True


def is_http_url(value: str) -> bool:
    """Any absolute http(s) URL, dotless hosts included (the Go ≤1.0.0 dot rule is a bug, §15.14)."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in {"http", "https"} and bool(parts.hostname) and has_usable_host(value)


# Bounds of what a registration may store (every field lives in Redis until the task expires). Each is
# far above what dfget sends: cids are "<ip>-<pid>-<time>" (~40 chars), paths "/peer/file/<name>-<pid>-
# <time>" (a file name is at most 255 bytes), versions "1.0.6". URLs get 16 KiB: signed URLs with a
# session token run to 2-4 KiB. Header values get 8 KiB (a JWT bearer token is a few KiB), names 256.
FIELD_CAPS: dict[str, int] = {
    "supernodeip": 256,
    "rawurl": 16384,
    "taskurl": 16384,
    "cid": 256,
    "ip": 64,
    "hostname": 255,  # a DNS name is at most 253
    "path": 4096,  # PATH_MAX
    "version": 64,
    "md5": 64,
    "identifier": 1024,
    "callsystem": 256,
}
MAX_HEADERS = 100  # dfget's --header, typed by a person or a dfdaemon: a handful
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 8192


def _capped(data: Mapping[str, Any], key: str) -> str:
    value = _text(data, key)
    if len(value) > FIELD_CAPS[key]:
        raise WireError(f"{key} is {len(value)} characters long, over the limit of {FIELD_CAPS[key]}")
    return value


def _capped_headers(entries: tuple[str, ...]) -> tuple[str, ...]:
    if len(entries) > MAX_HEADERS:
        raise WireError(f"{len(entries)} headers, over the limit of {MAX_HEADERS}")
    for entry in entries:
        name, _, value = entry.partition(":")
        if len(name) > MAX_HEADER_NAME:
            raise WireError(f"a header name is {len(name)} characters long, over the limit of {MAX_HEADER_NAME}")
        if len(value) > MAX_HEADER_VALUE:
            raise WireError(f"header {name[:64]!r} has a value of {len(value)} characters, over the limit of "
                            f"{MAX_HEADER_VALUE}")
    return entries


def parse_register(data: Mapping[str, Any]) -> RegisterRequest:
    request = RegisterRequest(
        super_node_ip=_capped(data, "supernodeip"),
        raw_url=_capped(data, "rawurl"),
        task_url=_capped(data, "taskurl"),
        cid=_capped(data, "cid"),
        ip=_capped(data, "ip"),
        host_name=_capped(data, "hostname"),
        port=_int(data, "port"),
        path=_capped(data, "path"),
        version=_capped(data, "version"),
        md5=_capped(data, "md5"),
        identifier=_capped(data, "identifier"),
        call_system=_capped(data, "callsystem"),
        header_entries=_capped_headers(_header_entries(data.get("headers"))),
        dfdaemon=_bool(data, "dfdaemon"),
    )
    if not is_ipv4(request.ip):
        raise WireError(f"ip {request.ip!r} is not a dotted IPv4 address")
    if request.port != 0 and not 15000 <= request.port <= 65000:
        raise WireError(f"port {request.port} is outside 15000..65000")
    if not is_http_url(request.raw_url):
        raise WireError(f"rawUrl {request.raw_url!r} is not an http(s) URL")
    if request.task_url and not is_http_url(request.task_url):
        raise WireError(f"taskUrl {request.task_url!r} is not an http(s) URL")
    if not request.cid:
        raise WireError("cid is empty")
    if not request.path:
        raise WireError("path is empty")
    return request


@dataclass(frozen=True)
class PullRequest:
    src_cid: str
    dst_cid: str
    range: str
    result: int
    status: int
    task_id: str

    @property
    def fingerprint(self) -> str:
        return f"{self.status}|{self.result}|{self.range}|{self.dst_cid}"


def _query_int(query: Mapping[str, str], key: str) -> int:
    value = query.get(key, "")
    # Go's strconv.Atoi: ASCII digits and a sign, within int64 (int() also takes "²", " 1", "1_0").
    digits = value[1:] if value[:1] in ("-", "+") else value
    if not 0 < len(digits) <= 19 or not digits.isascii() or not digits.isdigit():
        raise WireError(f"{key} {value[:32]!r} is not a number")
    return int(value)


def parse_pull(query: Mapping[str, str]) -> PullRequest:
    request = PullRequest(
        src_cid=query.get("srcCid", ""),
        dst_cid=query.get("dstCid", ""),
        range=query.get("range", ""),
        result=_query_int(query, "result") if query.get("result") else 0,
        status=_query_int(query, "status"),
        task_id=query.get("taskId", ""),
    )
    if not request.src_cid or not request.task_id:
        raise WireError("srcCid and taskId are required")
    return request


# --- answers -------------------------------------------------------------------------------------
# Field order follows the Go server's output (code, data, msg); clients do not depend on it.

def result(code: int, msg: str = "", data: Any = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"code": code}
    if data is not None:
        answer["data"] = data
    if msg:
        answer["msg"] = msg
    return answer


def register_ok(task_id: str, file_length: int, piece_size: int) -> dict[str, Any]:
    return result(Code.SUCCESS, "success", {"taskId": task_id, "fileLength": file_length, "pieceSize": piece_size})


def finish(file_length: int, md5: str) -> dict[str, Any]:
    return result(Code.PEER_FINISH, data={"fileLength": file_length, "md5": md5})


def piece_task(
    range_: str, piece_num: int, piece_size: int, piece_md5: str, cid: str, peer_ip: str, peer_port: int,
    path: str, down_link: int,
) -> dict[str, Any]:
    return {
        "range": range_,
        "pieceNum": piece_num,
        "pieceSize": piece_size,
        "pieceMd5": piece_md5,
        "cid": cid,
        "peerIp": peer_ip,
        "peerPort": peer_port,
        "path": path,
        "downLink": down_link,
    }
