"""Parsing preheat create bodies the way their Go servers did: keys matched case-insensitively (Go's
encoding/json, PROTOCOL §2.3), unknown keys ignored (Harbor sends image, tag, digest, scope,
extra_attrs), ``headers`` values that are not strings accepted (Harbor declares them interface{})."""

from __future__ import annotations

import math
from typing import Any

import orjson

from app.preheat.model import TYPES, PreheatRequest
from app.protocol.wire import has_usable_host

MAX_CONCURRENT_COUNT = 500  # Dragonfly2's own bound for args.concurrent_count
NANOSECONDS = 1_000_000_000
# A preheat that needs more than a week is a mistake; the bound also keeps the echoed value an int64
# (Go's time.Duration), which ``timeout: 1e300`` was not: it failed only when the job was answered.
MAX_TIMEOUT_NS = 7 * 24 * 3600 * NANOSECONDS


class BadPreheatRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _object(raw: Any, what: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise BadPreheatRequest(f"{what} must be a JSON object")
    # Go's decoder takes the last of several keys that differ only in case; so does this.
    return {str(key).lower(): value for key, value in raw.items()}


def _decode(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise BadPreheatRequest("empty request body")
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadPreheatRequest(f"invalid JSON: {exc}") from exc
    return _object(raw, "request body")


def _string(obj: dict[str, Any], key: str, default: str = "") -> str:
    value = obj.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadPreheatRequest(f"{key} must be a string")
    return value


def _header_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return ",".join(value)  # one header, several values
    return orjson.dumps(value).decode()


def _headers(obj: dict[str, Any]) -> dict[str, str]:
    raw = obj.get("headers")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadPreheatRequest("headers must be an object")
    headers: dict[str, str] = {}
    for name, value in raw.items():
        text = _header_value(value)
        if name and text is not None:
            headers[str(name)] = text
    return headers


def _type_and_url(obj: dict[str, Any]) -> tuple[str, str]:
    kind = _string(obj, "type")
    if kind.lower() not in TYPES:
        raise BadPreheatRequest(f"{kind} isn't supported")
    url = _string(obj, "url").strip()
    if len(url) < 3:
        raise BadPreheatRequest("url is required")
    if not has_usable_host(url):
        raise BadPreheatRequest(f"url {url!r} has an invalid host")
    return kind.lower(), url


def parse_legacy(body: bytes) -> PreheatRequest:
    """``POST /preheats`` (PROTOCOL §6.4; Dragonfly2's compat endpoint also takes filteredQueryParams)."""
    obj = _decode(body)
    kind, url = _type_and_url(obj)
    return PreheatRequest(
        type=kind, url=url, filter=_string(obj, "filter") or _string(obj, "filteredqueryparams"),
        identifier=_string(obj, "identifier"), headers=_headers(obj),
    )


def _non_negative_int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0 \
            or value != int(value):
        raise BadPreheatRequest(f"{key} must be a non-negative integer")
    return int(value)


def parse_oapi(body: bytes) -> tuple[PreheatRequest, dict[str, Any]]:
    """``POST /oapi/v1/jobs`` (HARBOR.md §3): the request, and the args to echo back in the job."""
    obj = _decode(body)
    job_type = _string(obj, "type")
    if job_type != "preheat":
        raise BadPreheatRequest(f"job type {job_type!r} is not supported (only preheat)")
    args = _object(obj.get("args"), "args")
    kind, url = _type_and_url(args)
    count = _non_negative_int(args, "concurrent_count")
    if count > MAX_CONCURRENT_COUNT:
        raise BadPreheatRequest(f"concurrent_count must be at most {MAX_CONCURRENT_COUNT}")
    timeout_ns = _non_negative_int(args, "timeout")  # Go time.Duration: integer nanoseconds
    if timeout_ns > MAX_TIMEOUT_NS:
        raise BadPreheatRequest(f"timeout must be at most {MAX_TIMEOUT_NS} ns (7 days)")
    ids = obj.get("scheduler_cluster_ids")
    if ids is not None and not (
        isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids)
    ):
        raise BadPreheatRequest("scheduler_cluster_ids must be a list of non-negative integers")
    headers = _headers(args)
    request = PreheatRequest(
        type=kind, url=url, filter=_string(args, "filtered_query_params"),
        # Dragonfly2's "tag" tells apart tasks of one URL, as the legacy identifier did.
        identifier=_string(args, "tag"), headers=headers, platform=_string(args, "platform").strip(),
        username=_string(args, "username"), password=_string(args, "password"),
        timeout_seconds=timeout_ns / NANOSECONDS, concurrency=count,
    )
    echoed = {
        "type": kind, "url": url, "tag": request.identifier, "filtered_query_params": request.filter,
        "headers": {name: "***" if name.lower() == "authorization" else value for name, value in headers.items()},
        "scope": _string(args, "scope"), "platform": request.platform, "concurrent_count": count,
        "timeout": timeout_ns,
    }
    return request, echoed
