"""The cluster-wide peer list (PROTOCOL §6.2) over ``df:peers``.

A record is written by every registration (register.lua), by ``POST /peers``, and once for the seed
cache itself (``cdn_peer.lua``). Records are JSON ``{ID, IP, hostName, port, version, created (ms),
cid, taskId}``, plus ``cdn: true`` for the seed cache's.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from app.core.config import Settings
from app.core.timefmt import rfc3339_ms
from app.observability import legacy
from app.peers.models import PeerCreate, PeerInfo, PeerTask, PeerView
from app.state import schema
from app.state.scripts import script_source

log = logging.getLogger("app.peers")


def _record(raw: str | None) -> dict[str, Any] | None:
    try:
        loaded = orjson.loads(raw or "")
    except orjson.JSONDecodeError:
        return None
    return loaded if isinstance(loaded, dict) and loaded.get("ID") else None


def peer_info(record: dict[str, Any]) -> PeerInfo:
    return PeerInfo(
        ID=str(record["ID"]),
        IP=str(record.get("IP", "")),
        created=rfc3339_ms(int(record.get("created") or 0)),
        hostName=str(record.get("hostName", "")),
        port=int(record.get("port") or 0),
        version=str(record.get("version") or "") or None,
    )


def paginate(records: list[dict[str, Any]], page_num: int, page_size: int, descending: bool) -> list[dict[str, Any]]:
    """Go's GetPageValues: sort by creation, then page; pageSize 0 means everything."""
    ordered = sorted(records, key=lambda r: (int(r.get("created") or 0), str(r["ID"])), reverse=descending)
    if page_size == 0:
        return ordered
    return ordered[page_num * page_size : (page_num + 1) * page_size]


class PeerService:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings

    async def records(self) -> list[dict[str, Any]]:
        raw: dict[str, str] = await self.redis.hgetall(schema.PEERS)  # type: ignore[assignment]
        return [record for record in map(_record, raw.values()) if record is not None]

    async def get(self, peer_id: str) -> dict[str, Any] | None:
        raw: str | None = await self.redis.hget(schema.PEERS, peer_id)  # type: ignore[assignment]
        return _record(raw)

    async def create(self, body: PeerCreate) -> str:
        now_ns = time.time_ns()
        peer_id = f"{body.hostname}-{body.ip}-{now_ns}"
        record = {"ID": peer_id, "IP": body.ip, "hostName": body.hostname, "port": body.port,
                  "version": body.version, "created": now_ns // 1_000_000, "cid": "", "taskId": ""}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(schema.PEERS, peer_id, orjson.dumps(record))
            # Pruned after the task TTL like registrations' records (register.lua).
            pipe.zadd(schema.PEERS_SEEN, {peer_id: now_ns // 1_000_000})
            await pipe.execute()
        return peer_id

    async def delete(self, peer_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(schema.PEERS, peer_id)
            pipe.zrem(schema.PEERS_SEEN, peer_id)
            removed, _ = await pipe.execute()
        if removed:
            legacy.gc_peers.inc()
        return bool(removed)

    async def ensure_cdn_peer(self, host_name: str) -> str:
        """The seed cache's peer record for this replica's advertise address (one per address)."""
        s = self.settings
        now_ns = time.time_ns()
        peer_id = f"{host_name}-{s.advertise_ip}-{now_ns}"
        record = {"ID": peer_id, "IP": s.advertise_ip, "hostName": host_name, "port": s.piece_port,
                  "created": now_ns // 1_000_000, "cdn": True}
        script = self.redis.register_script(script_source("cdn_peer"))
        keys = [schema.cdn_peer_key(s.advertise_ip, s.piece_port), schema.PEERS]
        return str(await script(keys=keys, args=["", 0, now_ns // 1_000_000, peer_id, orjson.dumps(record)]))

    async def cid_in_task(self, peer_id: str, tid: str) -> str | None:
        """The cid a peer id registered for a task (the REST piece-error body names peers, not cids)."""
        record = await self.get(peer_id)
        if record is None or record.get("taskId") != tid:
            return None
        return str(record.get("cid") or "") or None

    async def views(self, records: list[dict[str, Any]]) -> list[PeerView]:
        """PeerInfo plus the peer's current tasks and bytes served.

        A dfget uploader (one IP:port) gets a new peer id for every download it registers, so the tasks
        of a peer are those of every record with the same IP and port whose state still exists.
        """
        everything = await self.records()
        by_uploader: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for record in everything:
            if record.get("cid") and record.get("taskId"):
                by_uploader.setdefault((str(record.get("IP")), int(record.get("port") or 0)), []).append(record)
        wanted = {(str(r.get("IP")), int(r.get("port") or 0)) for r in records if not r.get("cdn")}
        members = [m for key in wanted for m in by_uploader.get(key, [])]
        async with self.redis.pipeline(transaction=False) as pipe:
            for m in members:
                pipe.hmget(schema.dt_key(str(m["taskId"]), str(m["cid"])),
                           ["status", "down", "servedPieces", "servedBytes"])
            replies: list[list[str | None]] = await pipe.execute()
        tasks: dict[tuple[str, int], list[PeerTask]] = {}
        for m, (status, down, pieces, served) in zip(members, replies, strict=True):
            if status is None:  # the task's state has expired or was deleted
                continue
            tasks.setdefault((str(m.get("IP")), int(m.get("port") or 0)), []).append(
                PeerTask(taskId=str(m["taskId"]), cid=str(m["cid"]), peerId=str(m["ID"]), status=status,
                         down=down == "1", servedPieces=int(pieces or 0), servedBytes=int(served or 0))
            )
        views = []
        for record in records:
            own = [] if record.get("cdn") else tasks.get((str(record.get("IP")), int(record.get("port") or 0)), [])
            info = peer_info(record)
            views.append(
                PeerView(**info.model_dump(), seedCache=bool(record.get("cdn")), tasks=own,
                         servedPieces=sum(t.servedPieces for t in own), servedBytes=sum(t.servedBytes for t in own))
            )
        return views
