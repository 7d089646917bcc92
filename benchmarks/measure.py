"""What the swarm benchmarks share: CPU accounting from /proc, percentiles, emulated peers, the client loop.

bench_control_plane (200 peers × one file, the CPU-per-request workload) and bench_scale (the same
workload as it grows: peers 200 → 2,000, 1,000 tasks, Redis memory and expiry) measure the same way;
the pieces live here so both stay the same measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import httpx
import redis

from app.observability.processes import children as children_of
from app.swarm import Dfget, Uploader, loopback_ip, make_http_client, rotated

T = TypeVar("T")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- CPU accounting ------------------------------------------------------------------------------


def proc_cpu(pid: int, descendants: bool = False) -> float:
    """utime + stime (all threads) of one process, optionally plus its live descendants.

    Descendants matter for the Celery worker (prefork pool children). A child that exits inside the
    window takes its CPU with it, but the pool children live as long as the worker.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Field 2 (comm) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / CLK_TCK
    if descendants:
        for child in children_of(pid):
            total += proc_cpu(child, descendants=True)
    return total




def all_processes() -> dict[int, tuple[str, float]]:
    """pid → (command name, CPU seconds) of every process, to name the "other" CPU consumers.

    Includes the CPU of reaped children (cutime + cstime): a test run elsewhere that starts and stops
    servers inside our window shows up on its pytest process that way.
    """
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat.rsplit(")", 1)[1].split()
            found[int(entry.name)] = (comm, sum(int(v) for v in fields[11:15]) / CLK_TCK)
    return found


def machine_busy() -> tuple[float, float, float]:
    """(busy, total, irq + softirq) jiffies of all CPUs, from the first line of /proc/stat.

    Interrupt time (loopback packets are processed in softirq context) is charged to no process.
    """
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already included in user/nice
    return total - idle, total, values[5] + values[6]


def steal_jiffies() -> int:
    """CPU time the hypervisor gave to other guests (all CPUs): a VM's CPU seconds are slower when it grows."""
    return int(Path("/proc/stat").read_text().splitlines()[0].split()[8])


def background_busy(seconds: float) -> float:
    """Percentage of the machine busy over ``seconds`` while this benchmark sends nothing."""
    busy0, total0, _ = machine_busy()
    time.sleep(seconds)
    busy1, total1, _ = machine_busy()
    return 100 * (busy1 - busy0) / max(1, total1 - total0)


def wait_quiet(max_wait: float, threshold: float = 15.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine is nearly idle; returns the last busy percentage.

    The machine is shared (other jobs, other people's test runs against the same Redis): a run that
    starts while something else burns a core measures that too. The JSON line says how busy it was.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy = background_busy(1.0)
        if busy < threshold or time.monotonic() >= deadline:
            return round(busy, 1)


def redis_pid(client: redis.Redis) -> int | None:
    """redis-server's pid, if it is a process of this machine we can read (not another namespace)."""
    pid = int(client.info("server")["process_id"])
    try:
        comm = Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return None
    return pid if "redis" in comm else None


def redis_counters(client: redis.Redis) -> tuple[int, int, int]:
    """(commands, EVALSHA calls, µs inside EVALSHA) the whole server processed so far.

    Commands run by scripts count as commands too. Other clients of the same Redis are included.
    """
    stats = client.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    total = int(client.info("stats")["total_commands_processed"])
    return total, int(evalsha["calls"]), int(evalsha["usec"])


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree: the root and every live descendant, each with its reaped children.

    A replica with worker processes (DF_WORKERS) is a tree. A child that exits and is reaped moves
    its CPU from "live descendant" to its parent's cutime + cstime, so nothing is lost between two
    readings, as long as the parent waits for it (uvicorn's supervisor and Celery do). An exited child
    not yet reaped still has its own /proc entry with its times.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    total = sum(int(v) for v in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
    for child in children_of(pid):
        total += tree_cpu(child)
    return total


def tree_pids(pid: int) -> set[int]:
    """The process and its live descendants (to leave them out of "other" CPU consumers)."""
    found = {pid}
    for child in children_of(pid):
        found |= tree_pids(child)
    return found


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(pct / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# --- emulated peers ------------------------------------------------------------------------------


@dataclass
class Peer:
    dfget: Dfget
    uploader: Uploader
    http: httpx.AsyncClient


async def start_peers(
    count: int, nodes: list[str], url_for: Callable[[int], str], out_dir: Path, versions: Sequence[str],
    sleep_scale: float = 1.0,
) -> list[Peer]:
    """N dfgets with their peer servers, each with its own small HTTP connection pool.

    Not ``Swarm(share_http=True)``: httpcore's pool scans every pooled connection (and polls each idle
    socket) on every request, so one pool of ~1000 connections costs the client O(connections) CPU per
    request, a quadratic cost that made the emulator, not the supernode, the bottleneck. A pool per
    peer is also what 200 real dfget processes have. The pools are made here, before the clock starts
    (a client builds an SSL context, ~10 ms), not inside ``Dfget.run`` as ``Swarm`` would.
    """
    peers = []
    for index in range(count):
        version = versions[index % len(versions)]
        ip = loopback_ip(index)  # distinct 127/8 hosts, like 200 machines; still loopback only
        http = make_http_client(max_connections=16)
        uploader = await Uploader(ip, version=version, http=http, data_dir=out_dir).start()
        dfget = Dfget(
            # Three entries, like the README's VIP list (a failed request migrates to the next entry;
            # dfget 1.0.5+ never goes back to one it used), starting at replica i mod N.
            [rotated(nodes, index)[k % len(nodes)] for k in range(3)],
            url_for(index),  # peer i's download: one URL for all, or one task per group of peers
            out_dir / f"peer{index}.bin",
            uploader=uploader,
            version=version,
            ip=ip,
            http=http,
            instant_pieces=True,
            sleep_scale=sleep_scale,
        )
        peers.append(Peer(dfget, uploader, http))
    return peers


async def stop_peers(peers: list[Peer]) -> None:
    # service/down of every peer server (outside the measured window), bounded like everything else.
    try:
        async with asyncio.timeout(60):
            await asyncio.gather(*(p.uploader.stop(notify=True) for p in peers))
    except TimeoutError:
        await asyncio.gather(*(p.uploader.stop(notify=False) for p in peers))
    await asyncio.gather(*(p.http.aclose() for p in peers))


_FD_LIMIT = 1 << 18


def prepare_client_process() -> None:
    """Process-wide settings of the emulator: no sniffio import per request, the fd limit lifted."""
    # httpcore runs ``import sniffio`` on every request; without sniffio installed that is a failed
    # import, i.e. a search of every sys.path entry each time (~0.4 ms of client CPU per request).
    # A None entry makes the import fail at once, with the same outcome ("asyncio"). Client side only.
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]
    # Thousands of peer servers plus their pooled client connections: 5,000 peers (1,000 tasks × 5) ran out
    # of a hard limit of 20,000. Lift both limits where allowed (root), else the soft one to the hard one.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        wanted = max(hard, _FD_LIMIT)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def client_loop(kind: str, main: Coroutine[Any, Any, T], *, collect: bool = False) -> T:
    """Run one swarm in a fresh event loop: ``kind`` "uvloop" (the benchmarks' default) or "asyncio".

    The emulator shares the machine with the servers, so every client CPU cycle saved is one the
    supernode can use; uvloop is a client-side choice only (the replicas keep their own loop).

    The emulator's cyclic garbage collector is off while the swarm runs (unless ``collect``): a
    thousand emulated dfgets keep hundreds of thousands of live objects (their exchange records,
    pools and tasks), and every full collection walked all of them, a third of the emulator's CPU and
    stalls of a second in which every peer's reply waited (benchmarks/RESULTS.md, 2026-12-02). Real
    dfgets are Go processes, one per host: that cost is the emulator's alone. Cycles made during the
    swarm are collected once it ends, outside the measured window.
    """
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if kind == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    if not collect:
        gc.collect()
        gc.disable()
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main)
    finally:
        if not collect:
            gc.enable()
            gc.collect()


def peak_rss_mib() -> float:
    """The emulator process's peak resident memory so far, MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)




# --- the run's frame: a work directory and a hard stop --------------------------------------------


class LoopLag:
    """How late the emulator's event loop runs a timer, sampled every ``every`` s while the block runs.

    Every exchange's latency is measured inside the same loop, so a busy emulator adds its own lag to
    each figure, the 5 s of "no answer" included. A lag near those latencies means the emulator, not the
    supernode, is what the run measured.
    """

    def __init__(self, every: float = 0.05) -> None:
        self.every = every
        self.lags: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        # The wall clock, not loop.time(): uvloop's is the time cached at the start of the loop's
        # iteration, which hides a long iteration's lag.
        while True:
            due = time.monotonic() + self.every
            await asyncio.sleep(self.every)
            self.lags.append(max(0.0, time.monotonic() - due))

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def summary(self) -> dict[str, float]:
        lags = sorted(self.lags)
        if not lags:
            return {}
        return {"p50_ms": ms(percentile(lags, 50)), "p99_ms": ms(percentile(lags, 99)), "max_ms": ms(lags[-1])}


class BenchTimeout(Exception):
    """The global time budget ran out (or SIGTERM arrived); cleanup still runs."""


def stop_on_signals(seconds: int) -> None:
    """A hard stop after ``seconds`` on top of the asyncio budgets (a hang in a blocking cluster start),
    and SIGTERM handled like Ctrl-C: both raise BenchTimeout, which unwinds through the blocks that stop
    every child process."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise BenchTimeout(f"signal {signum}")

    signal.signal(signal.SIGALRM, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    signal.alarm(seconds)


@contextlib.contextmanager
def workspace(keep: bool, prefix: str) -> Iterator[Path]:
    """A temporary directory (source files, seed cache, logs), removed at the end unless ``keep``."""
    if keep:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        print(f"# workdir (kept): {path}", file=sys.stderr)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def env_pair(text: str) -> tuple[str, str]:
    """``--replica-env DF_NAME=VALUE``: one setting for the replicas and workers a benchmark starts."""
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("DF_"):
        raise argparse.ArgumentTypeError(f"expected DF_NAME=VALUE, got {text!r}")
    return name, value


@contextlib.contextmanager
def pinned(alone: int, others: Sequence[int]) -> Iterator[None]:
    """Process ``alone`` (every thread) on the last CPU by itself, ``others`` and this process on the rest,
    for the block; the earlier affinities come back after it.

    For profiles on a shared machine: py-spy counts a thread that is runnable but waiting for a CPU as
    busy where it stopped, so on a full 2-core machine the replica's writes to sockets, after which the
    kernel often runs the woken Redis or client first, showed a quarter of its samples (2026-12-03,
    RESULTS.md). Alone on a CPU, a runnable thread is a running one.
    """
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("pinning needs at least 2 CPUs")
    saved: dict[int, set[int]] = {}

    def place(pid: int, mask: set[int]) -> None:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except FileNotFoundError:
            return
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):
                saved.setdefault(tid, os.sched_getaffinity(tid))
                os.sched_setaffinity(tid, mask)

    rest = set(cpus[:-1])
    try:
        for pid in {os.getpid(), *others} - {alone}:
            place(pid, rest)
        place(alone, {cpus[-1]})
        yield
    finally:
        for tid, mask in saved.items():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(tid, mask)
