"""Typed access to the cluster state. Every mutation is one Lua script call (one round trip).

On a Redis Cluster a task script cannot reach the global keys it writes on one Redis (the task index,
the traffic counters, the peer list: other slots). It hands those writes back instead (``deferred``
in its reply, see ``_prelude.lua``) and they are sent right after, in one pipeline: a second round
trip, on a cluster only, for the requests that have such a write (schema.py, "Separate commands").
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from app.cdn.sink import FinishResult, SeedJob, SeedOutcome
from app.core.config import Settings
from app.core.redis import is_cluster, is_outage
from app.scheduler.core import CDN, pull_window
from app.state import schema
from app.state.scripts import Script, script_source

log = logging.getLogger("app.state.store")
_T = TypeVar("_T")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class PeerRegistration:
    """The parts of a /peer/registry body the state keeps (already validated)."""

    tid: str
    cid: str
    task_url: str
    raw_url: str
    md5: str
    identifier: str
    headers: dict[str, str]
    peer_id: str
    ip: str
    port: int
    path: str
    host_name: str
    version: str
    super_node_ip: str
    call_system: str
    dfdaemon: bool


@dataclass(frozen=True)
class RegisterOutcome:
    result: str  # "ok", "conflict" or "unprobed"
    http_file_length: int = -1
    piece_size: int = 0
    cdn_status: str = ""
    seed_epoch: int = 0  # > 0: this registration started a seed job with that epoch


@dataclass(frozen=True)
class Assignment:
    """One piece handed to a client: from the seed cache, or from a peer at ip:port/path."""

    piece_num: int
    dst: str
    md5: str
    ip: str = ""
    port: int = 0
    path: str = ""


class ClusterState:
    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self._scripts: dict[str, Script] = {}
        self.cluster = is_cluster(redis)

    def _script(self, name: str) -> Script:
        script = self._scripts.get(name)
        if script is None:
            script = Script(self.redis, script_source(name))
            self._scripts[name] = script
        return script

    def task_script_keys(self, tid: str, now: int) -> list[str]:
        """KEYS of a task script: the task hash, then (on one Redis) the global keys it may write."""
        if self.cluster:
            return [schema.task_key(tid)]
        bucket = schema.traffic_bucket_key(now // (schema.TRAFFIC_BUCKET_SECONDS * 1000))
        return [schema.task_key(tid), schema.TASK_INDEX, schema.TRAFFIC_TOTAL, bucket, schema.PEERS, schema.PEERS_SEEN]

    async def run_task_script(self, script: Script | AsyncScript, tid: str, *args: str | int | float | bytes) -> Any:
        """Run a task script (ARGV: the prelude's three, then ``args``) and send the global writes it
        deferred (Redis Cluster); its reply without them."""
        now = now_ms()
        argv: list[str | int | float | bytes] = [schema.task_prefix(tid), self.settings.task_ttl_seconds, now, *args]
        reply = await script(keys=self.task_script_keys(tid, now), args=argv)
        if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], str):  # with_deferred()
            await self._send_deferred(orjson.loads(reply[1]), now)
            return reply[0]
        if isinstance(reply, str) and reply.startswith("{"):  # reply(): a JSON object
            out = orjson.loads(reply)
            deferred = out.pop("deferred", None)
            if deferred:
                await self._send_deferred(deferred, now)
            return out
        return reply

    async def _send_deferred(self, writes: list[list[Any]], now: int) -> None:
        """The global writes a task script deferred on a Redis Cluster (``_prelude.lua``), in one pipeline."""
        ttl_ms = self.settings.task_ttl_seconds * 1000
        bucket = schema.traffic_bucket_key(now // (schema.TRAFFIC_BUCKET_SECONDS * 1000))
        async with self.redis.pipeline(transaction=False) as pipe:
            for write in writes:
                kind = write[0]
                if kind == "index":
                    pipe.zadd(schema.TASK_INDEX, {write[1]: now})
                    if write[2]:
                        pipe.zremrangebyscore(schema.TASK_INDEX, "-inf", now - ttl_ms)
                elif kind == "traffic":
                    pipe.hincrby(schema.TRAFFIC_TOTAL, write[1], write[2])
                    pipe.hincrby(bucket, write[1], write[2])
                    pipe.expire(bucket, schema.TRAFFIC_BUCKET_TTL_SECONDS)
                elif kind == "peer":
                    # EVAL, not EVALSHA: a cluster pipeline does not load scripts (a NOSCRIPT would fail it).
                    pipe.eval(script_source("peer_record"), 2, schema.PEERS, schema.PEERS_SEEN,
                              "", self.settings.task_ttl_seconds, now, write[1], write[2])
                else:
                    raise ValueError(f"unknown deferred write {kind!r}")
            await pipe.execute()

    async def _run(self, name: str, tid: str, *args: str | int | float | bytes) -> Any:
        return await self.run_task_script(self._script(name), tid, *args)

    async def _run_json(self, name: str, tid: str, *args: str | int | float | bytes) -> Any:
        reply = await self._run(name, tid, *args)
        return orjson.loads(reply) if isinstance(reply, str) else reply

    # --- indexes -----------------------------------------------------------------------------

    async def prune_indexes(self, batch: int = 1000) -> int:
        """Drop index entries past the task TTL: tasks from ``df:tasks``, peer records from the peer list
        (registrations prune those only as they come, so after the last one they stayed). Returns how
        many entries went."""
        now, ttl = now_ms(), self.settings.task_ttl_seconds
        removed: int = await self.redis.zremrangebyscore(schema.TASK_INDEX, "-inf", now - ttl * 1000)
        while True:
            went: int = await self._script("prune_peers")(
                keys=[schema.PEERS, schema.PEERS_SEEN], args=["", ttl, now, batch]
            )
            removed += went
            if went < batch:
                return removed

    # --- registration ------------------------------------------------------------------------

    async def task_geometry(self, tid: str) -> tuple[int, int] | None:
        """(httpFileLength, pieceSize) of a known task, or None."""
        length, piece_size = await self.redis.hmget(schema.task_key(tid), ["httpFileLength", "pieceSize"])
        if piece_size is None:
            return None
        return int(str(length)), int(str(piece_size))

    async def unreachable_reason(self, tid: str) -> str | None:
        reason = await self.redis.get(schema.unreach_key(tid))
        return None if reason is None else str(reason)

    async def mark_unreachable(self, tid: str, reason: str, ttl_seconds: float) -> None:
        if ttl_seconds > 0:
            await self.redis.set(schema.unreach_key(tid), reason, px=int(ttl_seconds * 1000))

    async def try_lock_probe(self, tid: str, ttl_seconds: float) -> bool:
        return bool(await self.redis.set(schema.probe_key(tid), "1", nx=True, px=int(ttl_seconds * 1000)))

    async def release_probe(self, tid: str) -> None:
        await self.redis.delete(schema.probe_key(tid))

    async def register(
        self, reg: PeerRegistration, http_file_length: int | None, piece_size: int, provisional_total: int
    ) -> RegisterOutcome:
        s = self.settings
        out = await self._run_json(
            "register", reg.tid, reg.tid, reg.cid, reg.task_url, reg.raw_url, reg.md5, reg.identifier,
            orjson.dumps(reg.headers), "" if http_file_length is None else http_file_length, piece_size,
            provisional_total, reg.peer_id, reg.ip, reg.port, reg.path, reg.host_name, reg.version,
            reg.super_node_ip, reg.call_system, int(reg.dfdaemon), int(s.seed_lease_seconds * 1000),
            int(s.seed_retry_seconds * 1000),
        )
        return RegisterOutcome(
            result=out["result"],
            http_file_length=int(out.get("httpFileLength") or -1),
            piece_size=int(out.get("pieceSize") or 0),
            cdn_status=out.get("cdnStatus", ""),
            seed_epoch=int(out.get("seedEpoch") or 0),
        )

    # --- pulls and reports ---------------------------------------------------------------------

    async def pull(
        self, tid: str, cid: str, status: int, result: int, piece_num: int, dst: str, fingerprint: str,
        peer_down_limit: int | None = None,
    ) -> dict[str, Any]:
        """``peer_down_limit``: the live limit (app.limits); None = the setting."""
        s = self.settings
        down = s.peer_down_limit if peer_down_limit is None else peer_down_limit
        out: dict[str, Any] = await self._run_json(
            "pull", tid, tid, cid, status, result, piece_num, dst, fingerprint, down,
            s.holder_sample, int(s.seed_lease_seconds * 1000), CDN, pull_window(s.pull_window_pieces, down),
        )
        if out.get("kind") == "finish":
            # Sent as the stored decimal string: cjson prints a Lua number with 14 digits (1e14 bytes and up).
            out["fileLength"] = int(out["fileLength"])
        return out

    async def assign(
        self, tid: str, cid: str, fingerprint: str, picks: list[tuple[int, str]],
        peer_up_limit: int | None = None, cdn_load_limit: int | None = None,
    ) -> list[Assignment]:
        """The two limits: the live ones (app.limits); None = the settings."""
        s = self.settings
        flat: list[str | int] = []
        for piece_num, dst in picks:
            flat += [piece_num, dst]
        up = s.peer_up_limit if peer_up_limit is None else peer_up_limit
        cdn_load = s.cdn_load_limit if cdn_load_limit is None else cdn_load_limit
        rows = await self._run_json(
            "assign", tid, cid, fingerprint, int(s.piece_lease_seconds * 1000), up,
            cdn_load, s.elimination_limit, CDN, int(s.reoffer_lease_seconds * 1000),
            int(s.piece_lease_floor_seconds * 1000), s.piece_lease_factor, *flat,
        )
        return parse_assignments(rows)

    async def piece_success(self, tid: str, cid: str, piece_num: int, dst: str) -> bool:
        return bool(await self._run("piece_suc", tid, cid, piece_num, dst, CDN))

    async def piece_error(self, tid: str, src_cid: str, dst: str, error_type: str) -> bool:
        return bool(await self._run("piece_error", tid, src_cid, dst, error_type, CDN))

    async def back_source(self, tid: str, cid: str, file_length: int) -> bool:
        """Count a 1.0.x back-to-source download of ``file_length`` bytes (once per cid; app.state.traffic)."""
        return bool(await self._run("back_source", tid, cid, file_length))

    async def set_task_down_link(self, tid: str, kib: int | None) -> bool:
        """One task's downLink (None: back to the cluster's); False when the task does not exist."""
        return bool(await self._run("task_limit", tid, "" if kib is None else kib))

    async def service_down(self, tid: str, cid: str) -> bool:
        return bool(await self._run("service_down", tid, cid))

    # --- seeding -----------------------------------------------------------------------------------

    async def seed_job(self, tid: str, epoch: int) -> SeedJob | None:
        """The job to run for (tid, epoch), or None when that epoch is no longer current."""
        fields: dict[str, str] = await self.redis.hgetall(schema.task_key(tid))  # type: ignore[assignment]
        if not fields or fields.get("seedEpoch") != str(epoch) or fields.get("cdnStatus") != "RUNNING":
            return None
        return SeedJob(
            tid=tid,
            epoch=epoch,
            raw_url=fields["rawUrl"],
            task_url=fields["taskUrl"],
            headers=orjson.loads(fields.get("headers") or "{}"),
            md5=fields.get("md5", ""),
            identifier=fields.get("identifier", ""),
            http_file_length=int(fields.get("httpFileLength", "-1")),
            piece_size=int(fields["pieceSize"]),
        )

    async def seed_claim(self, tid: str, owner: str) -> int:
        """A run starting: the task's current epoch, now claimed by ``owner``; 0 when there is nothing
        to seed or another run holds that epoch (``seed_claim.lua``: why not the message's own epoch)."""
        lease = int(self.settings.seed_lease_seconds * 1000)
        return int(await self._run("seed_claim", tid, lease, owner))

    async def seed_heartbeat(self, tid: str, epoch: int, owner: str = "") -> bool:
        """Extend the lease of (tid, epoch) held by the run ``owner`` (claiming the epoch if unclaimed)."""
        lease = int(self.settings.seed_lease_seconds * 1000)
        return bool(await self._run("seed_heartbeat", tid, epoch, lease, owner))

    async def seed_pieces(
        self, tid: str, epoch: int, first: int, md5s: list[str], seeded_bytes: int, owner: str = ""
    ) -> int:
        """Publish pieces ``first..``; 0 when ``owner`` is not the seeder, else how many pieces the task lists."""
        lease = int(self.settings.seed_lease_seconds * 1000)
        return int(await self._run("seed_pieces", tid, epoch, lease, seeded_bytes, first, owner, *md5s))

    async def seed_finished(self, tid: str, epoch: int, outcome: SeedOutcome, owner: str = "") -> int:
        """1: recorded; 0: ``owner`` is not the seeder; 2: a success lists fewer pieces than it has."""
        return int(
            await self._run(
                "seed_finish", tid, epoch, int(outcome.success), outcome.file_length, outcome.raw_length,
                outcome.real_md5, outcome.piece_total, outcome.error, outcome.reason,
                self.settings.fail_access_seconds, owner,
            )
        )


def parse_assignments(rows: Any) -> list[Assignment]:
    # cjson encodes an empty Lua table as {}.
    if not isinstance(rows, list):
        return []
    assignments = []
    for row in rows:
        if len(row) > 3:
            assignments.append(Assignment(int(row[0]), row[1], row[2], row[3], int(row[4]), row[5]))
        else:
            assignments.append(Assignment(int(row[0]), row[1], row[2]))
    return assignments


class RedisSeedSink:
    """The seeder's view of the cluster state (app.cdn.sink.SeedSink), riding out Redis outages.

    A seed job must not fail on one failed write: that sends every waiting client to the source. So
    each write is retried with backoff through an outage (a restart, a failover, a network blip; see
    ``is_outage``) for as long as the lease this run last renewed can still hold. Past that, a pull may
    have started another seeder, so the write gives up and the seeder stops as having lost its lease
    (its pieces stay on disk for the next one to resume). A retried write whose first reply was lost
    is harmless: every seed script is idempotent for its owner.

    Each sink is one run, with an id of its own: the first write claims the epoch for it
    (``_seed.lua``), so a second run of the same epoch stops instead of seeding alongside.
    """

    def __init__(self, state: ClusterState, *, attempt_timeout: float = 5.0) -> None:
        self.state = state
        self.owner = secrets.token_hex(8)
        self.lease = state.settings.seed_lease_seconds
        # One attempt must not outlast the lease (a SIGSTOPped Redis answers nothing, ever).
        self.attempt_timeout = min(attempt_timeout, self.lease / 3)
        self._last_ok = time.monotonic()
        self._outage_since: float | None = None
        self._gave_up = False

    async def job(self, tid: str, epoch: int) -> SeedJob | None:
        """The job of (tid, epoch), or None when it is no longer current (or Redis stayed away too long)."""
        return await self._retry(tid, lambda: self.state.seed_job(tid, epoch))

    async def claim(self, tid: str) -> int | None:
        """The epoch this run seeds (the task's current one, claimed), or None: nothing for it to do."""
        return await self._retry(tid, lambda: self.state.seed_claim(tid, self.owner)) or None

    async def pieces_ready(self, tid: str, epoch: int, first: int, md5s: list[str], seeded_bytes: int) -> int | None:
        state, owner = self.state, self.owner
        listed = await self._retry(tid, lambda: state.seed_pieces(tid, epoch, first, md5s, seeded_bytes, owner))
        return listed or None

    async def heartbeat(self, tid: str, epoch: int) -> bool:
        return bool(await self._retry(tid, lambda: self.state.seed_heartbeat(tid, epoch, self.owner)))

    async def finished(self, tid: str, epoch: int, outcome: SeedOutcome) -> FinishResult:
        result = await self._retry(tid, lambda: self.state.seed_finished(tid, epoch, outcome, self.owner))
        return "done" if result == 1 else "missing" if result == 2 else "lost"

    async def _retry(self, tid: str, call: Callable[[], Awaitable[_T]]) -> _T | None:
        """``call()``'s result, retried through an outage; None once the lease cannot hold any more."""
        delay = 0.05
        while True:
            started = time.monotonic()
            budget = self._last_ok + self.lease - started
            if budget <= 0:
                if not self._gave_up:
                    self._gave_up = True
                    log.warning("seed %s: no Redis write for %.1fs, the seed lease (%gs) may have passed to another"
                                " seeder; stopping", tid, started - self._last_ok, self.lease)
                return None
            try:
                async with asyncio.timeout(min(self.attempt_timeout, budget)):
                    result = await call()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                if self._outage_since is None:
                    self._outage_since = started
                    log.warning("seed %s: Redis unreachable (%s); retrying for up to %.1fs while the lease holds",
                                tid, type(exc).__name__, budget)
                pause = delay * random.uniform(0.8, 1.2)  # jitter: retries of many seeders spread out
                await asyncio.sleep(min(pause, max(self._last_ok + self.lease - time.monotonic(), 0)))
                delay = min(delay * 2, 1.0)
                continue
            # The write was applied at or after `started`: the lease it renewed runs from there at least.
            self._last_ok = max(self._last_ok, started)
            if self._outage_since is not None:
                log.info("seed %s: Redis reachable again after %.1fs", tid, time.monotonic() - self._outage_since)
                self._outage_since = None
            return result
