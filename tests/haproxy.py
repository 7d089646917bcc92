"""The real haproxy in front of real replicas, from the very file we ship (deploy/haproxy/haproxy.cfg).

Only the addresses of the ``bind`` and ``server`` lines (and a server's check ``port``) are rewritten,
to loopback: the VIP and the replicas get their own 127/8 addresses, all replicas listen on the same two
ports (as on separate hosts), so a piece task naming ``DF_ADVERTISE_IP:DF_DOWNLOAD_PORT`` points dfget at
the VIP's piece port. Anything else in the file is used as it is; if its structure changed so that the
rewrite no longer fits, :func:`rewrite_config` fails loudly instead of testing something else.

    with Haproxy(workdir, replica_hosts, api_port=..., piece_port=...) as lb:
        lb.wait_servers("df_api", ["r1", "r2", "r3"], "UP")
        lb.api_vip        # "127.0.0.100:<api port>", what dfget's --node entries name
        lb.counters()     # retries, redispatches and 5xx answers, from the stats page

    vip = VipCluster(Cluster(...)).start()   # 3 replicas behind it, DF_ADVERTISE_IP = the VIP
    vip.cluster.replicas[0].kill(); vip.restart(vip.cluster.replicas[0])   # back UP in haproxy
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

import httpx

from tests import probe
from tests.cluster import REPO, Cluster, Replica, free_port

CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
VIP = "127.0.0.100"  # the loopback VIP; replicas get 127.0.0.101.. (replica_host)
DEPLOYED_API_PORT, DEPLOYED_PIECE_PORT = 8002, 8001
# Which frontend's bind is which address, and which backends hold which servers, in the shipped file.
_BINDS = {"df_api": "api", "df_pieces": "pieces", "stats": "stats"}
_SERVERS = {"df_api": ("r1", "r2", "r3", "r1-live", "r2-live", "r3-live"), "df_pieces": ("r1", "r2", "r3")}
_ADDRESS = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}):(\d+)\b")
_CHECK_PORT = re.compile(r"\bport (\d+)\b")


class HaproxyError(RuntimeError):
    pass


def replica_host(index: int) -> str:
    return f"127.0.0.{101 + index}"


def rewrite_config(
    text: str, *, vip: str, api_port: int, piece_port: int, stats: str, replica_hosts: Sequence[str]
) -> str:
    """The shipped config with its bind/server addresses moved to loopback; raises if the file drifted."""
    ports = {DEPLOYED_API_PORT: api_port, DEPLOYED_PIECE_PORT: piece_port}
    bind_to = {"api": f"{vip}:{api_port}", "pieces": f"{vip}:{piece_port}", "stats": stats}
    hosts: dict[str, str] = {}  # deployed replica address -> loopback address, in order of appearance
    section = ""
    seen_binds: list[str] = []
    seen_servers: dict[str, list[str]] = {}
    out: list[str] = []

    def replica(host: str) -> str:
        if host not in hosts:
            if len(hosts) == len(replica_hosts):
                raise HaproxyError(f"{CONFIG.name} names more replicas than the {len(replica_hosts)} of the test")
            hosts[host] = replica_hosts[len(hosts)]
        return hosts[host]

    def port(value: str) -> int:
        if int(value) not in ports:
            raise HaproxyError(f"{CONFIG.name}: unexpected replica port {value}")
        return ports[int(value)]

    for line in text.splitlines():
        words = line.split()
        if line[:1].isalpha():
            section = words[1] if len(words) > 1 else words[0]
        elif words and words[0] == "bind":
            if section not in _BINDS:
                raise HaproxyError(f"{CONFIG.name}: a bind in unknown section {section!r}")
            seen_binds.append(section)
            line, count = _ADDRESS.subn(bind_to[_BINDS[section]], line, count=1)
            if count != 1:
                raise HaproxyError(f"{CONFIG.name}: bind of {section} has no ip:port: {line.strip()}")
        elif words and words[0] == "server":
            if section not in _SERVERS or len(words) < 3:
                raise HaproxyError(f"{CONFIG.name}: unexpected server line in {section!r}: {line.strip()}")
            seen_servers.setdefault(section, []).append(words[1])
            line, count = _ADDRESS.subn(lambda m: f"{replica(m[1])}:{port(m[2])}", line, count=1)
            if count != 1:
                raise HaproxyError(f"{CONFIG.name}: server without ip:port: {line.strip()}")
            line = _CHECK_PORT.sub(lambda m: f"port {port(m[1])}", line)
        out.append(line)
    if sorted(seen_binds) != sorted(_BINDS) or {k: tuple(v) for k, v in seen_servers.items()} != _SERVERS:
        raise HaproxyError(f"{CONFIG.name} changed shape: binds {seen_binds}, servers {seen_servers}")
    if len(hosts) != len(replica_hosts):
        raise HaproxyError(f"{CONFIG.name} names {len(hosts)} replicas, the test runs {len(replica_hosts)}")
    return "\n".join(out) + "\n"


class Haproxy:
    """``haproxy -db -f <rewritten shipped config>``; the replicas are started separately (tests.cluster)."""

    def __init__(
        self, workdir: Path, replica_hosts: Sequence[str], *, api_port: int, piece_port: int, vip: str = VIP
    ) -> None:
        self.workdir = workdir
        self.replica_hosts = list(replica_hosts)
        self.vip = vip
        self.api_port, self.piece_port = api_port, piece_port
        self.stats_address = f"127.0.0.1:{free_port()}"
        self.config = workdir / "haproxy.cfg"
        self.log = workdir / "haproxy.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def api_vip(self) -> str:
        return f"{self.vip}:{self.api_port}"

    @property
    def piece_vip(self) -> str:
        return f"{self.vip}:{self.piece_port}"

    def start(self) -> Haproxy:
        binary = shutil.which("haproxy")
        if binary is None:
            raise HaproxyError("haproxy not installed; run tests/services/haproxy.sh as root")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            rewrite_config(
                CONFIG.read_text(), vip=self.vip, api_port=self.api_port, piece_port=self.piece_port,
                stats=self.stats_address, replica_hosts=self.replica_hosts,
            )
        )
        check = subprocess.run([binary, "-c", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise HaproxyError(f"haproxy -c refused the config:\n{check.stdout}{check.stderr}")
        handle = open(self.log, "wb")
        self.popen = subprocess.Popen([binary, "-db", "-f", str(self.config)], stdout=handle, stderr=subprocess.STDOUT)
        self._wait(lambda: self.stats() is not None, 10, "the stats page")
        return self

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            # SIGUSR1 would be a soft stop that waits for every open connection; the test is over.
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)

    def __enter__(self) -> Haproxy:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # -- what haproxy sees -------------------------------------------------------------------------

    def stats(self) -> list[dict[str, str]] | None:
        """The stats page's CSV rows (pxname, svname, status, wretr, wredis, hrsp_5xx, ...); None if down."""
        try:
            response = probe.get(f"http://{self.stats_address}/stats;csv", timeout=2.0)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        return list(csv.DictReader(io.StringIO(response.text.removeprefix("# "))))

    def states(self, backend: str) -> dict[str, str]:
        """Server name -> status ("UP", "DOWN", "UP 1/2", "no check", ...) in one backend."""
        rows = self.stats() or []
        return {r["svname"]: r["status"] for r in rows if r["pxname"] == backend and r["svname"] not in _TOTALS}

    def wait_servers(self, backend: str, names: Sequence[str], status: str, timeout: float = 30.0) -> None:
        """Until every named server of ``backend`` has exactly ``status`` (e.g. "UP" or "DOWN")."""

        def reached() -> bool:
            states = self.states(backend)
            return all(states.get(name) == status for name in names)

        self._wait(reached, timeout, f"{backend} {list(names)} {status}")

    def served(self, backend: str) -> dict[str, int]:
        """Server name -> 2xx answers it gave through this backend."""
        rows = [r for r in self.stats() or [] if r["pxname"] == backend and r["svname"] not in _TOTALS]
        return {r["svname"]: int(r["hrsp_2xx"] or 0) for r in rows}

    def counters(self) -> dict[str, int]:
        """Totals for the report: retries, redispatches, 5xx answered by each frontend, checks that failed."""
        rows = self.stats() or []
        out: dict[str, int] = {}
        for row in rows:
            name, server = row["pxname"], row["svname"]
            if server == "BACKEND":
                out[f"{name}.retries"] = int(row["wretr"] or 0)
                out[f"{name}.redispatches"] = int(row["wredis"] or 0)
            elif server == "FRONTEND" and name != "stats":
                out[f"{name}.5xx"] = int(row["hrsp_5xx"] or 0)
            elif server not in _TOTALS:
                out[f"{name}.failed_checks"] = out.get(f"{name}.failed_checks", 0) + int(row["chkfail"] or 0)
        return out

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.popen is not None and self.popen.poll() is not None:
                raise HaproxyError(f"haproxy exited ({self.popen.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise HaproxyError(f"haproxy: {what} not reached in {timeout:g} s: {self.stats()}\n{self.tail()}")
            time.sleep(0.05)


_TOTALS = frozenset({"FRONTEND", "BACKEND"})
REPLICAS = 3  # the shipped file's r1..r3


class VipCluster:
    """Three replicas on 127.0.0.101-103 (same two ports) behind the real haproxy on 127.0.0.100."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        hosts = [replica_host(i) for i in range(REPLICAS)]
        self.lb = Haproxy(
            cluster.workdir / "haproxy", hosts, api_port=free_port(VIP, *hosts), piece_port=free_port(VIP, *hosts)
        )

    @property
    def api_vip(self) -> str:
        return self.lb.api_vip

    def server(self, replica: Replica) -> str:
        """The haproxy server name of a replica (r1.. in start order)."""
        return f"r{self.cluster.replicas.index(replica) + 1}"

    def start(self) -> VipCluster:
        try:
            started = [
                self.cluster.start_replica(
                    host=host, port=self.lb.api_port, download_port=self.lb.piece_port, advertise_ip=self.lb.vip,
                    wait=False,
                )
                for host in self.lb.replica_hosts
            ]
            for replica in started:  # they start side by side
                replica.wait_ready()
            self.lb.start()
            self.wait_in_service(*self.cluster.replicas)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_in_service(self, *replicas: Replica, timeout: float = 30.0) -> None:
        """Until haproxy routes to these replicas again: UP on both backends (and as API backups)."""
        names = [self.server(r) for r in replicas]
        self.lb.wait_servers("df_api", names + [f"{n}-live" for n in names], "UP", timeout)
        self.lb.wait_servers("df_pieces", names, "UP", timeout)

    def restart(self, replica: Replica) -> None:
        self.cluster.restart_replica(replica)
        self.wait_in_service(replica)

    def stop(self) -> None:
        self.lb.stop()
        self.cluster.stop()

    def logs(self) -> str:
        return f"{self.cluster.logs()}\n--- haproxy\n{self.lb.tail()}"
