"""The container image, built here with buildah (`make image`) and run with podman: its three commands.

Cost: the base (a debootstrap of bookworm, ~90 s) is made once per machine and kept in buildah's store;
the dependencies' layer (~60 s) is cached until pyproject.toml changes; a code change then rebuilds in
10-25 s. A cold machine pays about 3 minutes once. The runs here take about 25 s.

podman on this machine kind: crun refuses its hybrid cgroup v1 layout and the sandbox lacks
CAP_SYS_RESOURCE (podman's default rlimits cannot be set), so the runs use runc and rlimits below the
host's hard limits. Host networking: the emulated peers and the sources are on the host's loopback.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.swarm import Swarm
from tests.cluster import REPO, Cluster, free_port
from tests.postgres import rows
from tests.sources import SourceServer

pytestmark = pytest.mark.slow

IMAGE = "localhost/df-supernode:test"
# --read-only as the chart runs it (readOnlyRootFilesystem; podman still mounts a tmpfs on /tmp).
PODMAN_RUN = [
    "podman", "run", "--rm", "--network", "host", "--runtime", "runc", "--read-only",
    "--ulimit", "nofile=8192:8192", "--ulimit", "nproc=4096:4096",
]
HOME = "/home/admin/supernode"


_SOURCES_DIGEST = """
import hashlib, pathlib, sys
digest = hashlib.sha256()
for root in sys.argv[1:]:
    base = pathlib.Path(root)
    for path in sorted(p for p in base.rglob("*") if p.suffix in (".py", ".lua")):
        digest.update(str(path.relative_to(base.parent)).encode() + b"\\0" + path.read_bytes())
print(digest.hexdigest())
"""


def tree_digest() -> str:
    """Digest of this tree's app/ and workers/ sources, as _SOURCES_DIGEST computes it in the image."""
    return subprocess.run([sys.executable, "-c", _SOURCES_DIGEST, str(REPO / "app"), str(REPO / "workers")],
                          capture_output=True, text=True, timeout=60, check=True).stdout


_built_from: dict[str, str] = {}


@pytest.fixture(scope="module")
def image() -> str:
    for tool in ("buildah", "podman", "runc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: run tests/services/image_tools.sh (make test does)")
    started = time.monotonic()
    for _ in range(3):  # a checkout edited during the build is built again (several people share one)
        before = tree_digest()
        build = subprocess.run(["make", "--no-print-directory", "image", f"IMAGE={IMAGE}"], cwd=REPO,
                               capture_output=True, text=True, timeout=900)
        assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
        if tree_digest() == before:
            break
    _built_from[IMAGE] = before
    print(f"make image: {time.monotonic() - started:.1f}s")
    return IMAGE


class Container:
    """One `podman run` in the foreground: SIGTERM to podman is passed on to the container (sig-proxy)."""

    def __init__(self, image: str, command: list[str], env: dict[str, str], log: Path,
                 volumes: tuple[Path, ...] = ()) -> None:
        self.name = f"df-test-{uuid.uuid4().hex[:10]}"
        self.log = log
        # The data directory: an emptyDir owned through fsGroup in the chart, a host directory owned by the
        # image's user here (podman 4.3 applies no mode or uid to a --tmpfs).
        home = log.parent / f"{self.name}-home"
        home.mkdir()
        os.chown(home, 10001, 10001)
        args = [*PODMAN_RUN, "--name", self.name, "-v", f"{home}:{HOME}"]
        for volume in volumes:  # at the same path inside: the seed cache's layout is shared by path
            args += ["-v", f"{volume}:{volume}"]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        with open(log, "wb") as handle:
            self.popen = subprocess.Popen([*args, image, *command], stdout=handle, stderr=subprocess.STDOUT)

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.tail(20000):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen in the container's log:\n{self.tail()}")
            time.sleep(0.2)

    def terminate(self, timeout: float = 60) -> int:
        self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout)

    def kill(self) -> None:
        if self.popen.poll() is None:
            subprocess.run(["podman", "kill", self.name], capture_output=True, timeout=30)
            self.popen.wait(30)


@pytest.fixture
def containers(tmp_path: Path) -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.kill()


def _wait_http(url: str, container: Container, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            if container.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} never answered:\n{container.tail()}") from None
            time.sleep(0.2)




def test_image_is_non_root_and_carries_only_runtime_dependencies(image: str) -> None:
    probe = subprocess.run(
        [*PODMAN_RUN, image, "python", "-c",
         "import os, importlib.util as u; print(os.getuid(), os.getgid(), "
         "[m for m in ('pytest', 'mypy', 'ruff', 'hypothesis', 'playwright') if u.find_spec(m)])"],
        capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split("\n")[0] == "10001 10001 []"


def test_image_carries_the_code_of_this_tree(image: str) -> None:
    """A cached layer must never hide a code change: the image's app/ and workers/ are this tree's."""
    site = "/opt/venv/lib/python3.11/site-packages"
    inside = subprocess.run([*PODMAN_RUN, image, "python", "-c", _SOURCES_DIGEST, f"{site}/app", f"{site}/workers"],
                            capture_output=True, text=True, timeout=120)
    assert inside.returncode == 0, inside.stderr
    assert inside.stdout == _built_from[image]


async def test_replica_serves_a_swarm_then_drains(image: str, containers: list[Container], tmp_path: Path) -> None:
    port, download_port = free_port(), free_port()
    replica = Container(image, ["replica"], {
        # Embedded mode (no DF_REDIS_URL): the replica alone, seeding in-process.
        "DF_LISTEN": "127.0.0.1", "DF_PORT": str(port), "DF_DOWNLOAD_PORT": str(download_port),
        "DF_ADVERTISE_IP": "127.0.0.1", "DF_SOURCE_ALLOWLIST": "127.0.0.0/8", "DF_DRAIN_SECONDS": "3",
    }, tmp_path / "replica.log")
    containers.append(replica)
    ping = _wait_http(f"http://127.0.0.1:{port}/_ping", replica)
    assert (ping.status_code, ping.text) == (200, "OK")
    assert "embedded mode" in replica.tail()

    data = os.urandom(24 * 1024 * 1024)
    async with SourceServer() as source:
        source.add("blob.bin", data)
        async with Swarm(4, [f"127.0.0.1:{port}"], source.url("blob.bin"), tmp_path / "out",
                         sleep_scale=0.25) as swarm:
            results = await swarm.run()
        full_gets = source.stats("blob.bin").full_gets
    digest = hashlib.sha256(data).hexdigest()
    for result in results:
        assert result.success and result.sha256 == digest, (result.error, replica.tail())
        assert not result.back_sourced and not result.supernode_5xx
    assert full_gets == 1  # the seed cache pulled the source once, inside the container
    assert sum(r.pieces_from_peers for r in results) > 0

    _drains_as_the_chart_expects(replica, port, download_port)


def _drains_as_the_chart_expects(replica: Container, port: int, download_port: int) -> None:
    """The chart's probes: after SIGTERM the piece port's /readyz (readiness) says draining while /_ping
    (liveness) stays OK; then the replica exits 0."""
    replica.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    while (ready := httpx.get(f"http://127.0.0.1:{download_port}/readyz", timeout=2)).status_code == 200:
        assert time.monotonic() < deadline, replica.tail()
        time.sleep(0.1)
    assert ready.status_code == 503 and ready.json()["reasons"] == ["draining"]
    assert httpx.get(f"http://127.0.0.1:{port}/_ping", timeout=2).text == "OK"
    assert replica.popen.wait(60) == 0, replica.tail()


async def test_worker_seeds_for_a_host_replica_then_stops_warm(
    image: str, containers: list[Container], tmp_path: Path, redis_url: str, broker_url: str
) -> None:
    """The image's worker is the cluster's only seeder: a replica on the host hands it the seed job
    through the real broker, it fills the shared seed cache (a bind mount, the RWX volume's stand-in),
    and a swarm downloads from it. Then SIGTERM: Celery's warm shutdown, exit 0."""
    redis.Redis.from_url(redis_url).flushdb()
    redis.Redis.from_url(broker_url).flushdb()
    cluster = Cluster(tmp_path / "cluster", redis_url, broker_url)
    # The volume belongs to the image's user (10001), as fsGroup makes it in the chart; the host replica
    # runs as root here and reads it whatever the owner.
    (cluster.seed_dir / "download").mkdir(parents=True)
    for path in (cluster.seed_dir, cluster.seed_dir / "download"):
        os.chown(path, 10001, 10001)
    worker = Container(image, ["worker", "--concurrency=1", "--loglevel=INFO"], {
        key: value for key, value in cluster.env().items() if key.startswith("DF_")
    }, tmp_path / "worker.log", volumes=(cluster.seed_dir,))
    containers.append(worker)
    try:
        replica = cluster.start_replica()
        worker.wait_for("ready.")
        data = os.urandom(16 * 1024 * 1024)
        async with SourceServer() as source:
            source.add("blob.bin", data)
            async with Swarm(3, [replica.node], source.url("blob.bin"), tmp_path / "out", sleep_scale=0.25) as swarm:
                results = await swarm.run()
            full_gets = source.stats("blob.bin").full_gets
    finally:
        cluster.stop()
    digest = hashlib.sha256(data).hexdigest()
    for result in results:
        assert result.success and result.sha256 == digest, (result.error, worker.tail())
        assert not result.back_sourced
    assert full_gets == 1
    log = worker.tail(50000)
    assert "Task workers.tasks.seed[" in log and re.search(r"seed end [0-9a-f]{64} success=True ", log), log
    _stops_warm(worker)


def _stops_warm(worker: Container) -> None:
    assert worker.terminate() == 0, worker.tail()
    assert "warm shutdown" in worker.tail().lower()


def _run_migrate(image: str, database_url: str) -> None:
    migrate = subprocess.run([*PODMAN_RUN, "-e", f"DF_DATABASE_URL={database_url}", image, "migrate"],
                             capture_output=True, text=True, timeout=180)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    assert "Running upgrade" in migrate.stderr, migrate.stderr


async def test_migrate_upgrades_a_real_database(image: str, tmp_path: Path, pg_db: str) -> None:
    _run_migrate(image, pg_db)
    tables = {r["tablename"] for r in await rows(pg_db, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"alembic_version", "audit_events"} <= tables, tables
