"""Property tests of every wire parser (issue 7 finding 6): on any bytes or text, a parser returns a
parsed request or raises its one validation error, nothing else. Pure functions, no I/O; each test is
bounded (max_examples, no example database) so the module runs in a few seconds."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from app.cdn.source import convert_headers, request_headers
from app.preheat.model import PreheatRequest
from app.preheat.requests import BadPreheatRequest, parse_legacy, parse_oapi
from app.preheat.webhook import PushEvent, WebhookError, parse_event
from app.protocol import wire
from app.protocol.pieces import parse_range, piece_num_of_range
from app.protocol.taskid import task_id

BOUNDED = hypothesis_settings(max_examples=300, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.too_slow])

# Text that hits the corners found by hand: Unicode digits, IDNA-invalid A-labels, huge numbers.
TRICKY = st.sampled_from(["²-³", "١٢-٣", "xn--zz--.com", "9" * 4301, "0-" + "9" * 4301, "-1", "1e300", "", " 1",
                          "http://xn--zz--.com/x", "http://[::1/x", "http://a:99999/x", "Content-Length", "Ü"])
TEXT = st.one_of(st.text(max_size=64), TRICKY)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=5),
                    max_leaves=20)
REGISTER_KEYS = ["superNodeIp", "rawUrl", "taskUrl", "cid", "ip", "hostName", "port", "path", "version", "md5",
                 "identifier", "callSystem", "headers", "dfdaemon"]
HEADERS = st.lists(st.one_of(TEXT, st.builds(lambda n, v: f"{n}:{v}", TEXT, TEXT)), max_size=5)
REGISTRATION = st.fixed_dictionaries({}, optional={
    **{key: JSON for key in REGISTER_KEYS},
    "rawUrl": st.one_of(TEXT, st.just("http://127.0.0.1/f"), st.builds(lambda h: f"http://{h}/x", TEXT)),
    "ip": st.one_of(TEXT, st.just("127.0.0.1")), "cid": TEXT, "path": TEXT, "headers": st.one_of(HEADERS, JSON),
})
QUERY = st.dictionaries(st.sampled_from(["srcCid", "dstCid", "range", "result", "status", "taskId"]), TEXT)


def body_of(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)


@BOUNDED
@given(body=st.one_of(st.binary(max_size=256), JSON.map(body_of), REGISTRATION.map(body_of)),
       content_type=st.sampled_from(["application/json", "application/x-www-form-urlencoded", "", "text/plain"]))
def test_registration_bodies_parse_or_raise_wire_error(body: bytes, content_type: str) -> None:
    try:
        request = wire.parse_register(wire.decode_body(body, content_type))
    except wire.WireError:
        return
    assert isinstance(request, wire.RegisterRequest)
    # What the bridge does next with an accepted request must not raise either.
    headers = convert_headers(request.header_entries)
    request_headers(headers, {"Range": "bytes=0-1"})
    task_id(request.task_url or request.raw_url, request.md5, request.identifier, headers)


@BOUNDED
@given(query=QUERY)
def test_pull_queries_parse_or_raise_wire_error(query: dict[str, str]) -> None:
    try:
        request = wire.parse_pull(query)
    except wire.WireError:
        return
    assert isinstance(request, wire.PullRequest) and -(2**63) <= request.status < 2**63


@BOUNDED
@given(value=st.one_of(TEXT, st.builds(lambda a, b: f"{a}-{b}", TEXT, TEXT)))
def test_ranges_parse_to_ascii_int64_pairs_or_none(value: str) -> None:
    parsed = parse_range(value)
    number = piece_num_of_range(value)
    if parsed is None:
        assert number == -1
        return
    start, end = parsed
    assert 0 <= start <= end < 10**19 and number >= 0


@BOUNDED
@given(entries=HEADERS)
def test_registration_headers_always_make_sendable_requests(entries: list[str]) -> None:
    sent = request_headers(convert_headers(entries))
    for name in sent:
        assert name.lower() not in {"content-length", "transfer-encoding", "connection", "host", "te", "upgrade"}


def preheat_bodies() -> st.SearchStrategy[bytes]:
    args = st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["file", "image", "FILE", ""]) | TEXT,
        "url": st.one_of(TEXT, st.just("http://127.0.0.1/f"), st.just("http://xn--zz--.com/x")),
        "headers": JSON, "timeout": SCALARS, "concurrent_count": SCALARS, "tag": JSON, "filter": JSON,
        "identifier": JSON, "platform": JSON, "scope": JSON,
    })
    job = st.fixed_dictionaries({}, optional={"type": st.sampled_from(["preheat", "sync_peers"]) | TEXT,
                                              "args": args | JSON, "scheduler_cluster_ids": JSON})
    return st.one_of(st.binary(max_size=256), JSON.map(body_of), args.map(body_of), job.map(body_of))


@BOUNDED
@given(body=preheat_bodies())
def test_legacy_preheat_bodies_parse_or_raise_bad_request(body: bytes) -> None:
    try:
        request = parse_legacy(body)
    except BadPreheatRequest:
        return
    assert isinstance(request, PreheatRequest)
    request.preheat_id  # noqa: B018 (the id of an accepted request can be computed)


@BOUNDED
@given(body=preheat_bodies())
def test_open_api_jobs_parse_or_raise_bad_request(body: bytes) -> None:
    try:
        request, echoed = parse_oapi(body)
    except BadPreheatRequest:
        return
    assert isinstance(request, PreheatRequest)
    orjson.dumps(echoed)  # the job's args are echoed back: they must serialize (timeout: 1e300 did not)


@BOUNDED
@given(body=st.one_of(
    st.binary(max_size=256), JSON.map(body_of),
    st.builds(lambda kind, resources, repo: body_of({"type": kind, "event_data": {
        "resources": resources, "repository": {"repo_full_name": repo}}}),
        st.sampled_from(["PUSH_ARTIFACT", "DELETE_ARTIFACT"]), st.lists(JSON, max_size=4) | JSON, TEXT),
))
def test_webhook_payloads_parse_or_raise_webhook_error(body: bytes) -> None:
    try:
        event = parse_event(body, "https")
    except WebhookError:
        return
    assert event is None or isinstance(event, PushEvent)
