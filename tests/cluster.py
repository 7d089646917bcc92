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
import redis

from app.swarm import DfgetResult
from app.swarm.cluster import wait_worker_ready, worker_command
from tests import probe

REPO = Path(__file__).resolve().parent.parent
TEST_TOKEN = "test-token-0123456789"
REDIS_BASE = os.environ.get("DF_TEST_REDIS", "redis://127.0.0.1:6379")  # the tests' Redis (conftest.py)


_handed_out: set[int] = set()
_PORT_CLAIM_SECONDS = 600
_claims: redis.Redis | None = None


def free_port(*hosts: str) -> int:
    """A port free right now (on 127.0.0.1 and each of ``hosts``) and handed out by no test process in the
    last ten minutes. The kernel may give the same ephemeral port to two bind(0) calls in a row (seen: a
    replica's API and piece ports collided), and parallel workers (pytest-xdist, or another run beside
    this one) would otherwise race for it between our bind(0) and the server's own bind: the claim is a
    ``SET NX`` in the tests' Redis db 0, where the db-pair leases live too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port in _handed_out or not all(_bindable(host, port) for host in hosts):
            continue
        _handed_out.add(port)
        if _claim(port):
            return port


def _claim(port: int) -> bool:
    global _claims
    if _claims is None:
        _claims = redis.Redis.from_url(f"{REDIS_BASE}/0", socket_timeout=5)
    return bool(_claims.set(f"df-tests:port:{port}", os.getpid(), nx=True, ex=_PORT_CLAIM_SECONDS))


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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
        """End of a test: SIGINT (a replica skips its SIGTERM drain; Celery shuts down as on SIGTERM)."""
        self.interrupt()
        self.reap()

    def interrupt(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)

    def reap(self, timeout: float = 15.0) -> None:
        try:
            self.popen.wait(timeout)
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
    host: str = "127.0.0.1"  # DF_LISTEN: behind the loopback haproxy each replica has its own 127/8 address
    env: dict[str, str] = field(default_factory=dict)  # what it was started with (a restart reuses it)

    @property
    def node(self) -> str:
        return f"{self.host}:{self.port}"

    def terminate(self, timeout: float = 90.0) -> int:
        """SIGTERM, as for a rolling restart or a pod deletion: wait until it exits (after its drain and
        its in-flight requests) and return the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def wait_ready(self, path: str = "/readyz", timeout: float = 30.0) -> None:
        """Both ports answer 200 on ``path``: ``/readyz`` (Redis reachable, not draining) by default."""
        _wait_ready(self, f"http://{self.node}{path}", timeout)
        _wait_ready(self, f"http://{self.host}:{self.download_port}{path}", timeout)


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
            # One process per replica unless a test asks for more (tests/test_workers.py): a SIGKILL of
            # a replica then kills all of it, as the HA tests mean, and the suite's process count stays.
            DF_WORKERS="1",
        )
        if self.broker_url:
            env["DF_BROKER_URL"] = self.broker_url
        env.update(self.extra_env)
        return env

    def start_replica(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        download_port: int | None = None,
        advertise_ip: str | None = None,
        wait: bool = True,
    ) -> Replica:
        """Start a replica and (unless ``wait=False``) wait until it is ready. Defaults: 127.0.0.1 on
        two fresh ports.

        Behind the loopback haproxy every replica gets its own ``host`` and the same two ports, and
        ``advertise_ip`` is the VIP, as on separate hosts behind a real VIP.
        """
        index = len(self.replicas)
        port = port or free_port(host)
        download_port = download_port or free_port(host)
        env = self.env() | {"DF_LISTEN": host, "DF_PORT": str(port), "DF_DOWNLOAD_PORT": str(download_port)}
        if advertise_ip is not None:
            env["DF_ADVERTISE_IP"] = advertise_ip
        log = self.workdir / f"replica{index}.log"
        popen = _spawn([sys.executable, "-m", "app"], env, log)
        replica = Replica(
            f"replica{index}", popen, log, port=port, download_port=download_port, host=host, env=env
        )
        self.replicas.append(replica)
        if wait:
            replica.wait_ready()
        return replica

    def restart_replica(self, replica: Replica) -> Replica:
        """Start a stopped replica again, same address, ports and settings (a load balancer's server lines
        are fixed), appending to its log; waits until it is ready."""
        if replica.popen.poll() is None:
            raise RuntimeError(f"{replica.name} is still running; kill() or terminate() it first")
        replica.popen = _spawn([sys.executable, "-m", "app"], replica.env, replica.log, append=True)
        replica.wait_ready()
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
        for proc in procs:  # all at once: each may take a moment to close its connections
            proc.interrupt()
        for proc in procs:
            proc.reap()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail()}" for p in [*self.replicas, *self.workers])


def _spawn(command: list[str], env: dict[str, str], log: Path, append: bool = False) -> subprocess.Popen[bytes]:
    handle = open(log, "ab" if append else "wb")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)


def _wait_ready(proc: Proc, url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            if probe.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url}:\n{proc.tail()}")


def check_swarm(results: list[DfgetResult], sha256: str) -> None:
    """Every download done through the supernode, with the source's bytes: no client went back to the
    source or saw a 5xx."""
    for result in results:
        # A failed peer's last exchanges say where it stalled (a rare failure is seldom reproduced).
        last = [(round(e.at, 2), e.node, e.method, e.endpoint, e.http_status, e.code, e.error)
                for e in result.exchanges[-20:]]
        assert result.success, (result.error, result.traceback, last)
        assert result.sha256 == sha256
        assert not result.back_sourced
        assert not result.supernode_5xx
