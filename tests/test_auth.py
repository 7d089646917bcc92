"""Auth of the REST/admin API, the audit actor, the cluster-mode start check and the dfget allowlist.

Mutating routes are enumerated from the app itself, so a route added later is covered without edits.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from app.api.allowlist import allowed, parse_networks
from app.api.auth import InsecureApiError
from app.api.errors import is_dfget_path
from app.api.route_index import MUTATING_GET, OWN_AUTH, flat_routes
from app.audit.events import decode_event
from app.core.config import Settings
from app.main import create_app
from app.state.schema import AUDIT_STREAM
from tests.cluster import TEST_TOKEN
from tests.live import live_supernode

MUTATING_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


Trail = list[tuple[str, str, str, str]]  # (actor, action, target, source ip), oldest first


async def audit_trail(http: httpx.AsyncClient, redis: Redis, complete: Callable[[Trail], bool]) -> Trail:
    """The audit events, wherever they are on their way: still buffered in the ``df:audit`` stream
    (decoded with decode_event), or already moved to the database by the audit consumer (read back
    through ``/api/v1/audit``). Keyed by stream id, so an event caught in both places counts once;
    the stream is read first, and the consumer commits before it deletes, so none slips between."""
    trail: Trail = []
    for _ in range(200):
        events: dict[str, tuple[str, str, str, str]] = {}
        for entry_id, fields in await redis.xrange(AUDIT_STREAM):
            e = decode_event(fields)
            events[entry_id] = (e.actor, e.action, e.target, e.source_ip)
        stored = await http.get("/api/v1/audit?limit=1000", headers=AUTH)
        if stored.status_code == 200:
            for e in stored.json()["events"]:
                events[e["streamId"]] = (e["actor"], e["action"], e["target"], e["sourceIp"])
        trail = [events[i] for i in sorted(events, key=lambda i: tuple(map(int, i.split("-"))))]
        if complete(trail):
            return trail
        await asyncio.sleep(0.05)
    return trail


def mutating_routes(settings: Settings) -> list[tuple[str, str]]:
    """(method, concrete path) of every route that changes something, dfget's own API excepted."""
    found = []
    for route in flat_routes(create_app(settings).routes):
        extra = getattr(route.route, "openapi_extra", None) or {}
        if is_dfget_path(route.path) or extra.get(OWN_AUTH):
            continue  # OWN_AUTH routes answer auth errors in another product's shape, tested where it says
        marked = bool(extra.get(MUTATING_GET))
        for method in sorted(route.methods & MUTATING_METHODS | ({"GET"} if marked else set())):
            # Any syntactically valid value: auth is decided before the id is looked at.
            path = re.sub(r"\{[^}]+\}", lambda m: "0" * 64 if m.group(0) == "{id}" else "0-1", route.path)
            found.append((method, path))
    return found


def test_the_enumeration_finds_the_known_mutating_routes(settings: Settings) -> None:
    routes = mutating_routes(settings)
    zero = "0" * 64
    assert {("POST", "/peers"), ("POST", "/api/v1/peers"), ("DELETE", f"/peers/{zero}"),
            ("DELETE", f"/api/v1/peers/{zero}"), ("DELETE", f"/api/v1/tasks/{zero}"),
            ("GET", f"/api/v1/tasks/{zero}/pieces/0-1/error")} <= set(routes)
    assert not any(path.startswith("/peer/") or path == "/task/metrics" for _, path in routes)


async def test_every_mutating_route_refuses_a_missing_and_a_wrong_token(settings: Settings) -> None:
    routes = mutating_routes(settings)
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        for method, path in routes:
            missing = await http.request(method, path, json={})
            assert missing.status_code == 401, (method, path, missing.text)
            assert missing.json() == {"code": 401, "message": "missing Authorization: Bearer <token>"}
            assert missing.headers["www-authenticate"] == "Bearer"
            for wrong in ("Bearer nope", "Bearer " + TEST_TOKEN[:-1], "Basic " + base64.b64encode(b"x:y").decode()):
                refused = await http.request(method, path, json={}, headers={"Authorization": wrong})
                assert refused.status_code == 403, (method, path, wrong, refused.text)
                assert refused.json() == {"code": 403, "message": "invalid token"}


@pytest.mark.parametrize("path", ["/api/v1/tasks", "/api/v1/peers", "/peers", "/api/v1/cluster", "/api/v1/"])
async def test_read_routes_need_a_token_unless_public(settings: Settings, path: str) -> None:
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        closed = await http.get(path)
        wrong = await http.get(path, headers={"Authorization": "Bearer nope"})
        with_token = await http.get(path, headers=AUTH)
    async with live_supernode(settings.model_copy(update={"public_read_api": True})) as sn:
        async with httpx.AsyncClient(base_url=sn.api) as http:
            public = await http.get(path)
            public_write = await http.post("/api/v1/peers", json={"IP": "10.0.0.1", "hostName": "h"})
    assert (closed.status_code, wrong.status_code, with_token.status_code) == (401, 403, 200)
    assert public.status_code == 200 and public_write.status_code == 401


async def test_the_audit_actor_is_the_token_name(settings: Settings, redis: Redis) -> None:
    two = settings.model_copy(update={"api_tokens": f"tests:{TEST_TOKEN},ops:ops-token-9876543210"})
    async with live_supernode(two) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        created = await http.post("/api/v1/peers", json={"IP": "10.0.0.1", "hostName": "h"}, headers=AUTH)
        peer_id = created.json()["ID"]
        # Harbor's BASIC mode: the password part is the token.
        basic = "Basic " + base64.b64encode(b"anything:ops-token-9876543210").decode()
        assert (await http.delete(f"/peers/{peer_id}", headers={"Authorization": basic})).status_code == 200
        assert (await http.delete(f"/api/v1/tasks/{'0' * 64}", headers=AUTH)).status_code == 404
        trail = await audit_trail(http, redis, lambda t: len([e for e in t if e[1].startswith("peer.")]) >= 2)
    assert [e for e in trail if e[1].startswith("peer.")] == [
        ("tests", "peer.created", peer_id, "127.0.0.1"), ("ops", "peer.deleted", peer_id, "127.0.0.1")]
    assert not [e for e in trail if e[1] == "task.deleted"]  # nothing changed, nothing recorded


async def test_tokens_never_reach_the_logs(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with live_supernode(settings) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        await http.get("/api/v1/tasks", headers=AUTH)
        await http.get("/api/v1/tasks", headers={"Authorization": "Bearer wrong-secret-value"})
    assert TEST_TOKEN not in caplog.text and "wrong-secret-value" not in caplog.text


def test_cluster_mode_refuses_to_start_without_tokens(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    open_cluster = settings.model_copy(update={"api_tokens": ""})
    with pytest.raises(InsecureApiError, match="DF_API_TOKENS"):
        create_app(open_cluster)
    assert "refusing to start" in caplog.text and "DF_INSECURE_OPEN_API" in caplog.text
    create_app(open_cluster.model_copy(update={"insecure_open_api": True}))
    create_app(open_cluster.model_copy(update={"redis_url": ""}))  # embedded: open by default


async def test_an_explicitly_open_cluster_api_audits_anonymous(settings: Settings, redis: Redis) -> None:
    open_cluster = settings.model_copy(update={"api_tokens": "", "insecure_open_api": True})
    async with live_supernode(open_cluster) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        created = await http.post("/peers", json={"IP": "10.0.0.1", "hostName": "h"})
        trail = await audit_trail(http, redis, lambda t: any(e[1] == "peer.created" for e in t))
    assert created.status_code == 201
    assert [e[0] for e in trail if e[1] == "peer.created"] == ["anonymous"]


# --- dfget allowlist -----------------------------------------------------------------------------------

DFGET_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/peer/registry", {"json": {}}),
    ("GET", "/peer/task?taskId=x&srcCid=y&status=700", {}),
    ("GET", "/v1.0/peer/piece/suc?taskId=x", {}),
    ("GET", "/peer/piece/error", {}),
    ("GET", "/peer/service/down", {}),
    ("POST", "/task/metrics", {"json": {}}),
]


async def test_the_dfget_allowlist_refuses_other_networks(settings: Settings) -> None:
    elsewhere = settings.model_copy(update={"dfget_allowlist": "10.0.0.0/8, 192.168.1.7"})
    async with live_supernode(elsewhere) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        refused = [await http.request(method, path, **kw) for method, path, kw in DFGET_CALLS]
        ping = await http.get("/_ping")
        rest = await http.get("/api/v1/tasks", headers=AUTH)
    for answer in refused:
        assert answer.status_code == 403
        assert answer.json() == {"code": 403, "message": "client 127.0.0.1 is not allowed to use the dfget API"}
    assert ping.status_code == 200 and rest.status_code == 200


async def test_the_dfget_allowlist_admits_its_networks(settings: Settings) -> None:
    loopback = settings.model_copy(update={"dfget_allowlist": "127.0.0.0/8"})
    async with live_supernode(loopback) as sn, httpx.AsyncClient(base_url=sn.api) as http:
        answers = [await http.request(method, path, **kw) for method, path, kw in DFGET_CALLS]
    assert [a.status_code for a in answers] == [200] * len(DFGET_CALLS)


def test_allowlist_parsing_and_matching() -> None:
    networks = parse_networks("10.0.0.0/8,, 192.168.1.7 ,fd00::/8")
    assert allowed("10.1.2.3", networks) and allowed("192.168.1.7", networks) and allowed("fd00::1", networks)
    assert allowed("::ffff:10.0.0.1", networks)  # an IPv4 client on a dual-stack socket
    assert not allowed("192.168.1.8", networks) and not allowed("", networks) and not allowed("x", networks)
    with pytest.raises(ValueError, match=re.escape("'10.0.0.0/33' is not a CIDR")):
        parse_networks("10.0.0.0/33")


def test_a_bad_allowlist_fails_at_start(settings: Settings) -> None:
    with pytest.raises(ValueError, match="DF_DFGET_ALLOWLIST"):
        create_app(settings.model_copy(update={"dfget_allowlist": "not-a-network"}))
