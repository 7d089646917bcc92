"""``df-swarm capacity``: measure one replica on this host, then size a rollout (formula: sizing.py).

Measured against a replica of its own (``python -m app`` on loopback, cluster mode against a private
``redis-server``, seeding in-process), so CPU time (from /proc) and Redis memory (INFO memory,
``used_memory_dataset``) are that replica's alone, whatever else runs on the host:

1. control plane: swarms of emulated dfgets in control-plane mode (``instant_pieces``) on one seeded
   task, at rising concurrency; requests per replica CPU second at each step, and the p99 the peers saw.
   ``requests_per_core`` is the rate of the busiest step whose p99 met the target;
2. Redis: ``used_memory`` before and after P more peers on one task, and after T more tasks of one
   peer each: the deltas per peer and per task;
3. pieces: concurrent range GETs of the seeded file from the piece port; bytes per replica CPU second;
4. seed copies: one small P2P swarm with rate-limited peers; seed-cache bytes over the file's size.

    df-swarm capacity --hosts 5000 --image-size 3GiB --window 10m [--json out.json]
    df-swarm capacity --constants benchmarks/CAPACITY-RESULTS.json --hosts 20000 --image-size 1GiB --window 30m
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from app.protocol.pieces import piece_count, piece_size_for
from app.swarm.replica import LocalRedis, LocalReplica
from app.swarm.report import SwarmReport
from app.swarm.runner import RunOptions, run
from app.swarm.sizing import Constants, Rollout, explain, size
from app.swarm.source import GeneratedSource

FILE_SIZE = 64 << 20  # 16 pieces of 4 MiB: each control-plane peer sends a few dozen requests


async def _used_memory(client: aioredis.Redis) -> int:
    """The keys' share of INFO memory (``used_memory_dataset``): without client buffers and server overhead,
    which swing by megabytes as a swarm's connections come and go."""
    info = await client.info("memory")
    return int(info["used_memory_dataset"])


async def _swarm(node: str, url: str, peers: int, **extra: Any) -> SwarmReport:
    return await run(RunOptions(nodes=[node], peers=peers, url=url, instant_pieces=True, progress=False,
                                versions=["1.0.6"], **extra))


async def control_plane(replica: LocalReplica, url: str, steps: Sequence[int], target_ms: float,
                        log: list[dict[str, Any]]) -> dict[str, float]:
    best: dict[str, float] = {}
    for peers in steps:
        cpu = replica.cpu()
        report = await _swarm(replica.node, url, peers)
        spent = replica.cpu() - cpu
        cp = report.control
        step = {"peers": peers, "requests": cp.requests, "replica_cpu_s": round(spent, 3),
                "requests_per_cpu_s": round(cp.requests / spent, 1) if spent > 0 else 0.0,
                "rate": cp.rate, "p99_ms": cp.latency_p99_ms, "ok": report.success}
        log.append(step)
        print(f"  control plane, {peers:4d} peers: {cp.requests} requests, {step['requests_per_cpu_s']:.0f} per "
              f"CPU s, p99 {cp.latency_p99_ms:.1f} ms", file=sys.stderr, flush=True)
        if not report.success or cp.latency_p99_ms > target_ms:
            break
        pieces = piece_count(FILE_SIZE, piece_size_for(FILE_SIZE))
        fixed = sum(sum(cp.answers.get(e, {}).values()) for e in ("/peer/registry", "/task/metrics")) / peers
        best = {"requests_per_core": step["requests_per_cpu_s"], "requests_per_piece":
                max(cp.requests / peers - fixed, 0.0) / pieces, "requests_per_download": fixed}
    if not best:
        raise RuntimeError(f"no step met p99 ≤ {target_ms} ms: {log}")
    return best


async def _settled_memory(client: aioredis.Redis) -> int:
    """``used_memory_dataset`` once it stops moving (reports and service/down still land after a swarm)."""
    last = await _used_memory(client)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = await _used_memory(client)
        if abs(now - last) <= max(last // 200, 4096):
            return now
        last = now
    return last


async def redis_state(replica: LocalReplica, redis_url: str, source: GeneratedSource, url: str,
                      peers: int, tasks: int) -> dict[str, float]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        # Tasks first: a new task with its first peer (one piece). A task is never without a peer, so the
        # sizing's per-task term over-counts by one small peer, on the safe side.
        before = await _settled_memory(client)
        for i in range(tasks):
            await _swarm(replica.node, source.add(f"task-{i}.bin", 1 << 20, seed=100 + i), 1)
        after_tasks = await _settled_memory(client)
        await _swarm(replica.node, url, peers)  # more peers on the seeded 17-piece task
        per_peer = (await _settled_memory(client) - after_tasks) / peers
    finally:
        await client.aclose()
    return {"redis_bytes_per_peer": round(per_peer), "redis_bytes_per_task": round((after_tasks - before) / tasks),
            "measured_pieces": piece_count(FILE_SIZE, piece_size_for(FILE_SIZE))}


async def piece_serving(replica: LocalReplica, task_id: str, total: int, concurrency: int) -> float:
    piece = piece_size_for(FILE_SIZE)
    framed = FILE_SIZE + 5 * piece_count(FILE_SIZE, piece)
    url = f"http://127.0.0.1:{replica.download_port}/download/{task_id[:3]}/{task_id}"
    ranges = [(i * piece, min((i + 1) * piece, framed) - 1) for i in range(-(-framed // piece))]
    got = 0
    async with httpx.AsyncClient(timeout=60.0, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def worker(k: int) -> None:
            nonlocal got
            i = k
            while got < total:
                first, last = ranges[i % len(ranges)]
                async with client.stream("GET", url, headers={"Range": f"bytes={first}-{last}"}) as response:
                    if response.status_code != 206:
                        raise RuntimeError(f"piece port answered {response.status_code}")
                    async for chunk in response.aiter_raw():
                        got += len(chunk)
                i += concurrency

        cpu = replica.cpu()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        spent = replica.cpu() - cpu
    return got / spent if spent > 0 else 0.0


async def seed_copies(replica: LocalReplica, source: GeneratedSource, peers: int, rate: int) -> float:
    url = source.add("p2p.bin", 32 << 20, seed=7)
    report = await run(RunOptions(nodes=[replica.node], peers=peers, url=url, sha256=source.sha256("p2p.bin"),
                                  versions=["1.0.6"], down_rate=rate, up_rate=rate, progress=False))
    if not report.success:
        raise RuntimeError("the P2P swarm failed: " + report.summary())
    return report.bytes_by_source()["seed"] / (32 << 20)


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    steps = [int(x) for x in args.steps.split(",")]
    with LocalRedis(work / "redis") as redis:
        with LocalReplica(work / "replica", redis.url) as replica:
            async with GeneratedSource() as source:
                url = source.add("capacity.bin", FILE_SIZE, seed=3)
                # Seeds the task, loads the Lua scripts, fills the pools: the steps measure scheduling only.
                warm = await _swarm(replica.node, url, steps[0])
                task_id = warm.peers[0].task_id
                steps_log: list[dict[str, Any]] = []
                print("measuring one replica on this host ...", file=sys.stderr, flush=True)
                constants: dict[str, Any] = await control_plane(replica, url, steps, args.target_p99, steps_log)
                constants |= await redis_state(replica, redis.url, source, url, args.state_peers, args.state_tasks)
                constants["piece_bytes_per_core"] = round(await piece_serving(replica, task_id, args.piece_bytes, 8))
                constants["seed_copies"] = round(await seed_copies(replica, source, 8, 8_000_000), 3)
                constants["target_p99_ms"] = args.target_p99
    return {"constants": constants, "control_plane_steps": steps_log, "measured_at": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def build_parser() -> argparse.ArgumentParser:
    from app.swarm.cli import byte_size, duration

    summary = __doc__.split("\n\n")[0] if __doc__ else None
    parser = argparse.ArgumentParser(prog="df-swarm capacity", description=summary)
    parser.add_argument("--hosts", type=int, default=5000, help="hosts in the rollout (default 5000)")
    parser.add_argument("--image-size", type=byte_size, default=3 << 30, help="image size (default 3GiB)")
    parser.add_argument("--layers", type=int, default=1, help="layers (one task each; default 1)")
    parser.add_argument("--window", type=duration, default=600.0, help="rollout window (default 10m)")
    parser.add_argument("--peak", type=float, default=2.0, help="busiest second ÷ the window's average (default 2)")
    parser.add_argument("--cores-per-replica", type=float, default=1.0)
    parser.add_argument("--target-p99", type=float, default=200.0, help="control-plane p99 target, ms (default 200)")
    parser.add_argument("--steps", default="5,10,25,50,100", help="control-plane concurrency steps")
    parser.add_argument("--state-peers", type=int, default=100, help="peers added for the per-peer Redis delta")
    parser.add_argument("--state-tasks", type=int, default=20, help="tasks added for the per-task Redis delta")
    parser.add_argument("--piece-bytes", type=byte_size, default=1 << 30, help="bytes fetched from the piece port")
    parser.add_argument("--constants", type=Path, help="size from a saved --json instead of measuring")
    parser.add_argument("--json", type=Path, help="write the measurement and the sizing as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.hosts < 1 or args.layers < 1 or args.window <= 0 or args.peak <= 0 or args.cores_per_replica <= 0:
        build_parser().error("--hosts, --layers, --window, --peak and --cores-per-replica must be positive")
    if args.constants is not None:
        measured = json.loads(args.constants.read_text())
    else:
        with tempfile.TemporaryDirectory(prefix="df-capacity-") as tmp:
            try:
                measured = asyncio.run(measure(args, Path(tmp)))
            except RuntimeError as exc:  # a measurement that cannot be made says why, without a traceback
                print(f"df-swarm capacity: {exc}", file=sys.stderr)
                return 1
    constants = Constants.of(measured["constants"])
    rollout = Rollout(args.hosts, args.image_size, args.window, args.layers, args.peak, args.cores_per_replica)
    sizing = size(constants, rollout)
    print("measured on this host (one replica):")
    for name, value in measured["constants"].items():
        print(f"  {name:24s} {value}")
    print(explain(constants, rollout, sizing))
    if args.json:
        out = {**measured, "rollout": asdict(rollout), "sizing": sizing.as_dict()}
        args.json.write_text(json.dumps(out, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
