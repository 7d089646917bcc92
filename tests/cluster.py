"""Real supernode processes for end-to-end tests: replicas (uvicorn) and Celery workers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
TEST_TOKEN = "test-token-0123456789"


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free right now and never returned before by this process: the kernel may hand the same
    ephemeral port to two bind(0) calls in a row (seen: a replica's API and piece ports collided)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        """SIGKILL: no graceful shutdown, like a crashed pod."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


@dataclass
class Replica(Proc):
    port: int = 0
    download_port: int = 0

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """N replicas and M workers sharing one Redis db, one broker and one seed directory."""

    workdir: Path
    redis_url: str
    broker_url: str | None
    extra_env: dict[str, str] = field(default_factory=dict)
    replicas: list[Replica] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    @property
    def seed_dir(self) -> Path:
        return self.workdir / "seed"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
        env.update(
            DF_REDIS_URL=self.redis_url,
            DF_SEED_DIR=str(self.seed_dir),
            DF_HOME=str(self.workdir / "home"),
            DF_ADVERTISE_IP="127.0.0.1",
            DF_LISTEN="127.0.0.1",
            PYTHONUNBUFFERED="1",
            # Test sources and registries live on loopback, which the source policy refuses by default.
            DF_SOURCE_ALLOWLIST="127.0.0.0/8",
            DF_API_TOKENS=f"tests:{TEST_TOKEN}",
        )
        if self.broker_url:
            env["DF_BROKER_URL"] = self.broker_url
        env.update(self.extra_env)
        return env

    def start_replica(self) -> Replica:
        index = len(self.replicas)
        port, download_port = free_port(), free_port()
        env = self.env() | {"DF_PORT": str(port), "DF_DOWNLOAD_PORT": str(download_port)}
        log = self.workdir / f"replica{index}.log"
        popen = _spawn([sys.executable, "-m", "app"], env, log)
        replica = Replica(f"replica{index}", popen, log, port=port, download_port=download_port)
        self.replicas.append(replica)
        _wait_ready(replica, f"http://{replica.node}/_ping")
        _wait_ready(replica, f"http://127.0.0.1:{download_port}/_ping")
        return replica

    def start_worker(self) -> Proc:
        index = len(self.workers)
        log = self.workdir / f"worker{index}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "workers.tasks", "worker", "-Q", "df-seed", "--concurrency", "2",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--hostname", f"w{index}@%h",
        ]
        worker = Proc(f"worker{index}", _spawn(command, self.env(), log), log)
        self.workers.append(worker)
        deadline = time.monotonic() + 30
        while "ready." not in worker.tail(200):
            if worker.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{worker.name} did not start:\n{worker.tail()}")
            time.sleep(0.2)
        return worker

    def stop(self) -> None:
        for proc in [*self.replicas, *self.workers]:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in [*self.replicas, *self.workers])


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = open(log, "wb")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _wait_ready(proc: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}:\n{proc.tail()}")
