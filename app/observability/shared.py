"""Cluster-wide series computed from the shared Redis state: the legacy ``peers`` and ``dfgettasks``
gauges and ``cdn_*`` counters, bytes served by source class (cluster-wide and per task), live replicas,
seed workers and the audit backlog.

Every replica computes the same numbers from the same state, so none of them double counts and a
dashboard takes ``max`` over replicas (never ``sum``); each help text says so. They are recomputed by
the gauge loop (``DF_GAUGE_REFRESH_SECONDS``), not at scrape time: prometheus_client collects
synchronously, and a scrape storm must not turn into a Redis storm. A scrape shows the last snapshot.
"""

from __future__ import annotations

import asyncio
import os
import pickle
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.core.redis import is_cluster
from app.observability import exposition, seedstats
from app.state import schema, traffic

_NS = "dragonfly_supernode_"
SAME = " Cluster-wide, from the shared state: the same on every replica (aggregate with max, not sum)."
_CHUNK = 1000
_DFGETTASK_STATUSES = ("WAITING", "RUNNING", "SUCCESS", "FAILED")
_SEED_HELP = {
    "trigger": "Seed jobs started, by any replica or worker.",
    "triggerFailed": "Seed jobs that failed.",
    "cacheHit": "Seed jobs answered from a complete copy already in the seed cache.",
    "download": "Seed jobs that went to the source.",
    "downloadFailed": "Seed jobs whose source download failed.",
}


@dataclass
class Snapshot:
    peers: Counter[str] = field(default_factory=Counter)  # by IP ("" with the peer label off)
    dfgettasks: Counter[tuple[str, str]] = field(default_factory=Counter)  # by (callSystem, status)
    served: traffic.Traffic = traffic.ZERO
    task_served: list[tuple[str, traffic.Traffic]] = field(default_factory=list)
    replicas: int = 0
    workers: int | None = None  # None: in-process seeding, or not probed yet
    audit_backlog: int = 0
    seeds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(seedstats.FIELDS, 0))


async def _peers(redis: aioredis.Redis, peer_label: bool) -> Counter[str]:
    if not peer_label:  # one count, no record read
        total: int = await redis.hlen(schema.PEERS)
        return Counter({"": total})
    out: Counter[str] = Counter()
    cursor = 0
    while True:
        cursor, chunk = await redis.hscan(schema.PEERS, cursor, count=_CHUNK)
        records: dict[str, str] = chunk  # type: ignore[assignment]
        for record in records.values():
            try:
                ip = orjson.loads(record).get("IP", "")
            except (orjson.JSONDecodeError, AttributeError):
                continue
            out[ip if isinstance(ip, str) else ""] += 1
        if cursor == 0:
            return out


# One task's dfget tasks counted by (callSystem, status) inside Redis: one call per task instead of a
# command per dfget task (110,000 commands for 10,000 tasks of 10 peers took seconds of Python). A
# dfget task's own callSystem, else the one its task was created with. Its keys share the task's hash
# tag (ARGV[1] is the task's key prefix, as for every script of app/state/lua).
_DFGETTASKS_LUA = """
local cs = redis.call('HGET', ARGV[1] .. 'task', 'callSystem') or ''
local sep = string.char(31)  -- splits callSystem from status (unit separator: not in either)
local counts = {}
for _, cid in ipairs(redis.call('SMEMBERS', ARGV[1] .. 'cids')) do
  local row = redis.call('HMGET', ARGV[1] .. 'dt:' .. cid, 'callSystem', 'status')
  if row[2] then
    local own = row[1]
    if not own or own == '' then own = cs end
    local key = own .. sep .. row[2]
    counts[key] = (counts[key] or 0) + 1
  end
end
local flat = {}
for key, n in pairs(counts) do
  flat[#flat + 1] = key
  flat[#flat + 1] = n
end
return flat
"""


async def _dfgettasks(redis: aioredis.Redis, tids: list[str]) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    script = redis.register_script(_DFGETTASKS_LUA)
    cluster = is_cluster(redis)
    for start in range(0, len(tids), _CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for tid in tids[start : start + _CHUNK]:
                if cluster:  # a cluster pipeline does not load scripts: EVAL (a NOSCRIPT would fail it)
                    pipe.eval(_DFGETTASKS_LUA, 1, schema.task_key(tid), schema.task_prefix(tid))
                else:
                    await script(keys=[schema.task_key(tid)], args=[schema.task_prefix(tid)], client=pipe)
            replies: list[list[Any]] = await pipe.execute()
        for flat in replies:
            for i in range(0, len(flat), 2):
                call_system, _, status = str(flat[i]).rpartition("\x1f")
                out[(call_system, status)] += int(flat[i + 1])
    return out


async def _replicas(redis: aioredis.Redis) -> int:
    ids: list[str] = await redis.zrange(schema.REPLICAS, 0, -1)  # type: ignore[assignment]
    if not ids:
        return 0
    alive: int = await redis.exists(*[schema.replica_key(i) for i in ids])  # an expired heartbeat is a dead one
    return alive


async def _audit_backlog(redis: aioredis.Redis) -> int:
    """Events in the audit stream not yet written to Postgres: never delivered to a writer (``lag``)
    plus delivered but not acknowledged (``pending``). Before any writer made the group: the stream."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(schema.AUDIT_STREAM)
    except aioredis.ResponseError:  # no stream yet
        return 0
    for group in groups:
        if group.get("name") == schema.AUDIT_GROUP:
            lag = group.get("lag")
            if lag is None:  # Redis cannot tell after some trims: the stream length bounds it
                lag = await redis.xlen(schema.AUDIT_STREAM)
            return int(lag) + int(group.get("pending", 0))
    length: int = await redis.xlen(schema.AUDIT_STREAM)
    return length


async def snapshot(redis: aioredis.Redis, peer_label: bool, task_series: int) -> Snapshot:
    tids: list[str] = await redis.zrange(schema.TASK_INDEX, 0, -1)  # type: ignore[assignment]
    recent: list[str] = []
    if task_series:
        recent = await redis.zrevrange(schema.TASK_INDEX, 0, task_series - 1)  # type: ignore[assignment]
    peers, dfgettasks, served, per_task = await asyncio.gather(
        _peers(redis, peer_label), _dfgettasks(redis, tids), traffic.cluster_traffic(redis),
        traffic.tasks_traffic(redis, recent),
    )
    replicas, backlog, seeds = await asyncio.gather(_replicas(redis), _audit_backlog(redis), seedstats.read(redis))
    return Snapshot(peers=peers, dfgettasks=dfgettasks, served=served,
                    task_served=list(zip(recent, per_task, strict=True)), replicas=replicas, audit_backlog=backlog,
                    seeds=seeds)


class SharedCollector(Collector):
    """Yields the last snapshot. Registered once per process (tests build several apps)."""

    def __init__(self) -> None:
        self.last = Snapshot()
        # DF_WORKERS > 1: the primary worker computes the snapshot and leaves it in this file for the
        # others (each of them may answer a scrape); None in a one-process replica.
        self.file: Path | None = None
        self.writer = False

    def share(self, file: Path | None, writer: bool) -> None:
        self.file, self.writer = file, writer

    def publish(self, now: Snapshot) -> None:
        self.last = now
        if self.file is not None and self.writer:
            partial = self.file.with_suffix(f".{os.getpid()}.tmp")
            partial.write_bytes(pickle.dumps(now))
            partial.replace(self.file)  # atomic: a reader sees the old snapshot or the new one

    def _current(self) -> Snapshot:
        if self.file is None or self.writer:
            return self.last
        try:
            loaded = pickle.loads(self.file.read_bytes())  # our own file, written by our own primary worker
        except (OSError, pickle.UnpicklingError, EOFError):
            return self.last  # not written yet
        if isinstance(loaded, Snapshot):
            self.last = loaded
        return self.last

    def collect(self) -> Iterator[Metric]:
        now = self._current()
        peers = GaugeMetricFamily(_NS + "peers", "Peer records (registrations kept), by dfget IP." + SAME,
                                  labels=["peer"])
        for ip, count in sorted((now.peers or Counter({"": 0})).items()):
            peers.add_metric([ip], count)
        yield peers
        dfgettasks = GaugeMetricFamily(_NS + "dfgettasks", "dfget tasks by call system and status." + SAME,
                                       labels=["callsystem", "status"])
        systems = {call_system for call_system, _ in now.dfgettasks}
        for call_system in sorted(systems):
            for status in _DFGETTASK_STATUSES:
                dfgettasks.add_metric([call_system, status], now.dfgettasks[(call_system, status)])
        yield dfgettasks
        served = CounterMetricFamily(
            _NS + "served_bytes", "Bytes clients received, by source class: peer (another dfget), seed (the "
            "seed cache), source (back to the origin, as dfget 1.0.x reports it)." + SAME, labels=["source"],
        )
        for name in traffic.SOURCE_CLASSES:
            served.add_metric([name], getattr(now.served, name))
        yield served
        per_task = CounterMetricFamily(
            _NS + "task_served_bytes", "Bytes clients received for a task, by source class; only the "
            "DF_METRICS_TASK_SERIES most recently used tasks." + SAME, labels=["task", "source"],
        )
        for tid, split in now.task_served:
            for name in traffic.SOURCE_CLASSES:
                per_task.add_metric([tid, name], getattr(split, name))
        yield per_task
        for name, metric in seedstats.FIELDS.items():
            yield CounterMetricFamily(_NS + metric, _SEED_HELP[name] + SAME, value=now.seeds[name])
        yield GaugeMetricFamily(_NS + "replicas", "Replicas with a live heartbeat." + SAME, value=now.replicas)
        if now.workers is not None:
            yield GaugeMetricFamily(_NS + "seed_workers", "Celery seed workers that answered a ping." + SAME,
                                    value=now.workers)
        yield GaugeMetricFamily(
            _NS + "audit_backlog", "Audit events waiting in Redis to be written to Postgres." + SAME,
            value=now.audit_backlog,
        )


collector = SharedCollector()
exposition.register(collector)
