"""The dashboard's own load on the cluster: D open pages polling every 2 s, with 10,000 tasks in Redis,
first on an idle replica and then while a 200-peer control-plane swarm runs.

Each emulated page does what app/dashboard/static/js does per tick of its poll: the overview page
(``GET /api/v1/overview``) and the task list (``GET /api/v1/tasks?limit=25``), over one keep-alive
connection, the next tick 2 s after the previous answers. Measured per phase: the pages' request
latency (p50/p95/max), the replica's and redis-server's CPU (from /proc), and Redis commands per page
tick (``total_commands_processed`` delta: every client of that Redis server is included, so on a
shared machine it is an upper bound) and the replica's own count of Redis round trips per request
(its ``redis_round_trips`` histogram).

    .venv/bin/python -m benchmarks.bench_dashboard [--pages 5] [--tasks 10000] [--peers 200] [--seconds 20]

The tasks are written straight into Redis in the shape register.lua gives them (task hash, index,
one cid each), so that the listing and the census have 10,000 real entries to walk. Results: one JSON
line on stdout and benchmarks/DASHBOARD-RESULTS.json. Redis db pair leased like the test suite's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from app.state import schema
from app.swarm import Swarm
from app.swarm.cluster import LocalCluster
from app.swarm.source import SourceProcess
from benchmarks.bench_control_plane import MIB, leased_dbs
from benchmarks.measure import ms, percentile, proc_cpu, redis_pid

TOKEN = "bench-dashboard-token-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL_SECONDS = 2.0
RESULTS = Path(__file__).with_name("DASHBOARD-RESULTS.json")


def round_trips(base: str) -> dict[str, float]:
    """Redis round trips per request of the pages' two routes, from the replica's own histogram."""
    text = httpx.get(f"{base}/metrics", timeout=30).text
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in text.splitlines():
        for route in ("/api/v1/overview", "/api/v1/tasks"):
            if f'handler="{route}"' in line and "_redis_round_trips_" in line:
                value = float(line.rsplit(" ", 1)[1])
                if "_redis_round_trips_sum{" in line:
                    sums[route] = value
                elif "_redis_round_trips_count{" in line:
                    counts[route] = value
    return {route: round(sums[route] / counts[route], 2) for route in sums if counts.get(route)}


def fill_tasks(client: redis.Redis, count: int) -> None:
    now = int(time.time() * 1000)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        tid = f"{i:064x}"
        url = f"http://origin.example/files/{i}.bin?token=secret"
        pipe.hset(schema.task_key(tid), mapping={
            "taskId": tid, "taskUrl": url, "rawUrl": url, "cdnStatus": "SUCCESS", "httpFileLength": 8 * MIB,
            "pieceSize": 4 * MIB, "pieceTotal": 2, "fileLength": 8 * MIB + 10, "created": now - i, "accessed": now - i,
            "seedBytes": 8 * MIB})
        pipe.sadd(schema.cids_key(tid), f"10.0.{i // 250}.{i % 250}-1-1.000")
        pipe.hset(schema.dt_key(tid, f"10.0.{i // 250}.{i % 250}-1-1.000"), mapping={"status": "SUCCESS", "down": 0})
        pipe.zadd(schema.TASK_INDEX, {tid: now - i})
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()


async def page(base: str, stop: asyncio.Event, latencies: list[float], ticks: list[int], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=base, headers=AUTH, timeout=30) as http:
        while not stop.is_set():
            for path, params in (("/api/v1/overview", {"minutes": 15}), ("/api/v1/tasks", {"limit": 25})):
                started = time.perf_counter()
                answer = await http.get(path, params=params)
                latencies.append(time.perf_counter() - started)
                if answer.status_code != 200:
                    errors.append(f"{path}: {answer.status_code}")
            ticks[0] += 1
            try:
                await asyncio.wait_for(stop.wait(), POLL_SECONDS)
            except TimeoutError:
                pass


async def phase(args: argparse.Namespace, base: str, admin: redis.Redis, pids: tuple[int, int | None],
                pages: int, during: Any = None) -> dict[str, Any]:
    replica, redis_server = pids
    latencies: list[float] = []
    ticks = [0]
    errors: list[str] = []
    stop = asyncio.Event()
    cpu0, rcpu0 = proc_cpu(replica), proc_cpu(redis_server) if redis_server else 0.0
    commands0 = int(admin.info("stats")["total_commands_processed"])
    started = time.monotonic()
    workers = [asyncio.create_task(page(base, stop, latencies, ticks, errors)) for _ in range(pages)]
    swarm_seconds = None
    if during is not None:
        swarm_started = time.monotonic()
        results = await during
        swarm_seconds = round(time.monotonic() - swarm_started, 2)
        failed = sum(not r.success for r in results)
    else:
        failed = 0
        await asyncio.sleep(args.seconds)
    stop.set()
    await asyncio.gather(*workers)
    wall = time.monotonic() - started
    cpu, rcpu = proc_cpu(replica) - cpu0, (proc_cpu(redis_server) - rcpu0) if redis_server else None
    commands = int(admin.info("stats")["total_commands_processed"]) - commands0
    latencies.sort()
    return {
        "pages": pages, "seconds": round(wall, 2), "page_ticks": ticks[0], "requests": len(latencies),
        "errors": errors[:5], "latency_ms": {"p50": ms(percentile(latencies, 50)), "p95": ms(percentile(latencies, 95)),
                                              "max": ms(latencies[-1] if latencies else 0)},
        "replica_cpu_cores": round(cpu / wall, 3), "redis_cpu_cores": None if rcpu is None else round(rcpu / wall, 3),
        "redis_commands_per_page_tick": round(commands / max(1, ticks[0])) if during is None else None,
        "swarm_seconds": swarm_seconds, "swarm_failures": failed,
    }


async def bench(args: argparse.Namespace, workdir: Path, state_url: str) -> dict[str, Any]:
    admin = redis.Redis.from_url(state_url)
    fill_tasks(admin, args.tasks)
    cluster = LocalCluster(workdir, state_url, None, token=TOKEN)
    blob = workdir / "big.bin"
    blob.write_bytes(os.urandom(args.size_mib * MIB))
    source = SourceProcess({"big.bin": blob}).__enter__()
    try:
        replica = cluster.start_replica()
        base = f"http://{replica.node}"
        pids = (replica.popen.pid, redis_pid(admin))
        async with httpx.AsyncClient(base_url=base, headers=AUTH) as http:  # warm-up: imports, pools
            await http.get("/api/v1/overview")
        out: dict[str, Any] = {"tasks": args.tasks}
        out["idle_no_pages"] = await phase(args, base, admin, pids, 0)
        out["idle"] = await phase(args, base, admin, pids, args.pages)
        out["redis_round_trips_per_request"] = round_trips(base)
        if args.peers:
            url = source.url("big.bin")
            async with Swarm(args.peers, [replica.node], url, workdir / "swarm", instant_pieces=True,
                             versions=["1.0.6"], share_http=True) as swarm:
                out["swarm"] = await phase(args, base, admin, pids, args.pages, swarm.run())
            async with Swarm(args.peers, [replica.node], f"{url}?again=1", workdir / "swarm2", instant_pieces=True,
                             versions=["1.0.6"], share_http=True) as swarm:
                out["swarm_no_pages"] = await phase(args, base, admin, pids, 0, swarm.run())
        return out
    finally:
        source.__exit__(None, None, None)
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pages", type=int, default=5, help="open dashboards polling every 2 s")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--peers", type=int, default=200, help="control-plane swarm during the second phase (0: none)")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the idle phases")
    parser.add_argument("--redis-db", type=int, default=None)
    args = parser.parse_args()
    with leased_dbs(args.redis_db) as (state_url, _broker), tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(bench(args, Path(tmp), state_url))
    result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    line = json.dumps(result)
    print(line)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
