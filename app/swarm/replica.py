"""A supernode replica (``python -m app``) and, for measurements, a private Redis, on this host.

``df-swarm capacity`` and the benchmarks measure one replica in isolation: its own process (so its CPU
time is its own, from /proc), and a Redis server of its own (so INFO memory deltas are the replica's
state alone, not whatever else shares a Redis).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"exited before it was ready:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"not ready at {url} after {timeout:g} s:\n{log.read_text(errors='replace')[-3000:]}")


@dataclass
class LocalRedis:
    """``redis-server`` on a free loopback port, nothing persisted; ``url`` once entered."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> LocalRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server), or pass --redis-url")
        self.port = self.port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError("redis-server did not start")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@dataclass
class LocalReplica:
    """One replica in cluster mode against ``redis_url`` (seeding in-process: no broker), loopback only."""

    workdir: Path
    redis_url: str
    env: dict[str, str] = field(default_factory=dict)  # extra DF_* settings
    port: int = 0
    download_port: int = 0
    token: str = "df-swarm-capacity-token"
    proc: subprocess.Popen[bytes] | None = None

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> Path:
        return self.workdir / "replica.log"

    def __enter__(self) -> LocalReplica:
        self.port = self.port or free_port()
        self.download_port = self.download_port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("DF_")}
        env.update(
            DF_REDIS_URL=self.redis_url, DF_HOME=str(self.workdir / "home"), DF_SEED_DIR=str(self.workdir / "seed"),
            DF_LISTEN="127.0.0.1", DF_ADVERTISE_IP="127.0.0.1", DF_PORT=str(self.port),
            DF_DOWNLOAD_PORT=str(self.download_port), DF_SOURCE_ALLOWLIST="127.0.0.0/8",
            DF_API_TOKENS=f"df-swarm:{self.token}", DF_DRAIN_SECONDS="0", PYTHONUNBUFFERED="1",
        )
        env.update(self.env)
        with self.log.open("wb") as handle:
            self.proc = subprocess.Popen([sys.executable, "-m", "app"], env=env, stdout=handle,
                                         stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://{self.node}/readyz", self.proc, self.log, 30.0)
        except RuntimeError:
            self.__exit__(None, None, None)
            raise
        return self

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
