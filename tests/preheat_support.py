"""Helpers shared by the preheat tests: Harbor's polling loops and the seed-cache payload check."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from redis.asyncio import Redis

from app.audit.events import decode_event
from app.cdn.storage import LocalSeedStorage
from app.protocol.pieces import header_data_len
from app.state.schema import AUDIT_STREAM
from tests.cluster import TEST_TOKEN

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
# What Harbor's provider client sends on every call (HARBOR.md §1), with auth mode OAUTH.
HARBOR_HEADERS = {**AUTH, "Accept": "application/json"}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
POLL_SECONDS = 0.1  # Harbor polls every 10 s; tests do not wait that long


async def poll_legacy(http: httpx.AsyncClient, pid: str, path: str = "/preheats", within: float = 60.0,
                      until: tuple[str, ...] = ("SUCCESS", "FAIL", "FAILED")) -> dict[str, Any]:
    """Harbor 2.1–2.11's CheckProgress loop: GET until a final status (any HTTP error ends Harbor's job)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        answer = await http.get(f"{path}/{pid}", headers=HARBOR_HEADERS)
        assert answer.status_code == 200, answer.text
        info: dict[str, Any] = answer.json()
        if info["status"] in until:
            return info
        assert asyncio.get_running_loop().time() < deadline, f"preheat {pid} never finished: {info}"
        await asyncio.sleep(POLL_SECONDS)


async def poll_oapi(http: httpx.AsyncClient, job_id: int, within: float = 60.0) -> dict[str, Any]:
    """Harbor 2.12+'s loop: GET /oapi/v1/jobs/{id} while the state is PENDING."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        answer = await http.get(f"/oapi/v1/jobs/{job_id}", headers=HARBOR_HEADERS)
        assert answer.status_code == 200, answer.text
        job: dict[str, Any] = answer.json()
        assert job["state"] in ("PENDING", "SUCCESS", "FAILURE"), job  # anything else fails Harbor's job
        if job["state"] != "PENDING":
            return job
        assert asyncio.get_running_loop().time() < deadline, f"job {job_id} never finished: {job}"
        await asyncio.sleep(POLL_SECONDS)


def seeded_payload(seed_dir: Path, tid: str) -> bytes:
    """The raw bytes of a seeded task: strip each framed piece's 4-byte header and 1-byte trailer."""
    storage = LocalSeedStorage(seed_dir)
    meta = storage.read_meta(tid)
    assert meta is not None and meta.get("success"), f"task {tid} has no successful seed: {meta}"
    piece_size = int(meta["pieceSize"])
    framed = storage.data_path(tid).read_bytes()
    payload = bytearray()
    for offset in range(0, len(framed), piece_size):
        length = header_data_len(framed[offset : offset + 4])
        assert framed[offset + 4 + length] == 0x7F, f"piece at {offset} of {tid} has no trailer"
        payload += framed[offset + 4 : offset + 4 + length]
    return bytes(payload)


def assert_seeded(seed_dir: Path, tid: str, digest: str) -> None:
    payload = seeded_payload(seed_dir, tid)
    assert "sha256:" + hashlib.sha256(payload).hexdigest() == digest, f"seed of {tid} does not match {digest}"


def harbor_legacy_body(url: str, image: str, tag: str, digest: str, registry_token: str) -> bytes:
    """Exactly what Harbor's enforcer marshals for the legacy driver (HARBOR.md §2 (b))."""
    return orjson.dumps({"type": "image", "url": url, "headers": {"Authorization": f"Bearer {registry_token}"},
                         "image": image, "tag": tag, "digest": digest})


def harbor_oapi_body(url: str, registry_token: str, scope: str = "single_seed_peer") -> bytes:
    """Exactly what Harbor 2.12+ marshals (HARBOR.md §3): no omitempty, timeout in nanoseconds."""
    return orjson.dumps({"type": "preheat",
                         "args": {"type": "image", "url": url, "tag": "", "filtered_query_params": "",
                                  "headers": {"Authorization": f"Bearer {registry_token}"}, "scope": scope,
                                  "concurrent_count": 0, "timeout": 0},
                         "scheduler_cluster_ids": None})


Event = dict[str, Any]  # actor, action, outcome, target, detail


async def audit_trail(http: httpx.AsyncClient, redis: Redis, complete: Callable[[list[Event]], bool]) -> list[Event]:
    """Audit events wherever they are on their way: still in the ``df:audit`` stream (decode_event) or
    already moved to the database by the audit consumer (``/api/v1/audit``); keyed by stream id."""
    trail: list[Event] = []
    for _ in range(200):
        events: dict[str, Event] = {}
        for entry_id, fields in await redis.xrange(AUDIT_STREAM):
            e = decode_event(fields)
            events[entry_id] = {"actor": e.actor, "action": e.action, "outcome": e.outcome, "target": e.target,
                                "detail": e.detail}
        stored = await http.get("/api/v1/audit?limit=1000", headers=AUTH)
        if stored.status_code == 200:
            for e in stored.json()["events"]:
                events[e["streamId"]] = {"actor": e["actor"], "action": e["action"], "outcome": e["outcome"],
                                         "target": e["target"], "detail": e["detail"]}
        trail = [events[i] for i in sorted(events, key=lambda i: tuple(map(int, i.split("-"))))]
        if complete(trail):
            return trail
        await asyncio.sleep(0.05)
    return trail


def at_least(action: str, count: int = 1) -> Callable[[list[Event]], bool]:
    return lambda trail: sum(e["action"] == action for e in trail) >= count
