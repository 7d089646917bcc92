"""Scale benchmark (issue 10 #3): the control-plane workload as the work grows, on ONE replica.

The workload of bench_control_plane (emulated dfget 1.0.6 peers, ``instant_pieces``: every registration,
pull, report and metrics call is real, no piece bytes move), against one replica (``python -m app`` with
its default worker processes) and one Celery seed worker (``DF_SEED_WORKER_NICE=19``, as on any host shared with
replicas; ``--replica-env`` overrides it), on a private ``redis-server`` (state) and a
second one (the Celery broker), so Redis CPU and memory are this benchmark's alone on a shared host.
Every mode starts that cluster afresh (an empty Redis) and warms it up on a small unmeasured swarm.

* ``--peers-curve 200,500,1000,2000``: N peers on one task (a 64 MiB file, 16 pieces), one run per N.
* ``--tasks 1000x5``: 1,000 concurrent tasks × 5 peers (distinct URLs of one small file, 2 pieces).
* ``--memory``: Redis bytes per task (T new tasks, one peer each) and per peer (P more peers on one
  seeded task), from ``INFO memory`` deltas once Redis settles.
* ``--expiry``: task TTL set to 10 s (``DF_TASK_TTL_SECONDS``); after a swarm, wait past it and list
  every key that outlived it (DBSIZE and used_memory against the baseline), then again after one more
  registration (which runs the lazy GC of the global indexes).
* ``--start-rate 200``: peers of ``--peers-curve`` and ``--tasks`` start at this many per second (the
  default); ``0``: all at once. ``--herd`` also runs both all at once, as the issue measured: the
  ramped series is the one the bounds are judged on when both exist (see SCALE-RESULTS.md).
  ``--memory`` and ``--expiry`` start theirs at ``--memory-rate`` (50/s), slow enough to be served.
* ``--all``: all four (plus ``--herd``) into a fresh ``--json`` file, then ``--report``.
* ``--report``: benchmarks/SCALE-RESULTS.md and scale.png from the JSON file (bench_scale_report.py).

Each run prints one JSON line and appends it to ``--json`` (default benchmarks/SCALE-RESULTS.jsonl).
A swarm is bounded by ``--swarm-timeout`` (recorded as timed out), the invocation by ``--timeout``.
Exit status 1 when a peer failed, went back to the source or saw a 5xx; 2 when stopped.

    .venv/bin/python -m benchmarks.bench_scale --all
    .venv/bin/python -m benchmarks.bench_scale --peers-curve 50,100 --json /tmp/s.jsonl   # development

CPU: utime + stime from /proc; the replica is measured as its whole process tree, reaped children
included (benchmarks.measure.tree_cpu), so worker processes count however many there are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis

from app.protocol.pieces import DEFAULT_PIECE_SIZE, payload_size
from app.state import schema
from app.swarm import DfgetResult
from app.swarm.cluster import LocalCluster
from app.swarm.replica import LocalRedis
from app.swarm.source import SourceProcess
from benchmarks.measure import (
    CLK_TCK,
    BenchTimeout,
    LoopLag,
    Peer,
    client_loop,
    env_pair,
    machine_busy,
    ms,
    percentile,
    prepare_client_process,
    proc_cpu,
    start_peers,
    steal_jiffies,
    stop_on_signals,
    stop_peers,
    tree_cpu,
    tree_pids,
    wait_quiet,
    workspace,
)

MIB = 1 << 20
HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "SCALE-RESULTS.jsonl"
PULL = "/peer/task"
SHORT_TTL = 10  # the smallest DF_TASK_TTL_SECONDS the settings accept
VERSIONS = ["1.0.6"]
FAILED: list[str] = []  # runs where a peer failed, went back to the source or saw a 5xx: exit status 1
INTERRUPTED: list[bool] = []  # a stop signal arrived during a swarm


# --- the measured cluster ----------------------------------------------------------------------------


@dataclass
class Reading:
    at: float
    replica: float
    worker: float
    redis: float
    broker: float
    emulator: float
    machine: tuple[float, float, float]
    steal: int
    commands: int


@dataclass
class Memory:
    used: int  # INFO memory used_memory: everything, client buffers included
    dataset: int  # used_memory_dataset: the keys' share (without client buffers and server overhead)
    keys: int  # DBSIZE of the state db

    def minus(self, other: Memory) -> dict[str, int]:
        return {"used_memory": self.used - other.used, "used_memory_dataset": self.dataset - other.dataset,
                "keys": self.keys - other.keys}


class Env:
    """One replica + one seed worker on private Redis servers, and the origin, for one mode."""

    def __init__(self, workdir: Path, files: dict[str, Path], extra_env: dict[str, str]) -> None:
        self.workdir, self.files, self.extra_env = workdir, files, extra_env

    def __enter__(self) -> Env:
        self._stack = contextlib.ExitStack()
        try:
            self.state = self._stack.enter_context(LocalRedis(self.workdir / "redis"))
            self.broker = self._stack.enter_context(LocalRedis(self.workdir / "broker"))
            self.source = self._stack.enter_context(SourceProcess(self.files))
            # DF_DRAIN_SECONDS=0: a stopped replica closes at once (there is no load balancer to drain).
            # DF_SEED_WORKER_NICE=19: everything shares this host, as the README advises for such a host.
            env = {"DF_DRAIN_SECONDS": "0", "DF_SEED_WORKER_NICE": "19", **self.extra_env}
            self.cluster = LocalCluster(self.workdir / "cluster", self.state.url, self.broker.url, env)
            self._stack.callback(self.cluster.stop)
            self.cluster.start_replica()
            self.cluster.start_worker()
        except BaseException:
            self._stack.close()
            raise
        self.admin = redis.Redis.from_url(self.state.url)
        self.node = self.cluster.replicas[0].node
        assert self.state.proc is not None and self.broker.proc is not None
        self.redis_pid, self.broker_pid = self.state.proc.pid, self.broker.proc.pid
        return self

    def __exit__(self, *exc: object) -> None:
        self.admin.close()
        self._stack.close()

    @property
    def replica_pid(self) -> int:
        return self.cluster.replicas[0].popen.pid

    @property
    def worker_pid(self) -> int:
        return self.cluster.workers[0].popen.pid

    def reading(self) -> Reading:
        return Reading(
            at=time.monotonic(), replica=tree_cpu(self.replica_pid), worker=tree_cpu(self.worker_pid),
            redis=proc_cpu(self.redis_pid), broker=proc_cpu(self.broker_pid),
            emulator=time.process_time(),  # the swarm runs in this process, all of its threads
            machine=machine_busy(), steal=steal_jiffies(),
            commands=int(self.admin.info("stats")["total_commands_processed"]),
        )

    def memory(self) -> Memory:
        info = self.admin.info("memory")
        return Memory(int(info["used_memory"]), int(info["used_memory_dataset"]), int(self.admin.dbsize()))

    def settled_memory(self, max_wait: float = 15.0) -> Memory:
        """Memory once it stops moving: the last reports and service/down land after the swarm ends."""
        last = self.memory()
        deadline = time.monotonic() + max_wait
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self.memory()
            if abs(now.dataset - last.dataset) <= max(last.dataset // 500, 2048) and now.keys == last.keys:
                return now
            last = now
        return last

    def logs(self) -> str:
        return self.cluster.logs()


# --- one measured swarm ------------------------------------------------------------------------------


@dataclass
class Swarm:
    mode: str
    peers: int
    tasks: int
    url_for: Callable[[int], str]
    start_rate: float = 0.0  # peers started per second (0: all at once)


# before, after, results, timed out, the emulator's loop lag (benchmarks.measure.LoopLag)
Outcome = tuple[Reading, Reading, list[DfgetResult], bool, dict[str, float]]
STOP_SIGNALS = (signal.SIGTERM, signal.SIGALRM)


async def run_peers(env: Env, swarm: Swarm, out_dir: Path, budget: float) -> Outcome:
    """One swarm: the peers' servers and pools are made before the clock starts, stopped after it."""
    nodes = [env.node]  # one replica: every entry of the peers' node lists is it
    peers = await start_peers(swarm.peers, nodes, swarm.url_for, out_dir, VERSIONS)
    timed_out = False

    async def start(index: int, peer: Peer) -> None:
        if swarm.start_rate:
            await asyncio.sleep(index / swarm.start_rate)
        await peer.dfget.run()

    # A signal raised as an exception inside the loop would end one peer's task, not the swarm:
    # inside a swarm SIGTERM and the alarm cancel the swarm, which then stops like a timeout.
    loop, swarm_task = asyncio.get_running_loop(), asyncio.ensure_future(
        asyncio.gather(*(start(i, p) for i, p in enumerate(peers))))
    def stop() -> None:
        INTERRUPTED.append(True)
        swarm_task.cancel()

    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    try:
        before = env.reading()
        async with LoopLag() as lag:
            try:
                async with asyncio.timeout(budget):
                    await asyncio.shield(swarm_task)
            except (TimeoutError, asyncio.CancelledError):
                timed_out = True  # report what the peers did so far
                swarm_task.cancel()
                await asyncio.gather(swarm_task, return_exceptions=True)
        after = env.reading()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)  # this leaves SIG_DFL: main()'s handlers must come back
            signal.signal(sig, previous[sig])
        await stop_peers(peers)
    return before, after, [p.dfget.result for p in peers], timed_out, lag.summary()


def measure(env: Env, args: argparse.Namespace, swarm: Swarm, deadline: float, label: str) -> dict[str, Any]:
    """Wait for a quiet machine, run one swarm, return (and print, and append) its JSON line."""
    budget = deadline - time.monotonic()
    if budget <= 5:
        raise BenchTimeout(f"global timeout reached before {label}")
    background = wait_quiet(min(args.quiet_wait, budget / 4))
    base = env.settled_memory()
    out_dir = env.workdir / f"out-{label}"
    out_dir.mkdir(parents=True)
    swarm_budget = min(budget, args.swarm_timeout)
    before, after, results, timed_out, lag = client_loop("uvloop", run_peers(env, swarm, out_dir, swarm_budget))
    right_after = env.memory()  # before any short TTL can pass (--expiry)
    memory = env.settled_memory().minus(base)
    line = summarize(swarm, results, before, after)
    line.update(run=label, start_rate=swarm.start_rate, series="ramped" if swarm.start_rate else "herd",
                timed_out=timed_out, background_busy_pct=background, emulator_loop_lag=lag,
                redis_memory_delta=memory, redis_right_after=right_after.__dict__,
                replica_processes=len(tree_pids(env.replica_pid)), cpus=os.cpu_count(), replica_env=env.extra_env,
                at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    emit(args, line)
    if line["success"] < swarm.peers or line["back_sourced"] or line["supernode_5xx"] or timed_out:
        FAILED.append(label)
    if timed_out and (time.monotonic() >= deadline - 1 or INTERRUPTED):
        raise BenchTimeout(f"stopped during {label}")
    return line


def summarize(swarm: Swarm, results: list[DfgetResult], before: Reading, after: Reading) -> dict[str, Any]:
    wall = after.at - before.at
    exchanges = [e for r in results for e in r.exchanges]
    requests = len(exchanges)
    latencies = sorted(e.elapsed for e in exchanges)
    pulls = sorted(e.elapsed for e in exchanges if e.endpoint == PULL)
    replica, redis_cpu = after.replica - before.replica, after.redis - before.redis
    worker, broker = after.worker - before.worker, after.broker - before.broker
    emulator = after.emulator - before.emulator
    busy, total = after.machine[0] - before.machine[0], after.machine[1] - before.machine[1]
    per_req = 1000 / requests if requests else 0.0  # CPU seconds × this = ms of CPU per request
    from_peers = sum(r.pieces_from_peers for r in results)
    from_cdn = sum(r.pieces_from_cdn for r in results)
    codes = Counter(f"{e.endpoint}:{e.code if e.code is not None else e.http_status}" for e in exchanges)
    return {
        "bench": "scale", "mode": swarm.mode, "peers": swarm.peers, "tasks": swarm.tasks,
        "peers_per_task": swarm.peers // swarm.tasks,
        "requests": requests, "req_per_s": round(requests / wall, 1) if wall else 0.0, "wall_s": round(wall, 3),
        "server_cpu_ms_per_req": round((replica + redis_cpu) * per_req, 4),
        "replica_cpu_ms_per_req": round(replica * per_req, 4),
        "redis_cpu_ms_per_req": round(redis_cpu * per_req, 4),
        "worker_cpu_ms_per_req": round(worker * per_req, 4),
        "broker_redis_cpu_ms_per_req": round(broker * per_req, 4),
        "emulator_cpu_ms_per_req": round(emulator * per_req, 4),
        "cpu_s": {"replica": round(replica, 2), "redis": round(redis_cpu, 2), "worker": round(worker, 2),
                  "broker_redis": round(broker, 2), "emulator": round(emulator, 2)},
        "machine_busy_pct": round(100 * busy / total, 1) if total else None,
        "steal_pct": round(100 * (after.steal - before.steal) / total, 1) if total else None,
        "other_cpu_s": round(busy / CLK_TCK - (replica + redis_cpu + worker + broker + emulator), 2),
        "redis_cmds_per_req": round((after.commands - before.commands) / requests, 2) if requests else None,
        "latency_ms": {"p50": ms(percentile(latencies, 50)), "p99": ms(percentile(latencies, 99)),
                       "max": ms(latencies[-1]) if latencies else 0.0},
        "pull_latency_ms": {"n": len(pulls), "p50": ms(percentile(pulls, 50)), "p99": ms(percentile(pulls, 99))},
        "success": sum(r.success for r in results), "back_sourced": sum(r.back_sourced for r in results),
        "supernode_5xx": sum(r.supernode_5xx for r in results),
        "no_answer": sum(1 for e in exchanges if e.http_status is None),
        "migrations": sum(r.migrations for r in results),
        "protocol_errors": sum(len(r.protocol_errors) for r in results),
        "p2p_share": round(from_peers / (from_peers + from_cdn), 3) if from_peers + from_cdn else None,
        "codes": dict(sorted(codes.items())),
    }


def emit(args: argparse.Namespace, line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)
    with Path(args.json).open("a") as out:
        out.write(json.dumps(line) + "\n")


# --- the modes ---------------------------------------------------------------------------------------


def warm_up(env: Env, args: argparse.Namespace, deadline: float) -> None:
    """Imports, Lua script loads and connection pools warm up on a small swarm (not recorded)."""
    nonce = uuid.uuid4().hex[:8]
    (env.workdir / "out-warmup").mkdir(parents=True)
    swarm = Swarm("warmup", args.warmup_peers, 1, lambda _i: env.source.url(f"blob.bin?warmup={nonce}"))
    client_loop("uvloop", run_peers(env, swarm, env.workdir / "out-warmup", max(5.0, deadline - time.monotonic())))


def one_url(url: str) -> Callable[[int], str]:
    return lambda _i: url


def grouped(env: Env, pattern: str, per_task: int) -> Callable[[int], str]:
    """Peers k·n .. k·n+n-1 download task k (``pattern`` with k for {}): a task's peers start together."""
    return lambda i: env.source.url(pattern.format(i // per_task))


def peers_curve(env: Env, args: argparse.Namespace, deadline: float, rate: float) -> None:
    for n in args.peers_curve:
        for run in range(1, args.runs + 1):
            url = env.source.url(f"blob.bin?peers={n}-{run}-{uuid.uuid4().hex[:8]}")  # a fresh task per run
            measure(env, args, Swarm("peers", n, 1, one_url(url), rate), deadline, f"peers{n}-{run}-at{rate:g}")


def tasks_mode(env: Env, args: argparse.Namespace, deadline: float, rate: float) -> None:
    for tasks, per_task in args.tasks:
        for run in range(1, args.runs + 1):
            nonce = uuid.uuid4().hex[:8]
            swarm = Swarm("tasks", tasks * per_task, tasks, grouped(env, f"small.bin?task={{}}-{nonce}", per_task),
                          rate)
            measure(env, args, swarm, deadline, f"tasks{tasks}x{per_task}-{run}-at{rate:g}")


def memory_mode(env: Env, args: argparse.Namespace, deadline: float) -> None:
    """Bytes per task (T new tasks, one peer each), then bytes per peer (P more peers on one seeded task)."""
    nonce = uuid.uuid4().hex[:8]
    tasks = Swarm("memory-tasks", args.memory_tasks, args.memory_tasks,
                  lambda i: env.source.url(f"small.bin?mem={i}-{nonce}"), args.memory_rate)
    line = measure(env, args, tasks, deadline, "memory-tasks")
    valid = clean(line)
    per_task = {k: round(v / args.memory_tasks) for k, v in line["redis_memory_delta"].items()}
    url = env.source.url(f"blob.bin?mem-peers={nonce}")
    valid &= clean(measure(env, args, Swarm("memory-seed", 1, 1, one_url(url)), deadline, "memory-seed"))
    peers = Swarm("memory-peers", args.memory_peers, 1, one_url(url), args.memory_rate)
    line = measure(env, args, peers, deadline, "memory-peers")
    valid &= clean(line)
    per_peer = {k: round(v / args.memory_peers) for k, v in line["redis_memory_delta"].items()}
    emit(args, {"bench": "scale", "mode": "memory", "tasks": args.memory_tasks, "peers": args.memory_peers,
                "bytes_per_task_with_one_peer": per_task, "bytes_per_peer": per_peer,
                "task_file_pieces": args.task_pieces, "peer_task_pieces": 16, "valid": valid})


def clean(line: dict[str, Any]) -> bool:
    """Every peer finished through the supernode: its state in Redis is a whole download's."""
    return bool(line["success"] == line["peers"] and not line["back_sourced"] and not line["timed_out"])


def key_census(admin: redis.Redis) -> dict[str, dict[str, Any]]:
    """Every key of the db: type, TTL (-1: none), MEMORY USAGE and element count."""
    found: dict[str, dict[str, Any]] = {}
    for raw in admin.scan_iter(count=1000):
        key = raw.decode(errors="replace")
        answer = admin.type(raw)
        kind = answer.decode() if isinstance(answer, bytes) else str(answer)
        length = {"hash": admin.hlen, "set": admin.scard, "zset": admin.zcard, "stream": admin.xlen,
                  "list": admin.llen}.get(kind)
        found[key] = {"type": kind, "ttl_s": admin.ttl(raw), "bytes": admin.memory_usage(raw) or 0,
                      "len": length(raw) if length else None}
    return found


def changed_keys(now: dict[str, dict[str, Any]], base: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Keys that are new since the baseline, or that grew (a global hash or zset with more members)."""
    out = []
    for key, info in sorted(now.items()):
        old = base.get(key)
        if old is None or (info["len"] or 0) > (old["len"] or 0) or info["bytes"] > old["bytes"] + 64:
            out.append({"key": key, **info, "baseline": old})
    return out


def expiry_mode(env: Env, args: argparse.Namespace, deadline: float) -> None:
    """After a swarm on short TTLs, wait past them: which keys outlive their TTL?"""
    time.sleep(SHORT_TTL + args.expiry_margin)  # the warm-up's task keys expire first: a clean baseline
    env.settled_memory()
    base_keys, base_memory = key_census(env.admin), env.memory()
    nonce = uuid.uuid4().hex[:8]
    big, small = args.expiry_peers, args.expiry_tasks
    blob = env.source.url(f"blob.bin?expiry={nonce}")
    swarm = Swarm("expiry", big + 2 * small, 1 + small,
                  lambda i: blob if i < big else env.source.url(f"small.bin?expiry={(i - big) // 2}-{nonce}"),
                  args.memory_rate)
    line = measure(env, args, swarm, deadline, "expiry-swarm")
    during = Memory(**line["redis_right_after"])
    time.sleep(SHORT_TTL + args.expiry_margin)  # past every task TTL (they are refreshed until the last report)
    after = env.settled_memory()
    after_keys = key_census(env.admin)
    # One more registration on a new task: register.lua is where df:tasks and df:peers are pruned.
    probe = env.source.url(f"small.bin?expiry-probe={nonce}")
    (env.workdir / "out-probe").mkdir()
    budget = max(5.0, deadline - time.monotonic())
    _b, _a, probed, _t, _lag = client_loop("uvloop", run_peers(env, Swarm("expiry-probe", 1, 1, one_url(probe)),
                                                       env.workdir / "out-probe", budget))
    probe_prefix = schema.task_prefix(probed[0].task_id)  # the probe's own task keys are not leftovers
    probed_keys = {k: v for k, v in key_census(env.admin).items() if not k.startswith(probe_prefix)}
    emit(args, {
        "bench": "scale", "mode": "expiry", "task_ttl_s": SHORT_TTL, "waited_s": SHORT_TTL + args.expiry_margin,
        "peers": line["peers"], "tasks": line["tasks"], "success": line["success"],
        "baseline": {"keys": base_memory.keys, "used_memory": base_memory.used, "dataset": base_memory.dataset},
        "after_swarm": {"keys": during.keys, "used_memory": during.used, "dataset": during.dataset},
        "after_ttl": {"keys": after.keys, "used_memory": after.used, "dataset": after.dataset},
        "outlived_ttl": changed_keys(after_keys, base_keys),
        "after_one_more_registration": changed_keys(probed_keys, base_keys),
        "baseline_keys": sorted(base_keys),
    })


# --- the whole invocation ----------------------------------------------------------------------------


def size_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers")
    return values


def task_list(text: str) -> list[tuple[int, int]]:
    """``1000x5,100x5`` → [(1000, 5), (100, 5)]: tasks × peers per task."""
    out = []
    for item in text.split(","):
        tasks, _, per = item.partition("x")
        try:
            pair = int(tasks), int(per)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item!r}: want TASKSxPEERS, e.g. 1000x5") from None
        if min(pair) < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: both numbers must be >= 1")
        out.append(pair)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--all", action="store_true", help="every mode at the issue's sizes, then --report")
    parser.add_argument("--peers-curve", type=size_list, help="peers on one task, e.g. 200,500,1000,2000")
    parser.add_argument("--tasks", type=task_list, help="concurrent tasks × peers each, e.g. 1000x5")
    parser.add_argument("--memory", action="store_true", help="Redis bytes per task and per peer")
    parser.add_argument("--expiry", action="store_true", help="short TTLs: does Redis return to its baseline?")
    parser.add_argument("--report", action="store_true", help="write SCALE-RESULTS.md and scale.png from --json")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="JSON lines file the runs are appended to")
    parser.add_argument("--out", default=str(HERE), help="directory of SCALE-RESULTS.md and scale.png")
    parser.add_argument("--runs", type=int, default=1, help="runs per size")
    parser.add_argument("--size-mib", type=int, default=64, help="the one-task file (64 MiB: 16 pieces)")
    parser.add_argument("--task-pieces", type=int, default=2, help="pieces of the small file of --tasks/--memory")
    parser.add_argument("--memory-tasks", type=int, default=500)
    parser.add_argument("--memory-peers", type=int, default=200)
    # Slow enough that one replica serves every peer: an overloaded peer goes back to the source and
    # leaves less state than a download through the supernode.
    parser.add_argument("--memory-rate", type=float, default=50.0,
                        help="peers started per second in --memory and --expiry")
    parser.add_argument("--expiry-peers", type=int, default=100, help="peers on one task in --expiry")
    parser.add_argument("--expiry-tasks", type=int, default=50, help="plus this many tasks of 2 peers")
    parser.add_argument("--expiry-margin", type=float, default=20.0, help="seconds waited past the TTL")
    parser.add_argument("--start-rate", type=float, default=200.0,
                        help="peers started per second in every mode (0: all at once)")
    parser.add_argument("--herd", action="store_true",
                        help="also run --peers-curve and --tasks with every peer starting at once (as in the issue)")
    parser.add_argument("--warmup-peers", type=int, default=8)
    parser.add_argument("--quiet-wait", type=float, default=20.0, help="wait up to S s for an idle machine")
    parser.add_argument("--timeout", type=float, default=3600.0, help="global time budget in seconds")
    parser.add_argument("--swarm-timeout", type=float, default=600.0,
                        help="one swarm may take this long; then it is recorded as timed out and the next runs")
    parser.add_argument("--replica-env", type=env_pair, action="append", default=[], metavar="DF_NAME=VALUE",
                        help="a setting for the replica and the worker (repeatable), e.g. DF_REDIS_MAX_CONNECTIONS=64")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (replica and worker logs)")
    args = parser.parse_args(argv)
    if args.all:
        args.peers_curve = args.peers_curve or [200, 500, 1000, 2000]
        args.tasks = args.tasks or [(1000, 5)]
        args.memory = args.expiry = args.report = args.herd = True
    if not (args.peers_curve or args.tasks or args.memory or args.expiry or args.report):
        parser.error("choose a mode: --all, --peers-curve, --tasks, --memory, --expiry or --report")
    if args.runs < 1 or args.size_mib < 1 or args.task_pieces < 1 or args.start_rate < 0:
        parser.error("--runs, --size-mib and --task-pieces must be >= 1, --start-rate >= 0")
    return args


def write_sources(workdir: Path, args: argparse.Namespace) -> dict[str, Path]:
    """Random bytes (nothing compresses or dedups): the one-task file and the small file of many tasks."""
    blob, small = workdir / "blob.bin", workdir / "small.bin"
    with blob.open("wb") as handle:
        for _ in range(args.size_mib):
            handle.write(os.urandom(MIB))
    # Exactly ``task_pieces`` full pieces: the payload of a 4 MiB framed piece is 4 MiB - 5 bytes.
    small.write_bytes(os.urandom(args.task_pieces * payload_size(DEFAULT_PIECE_SIZE)))
    return {"blob.bin": blob, "small.bin": small}


def run_modes(args: argparse.Namespace, workdir: Path) -> None:
    deadline = time.monotonic() + args.timeout
    files = write_sources(workdir, args)
    modes: list[tuple[str, Callable[[Env, argparse.Namespace, float], None], dict[str, str]]] = []
    rates = [args.start_rate, *([0.0] if args.herd and args.start_rate else [])]
    for rate in rates:
        if args.peers_curve:
            modes.append((f"peers-at{rate:g}", partial(peers_curve, rate=rate), {}))
        if args.tasks:
            modes.append((f"tasks-at{rate:g}", partial(tasks_mode, rate=rate), {}))
    if args.memory:
        modes.append(("memory", memory_mode, {}))
    if args.expiry:
        modes.append(("expiry", expiry_mode, {"DF_TASK_TTL_SECONDS": str(SHORT_TTL)}))
    for name, mode, extra_env in modes:
        with Env(workdir / name, files, {**dict(args.replica_env), **extra_env}) as env:
            try:
                warm_up(env, args, deadline)
                mode(env, args, deadline)
            except BaseException:
                print(env.logs(), file=sys.stderr)  # the replica's and worker's last log lines say why
                raise


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    prepare_client_process()

    stop_on_signals(int(args.timeout) + 120)
    try:
        if args.all:
            Path(args.json).write_text("")  # --all regenerates everything: a fresh raw file
        if args.peers_curve or args.tasks or args.memory or args.expiry:
            with workspace(args.keep, "bench-scale-") as tmp:
                run_modes(args, tmp)
            if FAILED:
                print(f"# runs with failed peers, back-to-source or 5xx: {', '.join(FAILED)}", file=sys.stderr)
        if args.report:
            from benchmarks.bench_scale_report import write_report

            write_report(Path(args.json), Path(args.out))
        return 1 if FAILED else 0
    except BenchTimeout as exc:
        print(f"# stopped: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.alarm(0)


if __name__ == "__main__":
    sys.exit(main())
