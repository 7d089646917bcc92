"""The preheat's view of the cluster state: seed tasks without a dfget peer, and the cluster-wide
semaphore that bounds preheat seeds."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import orjson
from redis.commands.core import AsyncScript

from app.bridge.registration import probe_geometry
from app.protocol.pieces import piece_size_for, provisional_piece_total
from app.state import schema
from app.state.scripts import script_source
from app.state.store import ClusterState, now_ms

CALL_SYSTEM = "dragonfly_preheat"  # what the legacy supernode's preheat dfget passed (§13.2)


@dataclass(frozen=True)
class EnsureOutcome:
    result: str  # "ok", "refused" (the source refused the probe), "conflict"
    cdn_status: str = ""
    seed_epoch: int = 0  # > 0: the caller started the task's one seed job and must run it
    message: str = ""


@dataclass(frozen=True)
class TaskSnapshot:
    status: str  # cdnStatus, "" when the task does not exist
    seeded_bytes: int
    length: int  # httpFileLength (-1 unknown)
    raw_length: int  # final length once SUCCESS
    error: str
    lease_ms: int

    @property
    def stale(self) -> bool:
        """A RUNNING seed whose seeder stopped renewing: the next caller restarts it."""
        return self.status == schema.CdnStatus.RUNNING and now_ms() > self.lease_ms


class PreheatTasks:
    def __init__(self, state: ClusterState) -> None:
        self.state = state
        self._ensure: AsyncScript = state.redis.register_script(script_source("ensure_task"))
        self._slot: AsyncScript = state.redis.register_script(script_source("preheat_slot"))

    async def snapshot(self, tid: str) -> TaskSnapshot:
        status, seeded, length, raw_length, error, lease = await self.state.redis.hmget(
            schema.task_key(tid), ["cdnStatus", "seedBytes", "httpFileLength", "rawLength", "seedError", "seedLease"]
        )
        return TaskSnapshot(
            status=str(status or ""), seeded_bytes=int(seeded or 0), length=int(length if length else -1),
            raw_length=int(raw_length or -1), error=str(error or ""), lease_ms=int(lease or 0),
        )

    async def ensure(
        self,
        client: httpx.AsyncClient,
        tid: str,
        task_url: str,
        raw_url: str,
        identifier: str,
        headers: dict[str, str],
        retry_seconds: float,
    ) -> EnsureOutcome:
        """Create the task (after the shared once-per-task probe) and trigger its seed, as a registration would."""
        refused = await self.state.unreachable_reason(tid)
        if refused is not None:
            return EnsureOutcome("refused", message=refused)
        out = await self._run_ensure(tid, task_url, raw_url, identifier, headers, None, retry_seconds)
        if out.result == "unprobed":
            geometry = await probe_geometry(self.state.settings, self.state, client, tid, raw_url, headers)
            if isinstance(geometry, str):
                return EnsureOutcome("refused", message=geometry)
            out = await self._run_ensure(tid, task_url, raw_url, identifier, headers, geometry, retry_seconds)
        return out

    async def _run_ensure(
        self,
        tid: str,
        task_url: str,
        raw_url: str,
        identifier: str,
        headers: dict[str, str],
        length: int | None,
        retry_seconds: float,
    ) -> EnsureOutcome:
        s = self.state.settings
        piece_size = piece_size_for(length) if length is not None else 0
        total = provisional_piece_total(length, piece_size) if length is not None else 0
        out = await self.state.run_task_script(
            self._ensure, tid, tid, task_url, raw_url, identifier, orjson.dumps(headers),
            "" if length is None else length, piece_size, total, int(s.seed_lease_seconds * 1000),
            int(retry_seconds * 1000), CALL_SYSTEM,
        )
        if out["result"] == "conflict":
            return EnsureOutcome("conflict", message=f"task {tid} exists with another url, md5 or identifier")
        return EnsureOutcome(out["result"], out.get("cdnStatus", ""), int(out.get("seedEpoch") or 0))

    # --- the cluster-wide preheat seed semaphore -------------------------------------------------------

    async def acquire_slot(self, member: str, limit: int, lease_seconds: float) -> bool:
        return bool(await self._slot_op("acquire", member, limit, lease_seconds))

    async def renew_slot(self, member: str, limit: int, lease_seconds: float) -> bool:
        return bool(await self._slot_op("renew", member, limit, lease_seconds))

    async def release_slot(self, member: str) -> None:
        await self.state.redis.zrem(schema.PREHEAT_SLOTS, member)

    async def _slot_op(self, op: str, member: str, limit: int, lease_seconds: float) -> int:
        result: int = await self._slot(
            keys=[schema.PREHEAT_SLOTS],
            args=["", 0, int(time.time() * 1000), op, member, limit, int(lease_seconds * 1000)],
        )
        return result
