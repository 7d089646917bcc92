"""Control-plane benchmark: N emulated dfgets × one big file, piece "downloads" instant.

The workload of the performance issue: 200 peers fetch a 64 MiB file through a real cluster on
loopback (by default 1 replica ``python -m app`` with its default DF_WORKERS, 1 Celery worker, the
real Redis, a local origin serving random bytes). The emulator runs with ``instant_pieces=True``:
every registration, pull, ``/peer/piece/suc`` and metrics report is really sent, but no piece bytes
move, so what is measured is the supernode's control plane. Peer i talks to replica i mod N (its
rotated node list), which spreads the load evenly without a load balancer in the measured path.

One JSON line is printed per run (``--runs``, default 3): request count and rate, latency percentiles
(the emulator's per-exchange ``elapsed``), the swarm's wall time, CPU seconds of the replicas, of
redis-server, of the worker and of the emulator itself (from ``/proc/<pid>/stat`` deltas) and the
outcome (successes, pieces from peers vs the seed cache).

    .venv/bin/python -m benchmarks.bench_control_plane [--peers 200] [--replicas 1] [--replica-workers N]
        [--workers 1] [--runs 3]
    .venv/bin/python -m benchmarks.bench_control_plane --embedded        # one embedded-mode process
    .venv/bin/python -m benchmarks.bench_control_plane --profile DIR     # py-spy on replica 0 (needs py-spy)

Redis: a (state, broker) db pair leased exactly as the test suite leases its pairs (``df-tests:db-lease:N``
in db 0), preferring 12/13, flushed before and after; ``--redis-db N`` forces N and N+1. Everything
listens on 127.0.0.0/8 only, the whole invocation is bounded by ``--timeout`` and every process it
started is stopped, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from app.swarm import DfgetResult
from app.swarm.cluster import LocalCluster as Cluster
from app.swarm.source import SourceProcess
from benchmarks.measure import (
    CLK_TCK,
    BenchTimeout,
    LoopLag,
    all_processes,
    children_of,
    client_loop,
    env_pair,
    machine_busy,
    ms,
    peak_rss_mib,
    percentile,
    pinned,
    prepare_client_process,
    proc_cpu,
    redis_counters,
    redis_pid,
    start_peers,
    stop_on_signals,
    stop_peers,
    tree_cpu,
    wait_quiet,
    workspace,
)

MIB = 1024 * 1024
REDIS_BASE = os.environ.get("DF_TEST_REDIS", "redis://127.0.0.1:6379")
LEASE_KEY = "df-tests:db-lease:{}"  # the test suite's lease keys (tests/conftest.py), so runs never share dbs
REPO = Path(__file__).resolve().parent.parent


# --- CPU accounting ------------------------------------------------------------------------------


@dataclass
class CpuSnapshot:
    at: float
    replicas: list[float]
    worker: float
    redis: float | None
    emulator: float
    machine: tuple[float, float, float]
    processes: dict[int, tuple[str, float]]
    redis_counters: tuple[int, int, int] | None


@dataclass
class Targets:
    """What to measure: process ids and the Redis admin connection (None in embedded mode)."""

    replica_pids: list[int]
    worker_pids: list[int]
    redis_pid: int | None
    redis_admin: redis.Redis | None

    def snapshot(self) -> CpuSnapshot:
        return CpuSnapshot(
            at=time.monotonic(),
            # A replica is a process tree with DF_WORKERS > 1: its supervisor and the workers.
            replicas=[tree_cpu(pid) for pid in self.replica_pids],
            worker=sum(proc_cpu(pid, descendants=True) for pid in self.worker_pids),
            redis=proc_cpu(self.redis_pid) if self.redis_pid else None,
            # The swarm runs in this process: all of its threads' CPU is the client's cost.
            emulator=time.process_time(),
            machine=machine_busy(),
            processes=all_processes(),
            redis_counters=redis_counters(self.redis_admin) if self.redis_admin is not None else None,
        )


# --- Redis db lease ------------------------------------------------------------------------------


@contextlib.contextmanager
def leased_dbs(forced: int | None) -> Iterator[tuple[str, str]]:
    """(state URL, broker URL) of a db pair nobody else uses; both flushed before and after."""
    admin = redis.Redis.from_url(f"{REDIS_BASE}/0")
    lease: str | None = None
    if forced is not None:
        state_db = forced
    else:
        for candidate in (12, 14, 10, 8, 6, 4, 2):
            key = LEASE_KEY.format(candidate)
            if admin.set(key, f"bench-{os.getpid()}", nx=True, ex=3600):
                state_db, lease = candidate, key
                break
        else:
            raise RuntimeError("every Redis db pair is leased by test runs; pass --redis-db N to force one")
    urls = f"{REDIS_BASE}/{state_db}", f"{REDIS_BASE}/{state_db + 1}"
    try:
        for url in urls:
            redis.Redis.from_url(url).flushdb()
        yield urls
    finally:
        for url in urls:
            with contextlib.suppress(redis.RedisError):
                redis.Redis.from_url(url).flushdb()
        if lease is not None:
            admin.delete(lease)


# --- one measured swarm --------------------------------------------------------------------------


@dataclass
class RunConfig:
    peers: int
    file_size: int
    versions: list[str]
    mode: str
    replicas: int
    workers: int
    sleep_scale: float
    extra: dict[str, Any] = field(default_factory=dict)


async def run_swarm(
    config: RunConfig, nodes: list[str], url: str, out_dir: Path, targets: Targets, budget: float, run: int | str
) -> tuple[dict[str, Any], list[DfgetResult]]:
    peers = await start_peers(config.peers, nodes, lambda _i: url, out_dir, config.versions, config.sleep_scale)
    timed_out = False
    try:
        before = targets.snapshot()
        async with LoopLag() as lag:
            try:
                async with asyncio.timeout(budget):
                    await asyncio.gather(*(p.dfget.run() for p in peers))
            except TimeoutError:
                # Out of time: report what the peers did so far (a DfgetResult fills in as the peer goes).
                timed_out = True
        after = targets.snapshot()
    finally:
        await stop_peers(peers)
    results = [p.dfget.result for p in peers]
    line = summarize(config, run, results, before, after)
    line["timed_out"] = timed_out
    line["emulator_loop_lag"] = lag.summary()
    line["emulator_peak_rss_mib"] = peak_rss_mib()
    return line, results


def summarize(
    config: RunConfig, run: int | str, results: list[DfgetResult], before: CpuSnapshot, after: CpuSnapshot
) -> dict[str, Any]:
    wall = after.at - before.at
    exchanges = [e for r in results for e in r.exchanges]
    requests = len(exchanges)
    latencies = sorted(e.elapsed for e in exchanges)
    by_endpoint: dict[str, list[float]] = {}
    for e in exchanges:
        by_endpoint.setdefault(e.endpoint, []).append(e.elapsed)
    endpoints = {
        name: {"n": len(v), "p50_ms": ms(percentile(sorted(v), 50)), "p99_ms": ms(percentile(sorted(v), 99))}
        for name, v in sorted(by_endpoint.items())
    }
    codes = Counter(f"{e.endpoint}:{e.code if e.code is not None else e.http_status}" for e in exchanges)

    replica_cpu = [a - b for a, b in zip(after.replicas, before.replicas, strict=True)]
    redis_cpu = after.redis - before.redis if after.redis is not None and before.redis is not None else None
    server_cpu = sum(replica_cpu) + (redis_cpu or 0.0)
    emulator_cpu = after.emulator - before.emulator
    worker_cpu = after.worker - before.worker
    busy = after.machine[0] - before.machine[0]
    total = after.machine[1] - before.machine[1]
    irq = (after.machine[2] - before.machine[2]) / CLK_TCK
    measured = server_cpu + worker_cpu + emulator_cpu
    per_k = 1000 / requests if requests else 0.0
    redis_delta = (
        [a - b for a, b in zip(after.redis_counters, before.redis_counters, strict=True)]
        if after.redis_counters is not None and before.redis_counters is not None
        else None
    )
    from_peers = sum(r.pieces_from_peers for r in results)
    from_cdn = sum(r.pieces_from_cdn for r in results)
    line: dict[str, Any] = {
        "bench": "control_plane",
        "run": run,
        "mode": config.mode,
        "peers": config.peers,
        "replicas": config.replicas,
        "workers": config.workers,
        "file_mib": round(config.file_size / MIB, 2),
        "piece_size": max((r.piece_size for r in results), default=0),
        "versions": config.versions,
        "requests": requests,
        "req_per_s": round(requests / wall, 1) if wall else 0.0,
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(latencies[-1]) if latencies else 0.0,
        "wall_s": round(wall, 3),
        # CPU seconds per 1000 requests = milliseconds of CPU per request.
        "server_cpu_s_per_1k_req": round(server_cpu * per_k, 3),
        "replica_cpu_s_per_1k_req": round(sum(replica_cpu) * per_k, 3),
        "redis_cpu_s_per_1k_req": round(redis_cpu * per_k, 3) if redis_cpu is not None else None,
        "emulator_cpu_s_per_1k_req": round(emulator_cpu * per_k, 3),
        # The emulator's code is the same in every run, so its CPU per request is a yardstick of the
        # machine's speed at the time: on a shared VM the raw figures drift by a quarter between runs,
        # this ratio much less (benchmarks/RESULTS.md compares code versions by it).
        "replica_per_emulator_cpu": round(sum(replica_cpu) / emulator_cpu, 3) if emulator_cpu else None,
        "cpu_s": {
            "replicas": [round(c, 2) for c in replica_cpu],
            "redis": round(redis_cpu, 2) if redis_cpu is not None else None,
            "server": round(server_cpu, 2),
            "worker": round(worker_cpu, 2),
            "emulator": round(emulator_cpu, 2),
            # Interrupt time: the kernel's loopback network stack, charged to no process.
            "irq": round(irq, 2),
            # Everything else on the machine (the source, short-lived processes, other people's jobs).
            "other": round(busy / CLK_TCK - irq - measured, 2),
        },
        # Share of the whole machine busy during the swarm (all processes, 100 % = every core busy).
        "machine_busy_pct": round(100 * busy / total, 1) if total else None,
        "cpus": os.cpu_count(),
        # Round trips that run a script, Redis commands (script-internal ones included) and the time Redis
        # spent inside scripts, per supernode request; the rest of redis-server's CPU is network I/O.
        "redis_evalsha_per_req": round(redis_delta[1] / requests, 2) if redis_delta and requests else None,
        "redis_cmds_per_req": round(redis_delta[0] / requests, 2) if redis_delta and requests else None,
        "redis_script_cpu_s": round(redis_delta[2] / 1e6, 2) if redis_delta else None,
        "success": sum(r.success for r in results),
        "back_sourced": sum(r.back_sourced for r in results),
        "migrations": sum(r.migrations for r in results),
        "supernode_5xx": sum(r.supernode_5xx for r in results),
        "no_answer": sum(1 for e in exchanges if e.http_status is None),
        "protocol_errors": sum(len(r.protocol_errors) for r in results),
        "pieces_from_peers": from_peers,
        "pieces_from_cdn": from_cdn,
        "p2p_share": round(from_peers / (from_peers + from_cdn), 3) if from_peers + from_cdn else None,
        "endpoints": endpoints,
        "codes": dict(sorted(codes.items())),
    }
    line["other_top_cpu_s"] = other_consumers(before, after, config.extra.get("own_pids", set()))
    line.update({k: v for k, v in config.extra.items() if k != "own_pids"})
    return line


def other_consumers(before: CpuSnapshot, after: CpuSnapshot, own: set[int], top: int = 4) -> list[tuple[str, float]]:
    """The biggest CPU users during the window that are not ours (processes alive at both ends)."""
    by_name: dict[str, float] = {}
    for pid, (comm, cpu) in after.processes.items():
        if pid in own or pid not in before.processes:
            continue
        delta = cpu - before.processes[pid][1]
        if delta > 0.05:
            by_name[comm] = by_name.get(comm, 0.0) + delta
    ranked = sorted(by_name.items(), key=lambda item: -item[1])[:top]
    return [(name, round(cpu, 2)) for name, cpu in ranked]


# --- profiling -----------------------------------------------------------------------------------


@contextlib.contextmanager
def py_spy(pid: int, out: Path, rate: int) -> Iterator[None]:
    """Sample one replica with py-spy for the duration of the block (attach mode, non-blocking).

    Attaching needs ptrace rights over the replica (root, or CAP_SYS_PTRACE, or ptrace_scope 0).
    ``--nonblocking`` does not pause the replica for each sample, so the profile barely slows it.
    ``--gil`` keeps only samples of the thread holding the GIL: Python CPU time, not threads parked
    in ``epoll_wait`` or in an idle thread pool (which py-spy would otherwise count as busy).
    ``--full-filenames`` lets the summary tell the standard library from third-party packages.
    """
    binary = Path(sys.executable).with_name("py-spy")
    command = [str(binary if binary.exists() else "py-spy"), "record", "--pid", str(pid), "--format", "raw",
               "--rate", str(rate), "--nonblocking", "--gil", "--full-filenames", "--output", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    time.sleep(1.0)  # let it attach before the workload starts
    if spy.poll() is not None:
        raise RuntimeError(f"py-spy failed: {spy.stderr.read().decode(errors='replace') if spy.stderr else ''}")
    try:
        yield
    finally:
        # SIGINT makes py-spy write its output and exit.
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(10)


@dataclass(frozen=True)
class Frame:
    name: str  # ``func (short/path.py)``, line numbers dropped so one function is one entry
    path: str  # short path: ``starlette/routing.py``, ``asyncio/streams.py``, ``app/bridge/service.py``
    stdlib: bool


def parse_frame(frame: str) -> Frame:
    """``func (/abs/path/file.py:123)`` as py-spy prints it → Frame."""
    func, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    stdlib = path.startswith("<")  # <frozen ...>, <string> (dataclass-generated methods)
    for marker, is_stdlib in (("site-packages/", False), ("lib/python3.11/", True), (str(REPO) + "/", False)):
        if marker in path:
            path, stdlib = path.split(marker, 1)[1], is_stdlib
            break
    return Frame(f"{func} ({path})", path, stdlib)


# Who "owns" a sample: the innermost frame that is neither the standard library nor the process's entry
# point, so time in e.g. asyncio.StreamReader.readline counts for the library that called it (redis-py).
OWNERS: list[tuple[str, str]] = [
    ("app/api/deps.py", "sync FastAPI dependency in the threadpool (app/api/deps.py get_bridge)"),
    ("app/scheduler/", "app: scheduler"),
    ("app/state/", "app: state (script calls, JSON)"),
    ("app/bridge/", "app: bridge (parsing, snapshot, answers)"),
    ("app/protocol/", "app: protocol (wire parsing, geometry)"),
    ("app/api/", "app: routes and middleware"),
    ("app/", "app: other"),
    ("redis/", "redis-py client (pack, send, read, parse, pool)"),
    ("prometheus", "prometheus instrumentator middleware"),
    ("anyio/", "anyio (threadpool hop of the sync dependency)"),
    ("starlette/", "starlette/fastapi (routing, request, dependencies, middleware)"),
    ("fastapi/", "starlette/fastapi (routing, request, dependencies, middleware)"),
    ("uvicorn/", "uvicorn HTTP protocol (httptools)"),
    ("httptools/", "uvicorn HTTP protocol (httptools)"),
    ("h11/", "uvicorn HTTP protocol (httptools)"),
    ("pydantic", "pydantic"),
]
_ENTRY = ("app/main.py", "app/__main__.py")
# Stacks containing one of these functions, whatever else they do (inclusive shares).
MARKERS: list[tuple[str, str]] = [
    ("run_in_threadpool", "FastAPI runs a sync dependency in a worker thread (event-loop side)"),
    ("WorkerThread.run", "anyio worker threads (thread side)"),
    ("Redis.execute_command", "redis-py execute_command (whole round trip, CPU part)"),
    ("PeerBridge.pull", "PeerBridge.pull (whole /peer/task handler)"),
    ("PeerBridge.piece_success", "PeerBridge.piece_success (whole /peer/piece/suc handler)"),
    ("PeerBridge.register", "PeerBridge.register (whole /peer/registry handler)"),
    ("schedule", "app.scheduler.schedule"),
    ("to_snapshot", "bridge.to_snapshot (snapshot JSON → dataclasses)"),
    ("loads (", "orjson/json loads"),
]


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Where a replica's Python CPU went, from py-spy's collapsed stacks (``a;b;c count`` per line)."""
    self_cost: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    markers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [parse_frame(f) for f in stack.split(";") if f]
        self_cost[frames[-1].name] += count
        for name in {f.name for f in frames}:
            inclusive[name] += count
        owner = "asyncio event loop, sockets, selector (no library frame above)"
        for frame in reversed(frames):
            if frame.stdlib or frame.path in _ENTRY:
                continue
            owner = next((label for prefix, label in OWNERS if frame.path.startswith(prefix)), frame.path)
            break
        owners[owner] += count
        for needle, label in MARKERS:
            if any(f.name.startswith(needle) or f".{needle}" in f.name.split(" (")[0] for f in frames):
                markers[label] += count

    def pct(counter: Counter[str], limit: int | None = top) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(limit)]

    return {
        "samples": total,
        "by_owner_pct": pct(owners, None),
        "markers_inclusive_pct": pct(markers, None),
        "top_self_pct": pct(self_cost),
        "top_inclusive_pct": pct(inclusive),
    }


# --- the whole invocation ------------------------------------------------------------------------


def start_cluster(workdir: Path, args: argparse.Namespace, state_url: str, broker_url: str) -> Cluster:
    extra: dict[str, str] = {}
    if args.replica_workers:
        extra["DF_WORKERS"] = str(args.replica_workers)
    if args.redis_max_connections:
        extra["DF_REDIS_MAX_CONNECTIONS"] = str(args.redis_max_connections)
    extra.update(args.replica_env)
    path = [*filter(None, [os.environ.get("PYTHONPATH")])]
    if args.hiredis:
        # Only the replicas and workers see it: the shared virtualenv stays as pyproject.toml makes it.
        path.insert(0, str(Path(args.hiredis).resolve()))
    if path:
        extra["PYTHONPATH"] = os.pathsep.join(path)
    # An empty DF_REDIS_URL is embedded mode (app/core/config.py), so Cluster starts that process too.
    cluster = Cluster(workdir, "" if args.embedded else state_url, None if args.embedded else broker_url, extra)
    workdir.mkdir(parents=True, exist_ok=True)
    for _ in range(1 if args.embedded else args.replicas):
        cluster.start_replica()
    for _ in range(0 if args.embedded else args.workers):
        cluster.start_worker()
    return cluster


def dump_peers(path: Path, run: int, results: list[DfgetResult]) -> None:
    """One JSON line per peer (appended): how long it took, where its time went, what it was told."""
    with path.open("a") as out:
        for r in results:
            waited = r.duration - sum(e.elapsed for e in r.exchanges)
            out.write(json.dumps({
                "run": run, "cid": r.cid, "success": r.success, "back_sourced": r.back_sourced, "error": r.error,
                "duration_s": round(r.duration, 3), "in_requests_s": round(r.duration - waited, 3),
                "registrations": r.registrations, "migrations": r.migrations, "pulls": r.pulls,
                "codes": [f"{e.endpoint.rsplit('/', 1)[-1]}:{e.code}" for e in r.exchanges],
            }) + "\n")


def bench(args: argparse.Namespace, workdir: Path, state_url: str, broker_url: str) -> int:
    """Start everything, warm up, run the measured swarms (each in its own event loop), stop everything."""
    deadline = time.monotonic() + args.timeout
    source_file = workdir / "source.bin"
    with open(source_file, "wb") as handle:  # random bytes: no compression or dedup anywhere helps
        for _ in range(args.size_mib):
            handle.write(os.urandom(MIB))
    cluster = start_cluster(workdir / "cluster", args, state_url, broker_url)
    failures = 0
    try:
        admin = None if args.embedded else redis.Redis.from_url(state_url)
        targets = Targets(
            replica_pids=[r.popen.pid for r in cluster.replicas],
            worker_pids=[w.popen.pid for w in cluster.workers],
            redis_pid=redis_pid(admin) if admin is not None else None,
            redis_admin=admin,
        )
        nodes = [r.node for r in cluster.replicas]
        own = {os.getpid(), *targets.replica_pids, *targets.worker_pids, *filter(None, [targets.redis_pid])}
        for pid in targets.worker_pids:
            own.update(children_of(pid))
        config = RunConfig(
            peers=args.peers,
            file_size=args.size_mib * MIB,
            versions=args.versions.split(","),
            mode="embedded" if args.embedded else "cluster",
            replicas=len(cluster.replicas),
            workers=len(cluster.workers),
            sleep_scale=args.sleep_scale,
            extra={
                "profiled": bool(args.profile),
                "client_loop": args.client_loop,
                "emulator_gc": args.emulator_gc,
                "redis_max_connections": args.redis_max_connections or None,
                "replica_env": dict(args.replica_env),
                "profile_pinned": bool(args.profile and args.profile_pin),
                "hiredis": bool(args.hiredis),
                "own_pids": own,
            },
        )
        if admin is not None:
            # Redis is shared (other engineers' test runs use other dbs of it): how busy is it without us?
            # Our idle replicas and worker add a few commands/s (heartbeats, broker polls).
            first = redis_counters(admin)
            time.sleep(2.0)
            config.extra["redis_background_cmds_per_s"] = round((redis_counters(admin)[0] - first[0]) / 2.0, 1)
        with SourceProcess({"blob.bin": source_file}) as source:
            nonce = uuid.uuid4().hex[:8]  # a fresh task per run: every run seeds from scratch, like the Go run
            if args.warmup_peers:
                # Imports, Lua script loads and connection pools of the replicas warm up on a small swarm.
                warm = RunConfig(**{**config.__dict__, "peers": args.warmup_peers})
                url = source.url(f"blob.bin?warmup={nonce}")
                budget = max(1.0, deadline - time.monotonic())
                out_dir = workdir / "out-warm"
                out_dir.mkdir()
                client_loop(args.client_loop, run_swarm(warm, nodes, url, out_dir, targets, budget, "warmup"),
                            collect=args.emulator_gc)
            profile_dir = Path(args.profile).resolve() if args.profile else None
            spy = contextlib.ExitStack()
            if profile_dir is not None:
                profile_dir.mkdir(parents=True, exist_ok=True)
                # A replica with workers is a supervisor that only waits: its first worker is profiled.
                profiled = min(children_of(targets.replica_pids[0]), default=targets.replica_pids[0])
                if args.profile_pin:
                    # The processes this run measures (own), and the replicas' workers besides.
                    everyone = [*own, *(w for pid in targets.replica_pids for w in children_of(pid))]
                    spy.enter_context(pinned(profiled, everyone))
                spy.enter_context(py_spy(profiled, profile_dir / "replica0.pyspy.txt", args.profile_rate))
            with spy:
                for run in range(1, args.runs + 1):
                    budget = deadline - time.monotonic()
                    if budget <= 1:
                        raise BenchTimeout(f"global timeout of {args.timeout} s reached before run {run}")
                    source.reset()
                    config.extra["background_busy_pct"] = wait_quiet(min(args.quiet_wait, budget / 2))
                    url = source.url(f"blob.bin?run={run}-{nonce}")
                    out_dir = workdir / f"out{run}"
                    out_dir.mkdir()
                    swarm = run_swarm(config, nodes, url, out_dir, targets, budget, run)
                    line, results = client_loop(args.client_loop, swarm, collect=args.emulator_gc)
                    line["source_full_gets"] = source.stats("blob.bin")["full_gets"]
                    print(json.dumps(line), flush=True)
                    if args.dump:
                        dump_peers(Path(args.dump), run, results)
                    system_errors = sum(n for code, n in line["codes"].items() if code.endswith(":500"))
                    if system_errors:
                        print(f"# {system_errors} answers with code 500 (system error): see the replica logs "
                              "(--keep); MaxConnectionsError = redis-py's pool limit, see --redis-max-connections",
                              file=sys.stderr)
                    if line["timed_out"]:
                        raise BenchTimeout(f"global timeout of {args.timeout} s reached during run {run}")
                    bad = [r for r in results if not r.success or r.back_sourced or r.supernode_5xx]
                    failures += len(bad)
                    for r in bad[:3]:
                        print(f"# peer {r.cid}: {r.error} {r.traceback[-500:]}", file=sys.stderr)
            if profile_dir is not None:
                summary = summarize_profile(profile_dir / "replica0.pyspy.txt")
                (profile_dir / "summary.json").write_text(json.dumps(summary, indent=1))
                print(json.dumps({"profile": str(profile_dir / "summary.json"), **summary}), flush=True)
    except BaseException:
        print(cluster.logs(), file=sys.stderr)  # the replicas' and workers' last log lines say why
        raise
    finally:
        cluster.stop()
    return 1 if failures else 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--peers", type=int, default=200)
    parser.add_argument("--size-mib", type=int, default=64, help="file size in MiB (random bytes)")
    parser.add_argument("--replicas", type=int, default=1, help="replicas, each with its default DF_WORKERS")
    parser.add_argument("--replica-workers", type=int, default=None, help="DF_WORKERS of each replica")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--versions", default="1.0.6", help="comma-separated dfget versions, assigned round-robin")
    parser.add_argument("--sleep-scale", type=float, default=1.0, help="scale of the clients' 602/retry sleeps")
    parser.add_argument("--warmup-peers", type=int, default=8, help="peers of an unmeasured warm-up swarm (0: none)")
    parser.add_argument("--client-loop", choices=("uvloop", "asyncio"), default="uvloop", help="emulator's loop")
    parser.add_argument(
        "--emulator-gc", action="store_true",
        help="keep the emulator's garbage collector on during the swarms (off by default: measure.client_loop)",
    )
    parser.add_argument("--embedded", action="store_true", help="one embedded-mode process (no Redis, no worker)")
    parser.add_argument("--redis-db", type=int, default=None, help="force state db N and broker db N+1")
    parser.add_argument("--timeout", type=float, default=300.0, help="global time budget in seconds")
    parser.add_argument(
        "--redis-max-connections", type=int, default=0,
        help="DF_REDIS_MAX_CONNECTIONS of the replicas and workers (default: the setting's default)",
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, help="wait up to S s before each run for the machine to be idle"
    )
    parser.add_argument(
        "--hiredis", metavar="DIR",
        help="put DIR (made by: pip install --target DIR hiredis) on the replicas' path: redis-py uses hiredis",
    )
    parser.add_argument("--replica-env", type=env_pair, action="append", default=[], metavar="DF_NAME=VALUE",
                        help="a setting for the replicas and workers (repeatable), e.g. DF_PULL_WINDOW_PIECES=8")
    parser.add_argument("--dump", metavar="FILE", help="append one JSON line per peer and run to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (replica and worker logs)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy replica 0 during the runs; raw stacks to DIR")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--profile-pin", action="store_true",
                        help="the profiled replica process alone on the last CPU, everything else on the others")
    args = parser.parse_args(argv)
    if args.peers < 1 or args.runs < 1 or args.replicas < 1 or args.workers < 0 or args.size_mib < 1:
        parser.error("--peers, --runs, --replicas and --size-mib must be >= 1, --workers >= 0")
    if not args.embedded and args.workers < 1:
        parser.error("cluster mode needs at least one worker (--workers) to seed the file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_client_process()

    stop_on_signals(int(args.timeout) + 60)
    try:
        with workspace(args.keep, "bench-cp-") as tmp, leased_dbs(args.redis_db) as (state, broker):
            return bench(args, tmp, state, broker)
    except BenchTimeout as exc:
        print(f"# stopped: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
