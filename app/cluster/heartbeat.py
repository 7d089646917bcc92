"""Replica presence: every replica announces itself in Redis so that any replica can list them all.

``df:replica:{id}`` holds the replica's self-description with a TTL of three heartbeats, so a replica
that dies (SIGKILL, lost host) drops out of ``/api/v1/cluster`` within three intervals; ``df:replicas``
indexes the ids and is pruned by readers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time

import orjson
import redis.asyncio as aioredis

from app.core.config import Settings
from app.core.process import ProcessRole
from app.core.redis import OutageLog, is_outage
from app.peers.service import PeerService
from app.state import schema

log = logging.getLogger("app.cluster")


def replica_id(settings: Settings, pid: int | None = None) -> str:
    return f"{socket.gethostname()}-{pid or os.getpid()}-{settings.port}"


class ReplicaPresence:
    """One per replica, in its primary worker (app.core.process): the id names the replica's main
    process, so a restarted worker keeps announcing the same replica."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, role: ProcessRole | None = None) -> None:
        self.redis = redis
        self.settings = settings
        self.role = role or ProcessRole()
        self.id = replica_id(settings, self.role.replica_pid)
        self.started_ms = int(time.time() * 1000)

    @property
    def ttl_ms(self) -> int:
        return int(self.settings.replica_heartbeat_seconds * 3 * 1000)

    def describe(self) -> dict[str, object]:
        s = self.settings
        return {
            "id": self.id, "hostName": socket.gethostname(), "pid": self.role.replica_pid,
            "workers": self.role.count, "advertiseIp": s.advertise_ip,
            "listen": s.listen, "port": s.port, "downloadPort": s.download_port, "version": s.version,
            "mode": "embedded" if s.embedded else "cluster", "started": self.started_ms,
        }

    async def beat(self) -> None:
        now = int(time.time() * 1000)
        record = self.describe() | {"heartbeat": now}
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(schema.replica_key(self.id), orjson.dumps(record), px=self.ttl_ms)
            pipe.zadd(schema.REPLICAS, {self.id: now})
            await pipe.execute()

    async def leave(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(schema.replica_key(self.id))
            pipe.zrem(schema.REPLICAS, self.id)
            await pipe.execute()

    async def start(self) -> None:
        """First heartbeat and the seed cache's peer record, before the replica takes requests."""
        try:
            await PeerService(self.redis, self.settings).ensure_cdn_peer(socket.gethostname())
            await self.beat()
        except Exception as exc:
            # Redis may be failing over; the loop keeps trying, and dfget traffic does not wait for it.
            if is_outage(exc):
                log.warning("replica %s: first heartbeat failed, Redis unavailable (%s); the loop retries",
                            self.id, type(exc).__name__)
            else:
                log.exception("replica %s: first heartbeat failed", self.id)

    async def run(self) -> None:
        """Heartbeat until cancelled (lifespan shutdown), then leave the list at once."""
        outage = OutageLog(log, f"replica {self.id}: heartbeat")
        try:
            while True:
                await asyncio.sleep(self.settings.replica_heartbeat_seconds)
                try:
                    await self.beat()
                except Exception as exc:  # the loop must outlive any outage
                    outage.failed(exc)
                else:
                    outage.succeeded()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.leave())
