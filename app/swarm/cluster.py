"""Several replicas and Celery workers on this host sharing one Redis (for benchmarks and users' trials).

The same processes a deployment runs (``python -m app``, ``celery -A workers.tasks worker``), on loopback
ports, with one seed directory; what tests/cluster.py does for the test suite, without its test-only
port claims.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.swarm.replica import free_port, wait_ready


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0
    download_port: int = 0

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.port}"

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class LocalCluster:
    workdir: Path
    redis_url: str  # "" = embedded mode (one replica, no workers)
    broker_url: str | None = None  # None: the replicas seed in-process
    extra_env: dict[str, str] = field(default_factory=dict)
    token: str = "df-swarm-cluster-token"
    replicas: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
        env.update(
            DF_REDIS_URL=self.redis_url, DF_SEED_DIR=str(self.workdir / "seed"), DF_HOME=str(self.workdir / "home"),
            DF_ADVERTISE_IP="127.0.0.1", DF_LISTEN="127.0.0.1", PYTHONUNBUFFERED="1",
            DF_SOURCE_ALLOWLIST="127.0.0.0/8", DF_API_TOKENS=f"df-swarm:{self.token}",
        )
        if self.broker_url:
            env["DF_BROKER_URL"] = self.broker_url
        return env | self.extra_env

    def start_replica(self) -> Proc:
        index, port, download_port = len(self.replicas), free_port(), free_port()
        env = self.env() | {"DF_PORT": str(port), "DF_DOWNLOAD_PORT": str(download_port)}
        log = self.workdir / f"replica{index}.log"
        replica = Proc(f"replica{index}", _spawn([sys.executable, "-m", "app"], env, log), log, port, download_port)
        self.replicas.append(replica)
        wait_ready(f"http://{replica.node}/readyz", replica.popen, log, 30.0)
        return replica

    def start_worker(self) -> Proc:
        index = len(self.workers)
        log = self.workdir / f"worker{index}.log"
        worker = Proc(f"worker{index}", _spawn(worker_command(index), self.env(), log), log)
        self.workers.append(worker)
        wait_worker_ready(worker.name, worker.popen, worker.tail)
        return worker

    def stop(self) -> None:
        procs = [*self.replicas, *self.workers]
        for proc in procs:  # SIGINT to all first: each takes a moment to close its connections
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in [*self.replicas, *self.workers])


def worker_command(index: int) -> list[str]:
    """A seed worker as a deployment runs it: the df-seed queue, two jobs at a time."""
    return [sys.executable, "-m", "celery", "-A", "workers.tasks", "worker", "-Q", "df-seed", "--concurrency", "2",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname", f"w{index}@%h"]


def wait_worker_ready(
    name: str, popen: subprocess.Popen[bytes], tail: Callable[[int], str], timeout: float = 30.0
) -> None:
    """Until Celery logs "ready." (its consumer is up); RuntimeError with the log tail if it exits or lags."""
    deadline = time.monotonic() + timeout
    while "ready." not in tail(200):
        if popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start:\n{tail(40)}")
        time.sleep(0.2)


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        return subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
