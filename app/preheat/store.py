"""Preheat records and Open API jobs in Redis. Transitions two replicas or runners could race on are
single Lua scripts (``preheat_create``, ``preheat_claim``, ``preheat_update``)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from app.preheat.model import LayerProgress, PreheatRecord, PreheatRequest
from app.state import schema
from app.state.scripts import script_source

RETENTION_SECONDS = 7 * 24 * 3600  # Harbor needs ids queryable for 24 h (HARBOR.md §2 rec. 3)
RUNNER_LEASE_SECONDS = 30.0  # a runner renews every few seconds; silent this long = dead
WAIT_LEASE_SECONDS = 300.0  # a job not picked up by a runner within this is dispatched again


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class CreateOutcome:
    epoch: int  # > 0: this call (re)started the job and must dispatch it with that epoch
    previous: str  # the status before ("" when new)


@dataclass(frozen=True)
class OapiJob:
    id: int
    preheat_id: str
    created_ms: int
    args: dict[str, Any]
    actor: str


class PreheatStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._scripts: dict[str, AsyncScript] = {}

    async def _run(self, name: str, keys: list[str], *args: str | int | float) -> Any:
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.redis.register_script(script_source(name))
        # ARGV[1..3] follow the prelude's convention (prefix, TTL, now); only NOW is used here.
        return await script(keys=keys, args=["", RETENTION_SECONDS, now_ms(), *args])

    # --- preheat records ----------------------------------------------------------------------------

    async def create(self, request: PreheatRequest, actor: str, origin: str) -> tuple[str, CreateOutcome]:
        pid = request.preheat_id
        fields = {**request.to_fields(), "actor": actor, "origin": origin}
        out = orjson.loads(
            await self._run(
                "preheat_create", [schema.preheat_key(pid), schema.PREHEAT_INDEX], pid, orjson.dumps(fields).decode(),
                RETENTION_SECONDS, int(WAIT_LEASE_SECONDS * 1000),
            )
        )
        return pid, CreateOutcome(epoch=int(out["epoch"]), previous=str(out.get("previous") or ""))

    async def get(self, pid: str) -> PreheatRecord | None:
        raw: dict[str, str] = await self.redis.hgetall(schema.preheat_key(pid))  # type: ignore[assignment]
        return PreheatRecord.from_hash(raw) if raw.get("id") else None

    async def list_records(self, limit: int = 1000, offset: int = 0) -> list[PreheatRecord]:
        ids: list[str] = await self.redis.zrevrange(  # type: ignore[assignment]
            schema.PREHEAT_INDEX, offset, offset + limit - 1
        )
        records = []
        for pid in ids:
            record = await self.get(pid)
            if record is not None:
                records.append(record)
        return records

    async def delete(self, pid: str) -> bool:
        """Removes the record; a runner still working on it notices at its next update and stops."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(schema.preheat_key(pid))
            pipe.zrem(schema.PREHEAT_INDEX, pid)
            removed, _ = await pipe.execute()
        return bool(removed)

    async def claim(self, pid: str, epoch: int) -> bool:
        lease = int(RUNNER_LEASE_SECONDS * 1000)
        return bool(await self._run("preheat_claim", [schema.preheat_key(pid)], epoch, lease))

    async def update(
        self, pid: str, epoch: int, layers: list[LayerProgress], status: str = "", error: str = ""
    ) -> bool:
        """Progress (and lease renewal); with ``status`` SUCCESS/FAILED it finishes the job."""
        pairs: list[str] = ["layers", orjson.dumps([asdict(layer) for layer in layers]).decode()]
        if status:
            pairs += ["status", status, "errorMsg", error]
        lease = int(RUNNER_LEASE_SECONDS * 1000)
        return bool(
            await self._run("preheat_update", [schema.preheat_key(pid)], epoch, lease, RETENTION_SECONDS, *pairs)
        )

    # --- Open API jobs -----------------------------------------------------------------------------------

    async def create_oapi_job(self, pid: str, args: dict[str, Any], actor: str) -> OapiJob:
        job_id = int(await self.redis.incr(schema.OAPI_JOB_SEQ))
        job = OapiJob(job_id, pid, now_ms(), args, actor)
        key = schema.oapi_job_key(job_id)
        args_json = orjson.dumps(args).decode()
        items: list[str | int] = ["preheat", pid, "created", job.created_ms, "args", args_json, "actor", actor]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, items=items)
            pipe.expire(key, RETENTION_SECONDS)
            await pipe.execute()
        return job

    async def get_oapi_job(self, job_id: int) -> OapiJob | None:
        raw: dict[str, str] = await self.redis.hgetall(schema.oapi_job_key(job_id))  # type: ignore[assignment]
        if not raw.get("preheat"):
            return None
        return OapiJob(job_id, raw["preheat"], int(raw.get("created") or 0), orjson.loads(raw.get("args") or "{}"),
                       raw.get("actor", ""))
