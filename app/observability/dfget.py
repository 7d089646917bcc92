"""The legacy counters fed by what dfget sends: its download reports (``POST /task/metrics``), its
registrations (``POST /peer/registry``), its piece reports and pulls.

Observed from the outside of the handlers (an ASGI middleware and the instrumentator's callback), so the
dfget path's handlers stay as they are: the middleware keeps a copy of the two POST bodies it already
had to pass through (bounded: bodies over the route limit are refused by that limit anyway) and the
first bytes of the registration's answer, and reads them once the answer is sent. Nothing here can
change or delay an answer: a body it cannot read is simply not counted.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability import legacy, roundtrips
from app.protocol.wire import FIELD_CAPS, is_ipv4, lower_keys

log = logging.getLogger("app.observability.dfget")

CDN_CID_PREFIX = "cdnnode:"  # dstCid of a piece fetched from the seed cache (PROTOCOL samples 04)
REPORT, REGISTRY = "/task/metrics", "/peer/registry"
QUERY_HANDLERS = frozenset({"/peer/task", "/peer/piece/suc"})
_ANSWER_BYTES = 256  # enough for {"code":...}: the code comes first in every registration answer
# callSystem and backsourceReason are free text from any client on the dfget allowlist: past this many
# distinct values per label in one process, new ones are counted as "other" (bounded series).
LABEL_VALUES_LIMIT = 200
OTHER = "other"


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self.seen:
            return value
        if len(self.seen) >= self.limit:
            return OTHER
        self.seen.add(value)
        return value


_call_systems = _Budget(LABEL_VALUES_LIMIT)
_reasons = _Budget(LABEL_VALUES_LIMIT)


def _peer(value: Any, enabled: bool) -> str:
    return value if enabled and isinstance(value, str) and is_ipv4(value) else ""


def _number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and value >= 0
    except OverflowError:  # an int too large for a float
        return False


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return lower_keys(data) if isinstance(data, dict) else None  # Go's decoder ignores key case


def record_report(body: bytes, peer_label: bool) -> bool:
    """Count one ``TaskMetricsRequest`` as the Go supernode did; False (nothing counted) for a body Go
    would refuse: not a JSON object, port outside 15000..65000, empty callSystem, wrong types."""
    data = _json_object(body)
    if data is None:
        return False
    call_system, port = data.get("callsystem", ""), data.get("port", 0)
    duration, length = data.get("duration", 0), data.get("filelength", 0)
    reason, success = data.get("backsourcereason", ""), data.get("success", False)
    if not isinstance(call_system, str) or ("callsystem" in data and not call_system):
        return False
    if len(call_system) > FIELD_CAPS["callsystem"]:
        return False
    if isinstance(port, bool) or not isinstance(port, int) or (port and not 15000 <= port <= 65000):
        return False
    if not (_number(duration) and _number(length)) or not isinstance(reason, str) or not isinstance(success, bool):
        return False
    call_system = _call_systems(call_system)
    peer = _peer(data.get("ip", ""), peer_label)
    legacy.dfget_download_size.labels(call_system, peer)  # a failure first: the success series exist at 0
    legacy.dfget_download_duration.labels(call_system, peer)
    if success:
        legacy.dfget_download_duration.labels(call_system, peer).observe(duration)
        legacy.dfget_download_size.labels(call_system, peer).inc(length)
    else:
        legacy.dfget_download_failed.labels(call_system, peer, _reasons(reason[:64])).inc()
    legacy.dfget_download.labels(call_system, peer).inc()
    return True


def record_registration(body: bytes, answer: bytes) -> bool:
    """Count one registration; failed unless the answer's code is 200 (dfget's success)."""
    data = _json_object(body)
    if data is None:
        return False
    call_system = data.get("callsystem", "")
    call_system = _call_systems(call_system[: FIELD_CAPS["callsystem"]] if isinstance(call_system, str) else "")
    legacy.tasks_registered.inc()
    legacy.dfgettasks_registered.labels(call_system).inc()
    failed = legacy.dfgettasks_failed.labels(call_system)  # the zero exists from the first: rate() needs it
    if _answer_code(answer) != 200:
        failed.inc()
    return True


def _answer_code(answer: bytes) -> int | None:
    try:
        reply = json.loads(answer)
    except (ValueError, UnicodeDecodeError):  # longer than the tap keeps: the code is its first key
        compact = answer.replace(b" ", b"")
        return 200 if compact.startswith(b'{"code":200,') else None
    code = reply.get("code") if isinstance(reply, dict) else None
    return code if isinstance(code, int) else None


def _piece_bytes(piece_range: str) -> int:
    start, sep, end = piece_range.partition("-")
    if not sep or not start.isdigit() or not end.isdigit() or int(end) < int(start):
        return 0
    return int(end) - int(start) + 1


def record_query(handler: str, query: Mapping[str, str], seconds: float, peer_label: bool) -> None:
    """Pulls (``schedule_duration_milliseconds``) and piece reports from the seed cache
    (``pieces_downloaded_size_bytes_total``): their query strings carry all that is needed."""
    if handler == "/peer/task":
        src = query.get("srcCid", "")
        legacy.schedule_duration.labels(_peer(src.split("-", 1)[0], peer_label)).observe(seconds * 1000)
    elif handler == "/peer/piece/suc" and query.get("dstCid", "").startswith(CDN_CID_PREFIX):
        size = _piece_bytes(query.get("pieceRange", ""))
        if size:
            legacy.pieces_downloaded_bytes.inc(size)


class ObserverMiddleware:
    """Starts the request's Redis round-trip count, and taps the two dfget POST bodies.

    Added outside the instrumentator (whose callback reads the round-trip count) and inside the /v1
    prefix stripping (so ``path`` is the route's)."""

    def __init__(self, app: ASGIApp, peer_label: bool, max_body: int) -> None:
        self.app = app
        self.peer_label = peer_label
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trips = roundtrips.start()
        path = scope["path"]
        if scope["method"] != "POST" or path not in (REPORT, REGISTRY):
            try:
                await self.app(scope, receive, send)
            finally:
                roundtrips.finish(trips)
            return
        body, answer = bytearray(), bytearray()
        complete = [False]

        async def tap_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                if len(body) + len(chunk) <= self.max_body:
                    body.extend(chunk)
                    complete[0] = not message.get("more_body", False)
            return message

        async def tap_send(message: Message) -> None:
            if message["type"] == "http.response.body" and len(answer) < _ANSWER_BYTES:
                answer.extend(message.get("body", b"")[: _ANSWER_BYTES - len(answer)])
            await send(message)

        try:
            await self.app(scope, tap_receive, tap_send)
        finally:
            roundtrips.finish(trips)
        if not complete[0]:
            return
        try:
            if path == REPORT:
                record_report(bytes(body), self.peer_label)
            else:
                record_registration(bytes(body), bytes(answer))
        except Exception:  # the answer is sent already: a counting bug must not surface as a server error
            log.warning("could not count a %s body", path, exc_info=True)
