"""Cost of the cluster-wide gauges' refresh (app/cluster/gauges.py, app/observability/shared.py) as
the cluster grows: N tasks of P dfget tasks each are written to a leased Redis db the way
register.lua writes them, then one refresh of each part is timed. The gauge loop pauses at least 4x
the refresh's time (WORK_SHARE_INVERSE), so this is also how stale the gauges get at that size.

One JSON line per size, printed and appended to benchmarks/GAUGES-RESULTS.md.

    .venv/bin/python -m benchmarks.bench_gauges [--tasks 1000,10000] [--peers 10] [--redis-db N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from app.cluster import gauges
from app.observability import shared
from app.state import schema
from benchmarks.bench_control_plane import leased_dbs

RESULTS = Path(__file__).with_name("GAUGES-RESULTS.md")


async def _populate(redis: aioredis.Redis, tasks: int, peers: int) -> None:
    for start in range(0, tasks, 200):
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(start, min(tasks, start + 200)):
                tid = f"{i:064x}"
                pipe.zadd(schema.TASK_INDEX, {tid: i})
                pipe.hset(schema.task_key(tid), mapping={"cdnStatus": "SUCCESS", "callSystem": "bench",
                                                         "httpFileLength": 1 << 20, "seedBytes": 1 << 20})
                for c in range(peers):
                    cid = f"10.0.{c // 250}.{c % 250}-{i}-1.000"
                    pipe.sadd(schema.cids_key(tid), cid)
                    pipe.hset(schema.dt_key(tid, cid), mapping={"status": "SUCCESS", "callSystem": "bench"})
                    pipe.hset(schema.PEERS, f"h-{cid}", json.dumps({"IP": cid.split("-")[0]}))
            await pipe.execute()


async def _timed(work: Any) -> float:
    started = time.perf_counter()
    await work
    return round(time.perf_counter() - started, 3)


async def measure(url: str, tasks: int, peers: int) -> dict[str, Any]:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await redis.flushdb()
        await _populate(redis, tasks, peers)
        return {
            "bench": "gauge_refresh", "tasks": tasks, "dfget_tasks": tasks * peers,
            "census_s": await _timed(gauges.refresh(redis)),
            "shared_s": await _timed(shared.snapshot(redis, peer_label=False, task_series=100)),
            "shared_with_peer_label_s": await _timed(shared.snapshot(redis, peer_label=True, task_series=100)),
        }
    finally:
        await redis.flushdb()
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="1000,10000")
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--redis-db", type=int, default=None)
    args = parser.parse_args()
    with leased_dbs(args.redis_db) as (state, _broker):
        for size in (int(n) for n in args.tasks.split(",")):
            line = json.dumps(asyncio.run(measure(state, size, args.peers)))
            print(line)
            with RESULTS.open("a") as out:
                if out.tell() == 0:
                    out.write("# Cluster-wide gauges: refresh cost by cluster size\n\nOne JSON line per size of "
                              "`python -m benchmarks.bench_gauges` (seconds for one refresh of each part; the "
                              "loop pauses at least 4x the sum).\n\n")
                out.write(f"    {time.strftime('%Y-%m-%d %H:%M')} {line}\n")


if __name__ == "__main__":
    main()
