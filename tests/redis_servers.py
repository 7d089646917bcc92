"""Real Redis servers for failure tests: a standalone ``redis-server`` and a Sentinel topology.

Debian's ``redis-server`` and ``redis-sentinel`` (tests/services/redis_sentinel.sh installs them),
on 127.0.0.1 and free ports, each in a directory of its own under ``workdir`` with its config file
and logfile. Every wait polls a condition (PING, INFO, SENTINEL replies) and raises
``RedisServerError`` with the server's log tail when its timeout passes: no fixed sleeps.

API
---
``RedisServer(workdir, *, port=None, aof=False, replica_of=None)``
    ``start()`` (and wait until ready), ``wait_ready(timeout)``, ``kill()`` (SIGKILL), ``stop()``
    (SIGTERM: a clean shutdown), ``restart()`` (same port and dir, so the AOF reloads; returns once
    loaded), ``pause()`` (SIGSTOP: connections hang, like a network blip), ``resume()`` (SIGCONT),
    ``url(db)``, ``address``, ``client()`` (a sync admin client), ``running``; a context manager
    (start / kill). ``aof=True``: ``appendonly yes``, ``appendfsync everysec``; otherwise no
    persistence at all. ``replica_of=(host, port)``: a replica, ready once its link to the master is up.

``SentinelTopology(workdir, master_name="mymaster")``
    A master, one replica and 3 sentinels (quorum 2, ``down-after-milliseconds`` 1000), started and
    ready (every sentinel knows the replica and the other two sentinels) on ``start()`` or ``with``.
    ``url(db)`` -> ``redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/<db>?master=mymaster``
    (the form app/core/redis.py parses). ``master_address()`` (what the sentinels announce),
    ``master()`` (the RedisServer at that address), ``kill_master()`` -> monotonic time of the kill,
    ``wait_failover(timeout)`` -> (new master address, seconds from the kill until a sentinel
    announced it), ``failover()`` (SENTINEL FAILOVER: the master lives on, demoted ~10 s later),
    ``demote(server)`` (REPLICAOF the announced master now), ``restart_old_master(as_replica=True)``
    (it comes back as a replica of the new master; ``as_replica=False``: as a master, and the
    sentinels demote it, ~10 s), ``stop()``.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis as sync_redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.cluster import free_port

HOST = "127.0.0.1"
_T = TypeVar("_T")
_live: set[subprocess.Popen[bytes]] = set()


class RedisServerError(RuntimeError):
    pass


@atexit.register
def _kill_leftovers() -> None:
    # A test that failed before its cleanup must not leave servers holding ports for the next run.
    for popen in list(_live):
        if popen.poll() is None:
            popen.send_signal(signal.SIGCONT)
            popen.kill()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RedisServerError(f"{name} not installed; run tests/services/redis_sentinel.sh")
    return path


def _wait(condition: Callable[[], _T | None], timeout: float, what: str, log: Callable[[], str]) -> _T:
    """Poll ``condition`` until it returns something other than None/False; fail loudly at ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = condition()
            if result is not None and result is not False:
                return result
        except (sync_redis.RedisError, OSError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise RedisServerError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})\n"
                                   f"{log()}")
        time.sleep(0.02)


def _admin(port: int) -> sync_redis.Redis:
    # Short timeouts and no hidden retries (redis-py's default backs off for seconds): a poll against a
    # dead or paused server must fail fast and be polled again.
    return sync_redis.Redis(host=HOST, port=port, decode_responses=True, socket_timeout=0.5,
                            socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))


class _Process:
    """One server process with its own dir, config file and logfile."""

    binary = "redis-server"

    def __init__(self, workdir: Path, name: str, port: int | None) -> None:
        self.port = port or free_port()
        self.dir = Path(workdir) / f"{name}-{self.port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / f"{name}.conf"
        self.logfile = self.dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def client(self) -> sync_redis.Redis:
        return _admin(self.port)

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except FileNotFoundError:
            return f"--- {self.logfile}: no log"
        return f"--- {self.logfile}\n" + "\n".join(text.splitlines()[-lines:])

    def _config_lines(self) -> list[str]:
        return [f"port {self.port}", f"bind {HOST}", f'dir "{self.dir}"', f'logfile "{self.logfile}"',
                "daemonize no"]

    def _launch(self, write_config: bool = True) -> None:
        if self.running:
            raise RedisServerError(f"{self.binary} on port {self.port} already running")
        if write_config:
            self.config.write_text("\n".join(self._config_lines()) + "\n")
        self.popen = subprocess.Popen([_binary(self.binary), str(self.config)], cwd=self.dir,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _live.add(self.popen)

    def _check_alive(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            code = None if self.popen is None else self.popen.returncode
            raise RedisServerError(f"{self.binary} on port {self.port} not running (exit {code})\n{self.tail()}")

    def _ping(self) -> bool:
        self._check_alive()
        with self.client() as client:
            return bool(client.ping())

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last fsync, like a crashed host process."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)  # a paused process dies just the same; be explicit
            self.popen.kill()
            self.popen.wait(10)
        if self.popen is not None:
            _live.discard(self.popen)

    def stop(self) -> None:
        """SIGTERM: Redis shuts down cleanly (flushing its AOF)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGCONT)
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.popen is not None:
            _live.discard(self.popen)

    def pause(self) -> None:
        """SIGSTOP: the kernel still accepts connections, but nothing answers (a network blip)."""
        self._check_alive()
        assert self.popen is not None
        self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._check_alive()
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)


class RedisServer(_Process):
    def __init__(self, workdir: Path, *, port: int | None = None, aof: bool = False,
                 replica_of: tuple[str, int] | None = None) -> None:
        super().__init__(workdir, "redis", port)
        self.aof = aof
        self.replica_of = replica_of

    def _config_lines(self) -> list[str]:
        # No RDB snapshots; a master streams its dataset to a new replica at once (the default waits 5 s
        # for more replicas to join the same transfer).
        lines = [*super()._config_lines(), 'save ""', "repl-diskless-sync-delay 0"]
        lines += ["appendonly yes", "appendfsync everysec"] if self.aof else ["appendonly no"]
        if self.replica_of is not None:
            lines.append(f"replicaof {self.replica_of[0]} {self.replica_of[1]}")
        return lines

    def url(self, db: int = 0) -> str:
        return f"redis://{HOST}:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        # The config file is written once: a sentinel may rewrite it later (replicaof after a failover),
        # and a restart must keep what it wrote, like a real deployment does.
        self._launch(write_config=not self.config.exists())
        self.wait_ready(timeout)
        return self

    def info(self, section: str) -> dict[str, Any]:
        with self.client() as client:
            return dict(client.info(section))

    def wait_ready(self, timeout: float = 10.0) -> None:
        """PING answers, the dataset is loaded and, for a replica, its link to the master is up."""

        def ready() -> bool:
            if not self._ping():
                return False
            if self.info("persistence").get("loading") != 0:
                return False
            replication = self.info("replication")
            if replication.get("role") == "slave":
                return replication.get("master_link_status") == "up"
            return True

        _wait(ready, timeout, f"redis-server on port {self.port} ready", self.tail)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop it if running (SIGKILL, as a crash would), start it on the same port and dir, and
        return once it answers and has finished loading its AOF."""
        self.kill()
        self.start(timeout)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


class _Sentinel(_Process):
    binary = "redis-sentinel"

    def __init__(self, workdir: Path, master_name: str, master: tuple[str, int]) -> None:
        super().__init__(workdir, "sentinel", None)
        self.master_name = master_name
        self.master = master

    def _config_lines(self) -> list[str]:
        name = self.master_name
        return [
            *super()._config_lines(),
            f"sentinel monitor {name} {self.master[0]} {self.master[1]} 2",
            # Down after 1 s without a valid reply: a failover then takes ~2-3 s, as on a tuned site.
            f"sentinel down-after-milliseconds {name} 1000",
            # Bounds a failover attempt; a second attempt against the same master waits twice this.
            f"sentinel failover-timeout {name} 3000",
            f"sentinel parallel-syncs {name} 1",
        ]

    def start(self) -> None:
        self._launch()  # the sentinel rewrites this file (its state), hence one per sentinel

    def command(self, *args: str) -> Any:
        with self.client() as client:
            return client.execute_command(*args)

    def master_addr(self) -> tuple[str, int] | None:
        self._check_alive()
        reply = self.command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
        return None if reply is None else (str(reply[0]), int(reply[1]))


class SentinelTopology:
    def __init__(self, workdir: Path, master_name: str = "mymaster") -> None:
        self.workdir = Path(workdir)
        self.master_name = master_name
        first = RedisServer(self.workdir)
        self.servers: list[RedisServer] = [first, RedisServer(self.workdir, replica_of=first.address)]
        self.sentinels = [_Sentinel(self.workdir, master_name, first.address) for _ in range(3)]
        self.killed: RedisServer | None = None
        self.killed_at: float | None = None

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{db}?master={self.master_name}"

    def logs(self) -> str:
        return "\n".join(p.tail() for p in [*self.servers, *self.sentinels])

    def start(self, timeout: float = 20.0) -> SentinelTopology:
        for server in self.servers:
            server.start(timeout)
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        """Every sentinel agrees on one master, knows one replica with a live link and the other two
        sentinels: only then can a kill be followed by a failover."""

        def healthy() -> bool:
            addresses = {s.master_addr() for s in self.sentinels}
            if len(addresses) != 1 or None in addresses:
                return False
            for sentinel in self.sentinels:
                state = _pairs(sentinel.command("SENTINEL", "MASTER", self.master_name))
                if "s_down" in state["flags"] or "o_down" in state["flags"]:
                    return False
                if int(state["num-other-sentinels"]) != 2:
                    return False
                replicas = [_pairs(r) for r in sentinel.command("SENTINEL", "REPLICAS", self.master_name)]
                if not any(r["flags"] == "slave" and r["master-link-status"] == "ok" for r in replicas):
                    return False
            return True

        _wait(healthy, timeout, "a healthy sentinel topology", self.logs)

    def master_address(self) -> tuple[str, int]:
        """The master the sentinels announce (the first sentinel that answers)."""

        def ask() -> tuple[str, int] | None:
            for sentinel in self.sentinels:
                if sentinel.running:
                    try:
                        return sentinel.master_addr()
                    except (sync_redis.RedisError, OSError):
                        continue
            return None

        return _wait(ask, 5.0, "a sentinel to name the master", self.logs)

    def master(self) -> RedisServer:
        address = self.master_address()
        return next(s for s in self.servers if s.address == address)

    def kill_master(self) -> float:
        """SIGKILL the current master; the monotonic time of the kill."""
        victim = self.master()
        victim.kill()
        self.killed, self.killed_at = victim, time.monotonic()
        return self.killed_at

    def wait_failover(self, timeout: float = 15.0) -> tuple[tuple[str, int], float]:
        """(new master address, seconds from the kill until a sentinel announced it). Returns once a
        majority of sentinels announce it, so that a client asking any of them is not sent back."""
        if self.killed is None or self.killed_at is None:
            raise RedisServerError("wait_failover() without kill_master()")
        old, killed_at = self.killed.address, self.killed_at
        first: dict[str, float] = {}

        def announced() -> tuple[str, int] | None:
            new = [a for a in (s.master_addr() for s in self.sentinels) if a is not None and a != old]
            if new and "at" not in first:
                first["at"] = time.monotonic()
            return new[0] if len(new) >= 2 and len(set(new)) == 1 else None

        address = _wait(announced, timeout, f"a failover away from {old}", self.logs)
        return address, first["at"] - killed_at

    def failover(self, timeout: float = 15.0) -> tuple[tuple[str, int], float]:
        """SENTINEL FAILOVER: promote the replica while the master lives on. (new master address, seconds
        until a majority of sentinels announce it). The sentinels demote the old master only ~10 s
        later; ``demote(old)`` does it at once."""
        old = self.master()
        started = time.monotonic()
        self.sentinels[0].command("SENTINEL", "FAILOVER", self.master_name)

        def announced() -> tuple[str, int] | None:
            new = [a for a in (s.master_addr() for s in self.sentinels) if a is not None and a != old.address]
            return new[0] if len(new) >= 2 and len(set(new)) == 1 else None

        address = _wait(announced, timeout, f"a forced failover away from {old.address}", self.logs)
        return address, time.monotonic() - started

    def demote(self, server: RedisServer, timeout: float = 10.0) -> None:
        """Make ``server`` a replica of the announced master now, as the sentinels would in time."""
        host, port = self.master_address()
        with server.client() as client:
            client.execute_command("REPLICAOF", host, str(port))

        def replica() -> bool:
            return server.info("replication").get("role") == "slave"

        _wait(replica, timeout, f"{server.address} to turn replica", self.logs)

    def restart_old_master(self, timeout: float = 30.0, *, as_replica: bool = True) -> None:
        """Start the killed master again on its port and dir; return once it is a replica of the new
        master with its link up. ``as_replica``: it starts configured as that replica, as an
        orchestrator would restart it (~0.1 s). Otherwise it comes back believing it is the master, and
        the sentinels demote it: they wait to see it claim the role for 8 s, then reconfigure it (~10 s).
        """
        if self.killed is None:
            raise RedisServerError("restart_old_master() without kill_master()")
        old = self.killed
        if as_replica:
            old.replica_of = self.master_address()
            old.config.unlink(missing_ok=True)  # written afresh by start()
        old.start(timeout)

        def demoted() -> bool:
            replication = old.info("replication")
            return replication.get("role") == "slave" and replication.get("master_link_status") == "up"

        _wait(demoted, timeout, f"the old master {old.address} to rejoin as a replica", self.logs)
        self.killed = self.killed_at = None

    def stop(self) -> None:
        for proc in [*self.sentinels, *self.servers]:
            proc.kill()

    def __enter__(self) -> SentinelTopology:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _pairs(reply: Any) -> dict[str, str]:
    """SENTINEL MASTER/REPLICAS replies: a flat [key, value, ...] list, or a dict (RESP3, parsers)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}


__all__ = ["RedisServer", "RedisServerError", "SentinelTopology"]
