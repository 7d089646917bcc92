"""A real Redis Cluster on loopback for tests: 3 masters and 3 replicas.

Six ``redis-server --cluster-enabled yes`` processes (tests/redis_servers.py's process handling), each
in a directory of its own with its config, ``nodes.conf`` and logfile, on free ports whose cluster bus
port (port + 10000) is free too; joined by ``redis-cli --cluster create ... --cluster-replicas 1``.
``cluster-node-timeout`` is short (default 2000 ms), so a killed master's replica takes over within a
few seconds. Every wait polls (CLUSTER INFO, CLUSTER NODES) and fails with the logs' tails: no fixed
sleeps.

API
---
``RedisCluster(workdir, *, node_timeout_ms=2000)``, a context manager (start / kill all):
    ``start()`` (returns once ``cluster_state:ok`` on every node and every master has its replica),
    ``url()`` -> ``redis+cluster://127.0.0.1:p1,...`` (the form app/core/cluster_url.py parses),
    ``master_for(key)`` -> the ClusterNode process serving ``key``'s slot, ``kill(node)`` (SIGKILL),
    ``wait_promoted(old_master, timeout)`` -> the node that took its slots over, ``stop()``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType

from redis.crc import key_slot

from tests.cluster import _bindable, _claim, free_port
from tests.redis_servers import HOST, RedisServerError, _binary, _Process, _wait

_BUS_OFFSET = 10000


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and claimed too."""
    while True:
        port = free_port()
        bus = port + _BUS_OFFSET
        if bus <= 65535 and _bindable(HOST, bus) and _claim(bus):
            return port


class ClusterNode(_Process):
    def __init__(self, workdir: Path, node_timeout_ms: int) -> None:
        super().__init__(workdir, "cluster", cluster_port())
        self.node_timeout_ms = node_timeout_ms

    def _config_lines(self) -> list[str]:
        # No persistence (a killed master's data lives on in its replica); a replica may take over at
        # once however long it was cut off (the default refuses after a long disconnection).
        return [*super()._config_lines(), "cluster-enabled yes", f'cluster-config-file "{self.dir}/nodes.conf"',
                f"cluster-node-timeout {self.node_timeout_ms}", "cluster-replica-validity-factor 0",
                'save ""', "appendonly no", "repl-diskless-sync-delay 0"]

    def start(self) -> None:
        self._launch()
        _wait(self._ping, 10, f"cluster node {self.port}", self.tail)

    def cluster_nodes(self) -> list[dict[str, str]]:
        """CLUSTER NODES as seen by this node: id, address, flags, master id, slots."""
        with self.client() as client:
            text = str(client.execute_command("CLUSTER", "NODES"))
        out = []
        for line in text.strip().splitlines():
            fields = line.split()
            out.append({"id": fields[0], "address": fields[1].split("@")[0], "flags": fields[2],
                        "master": fields[3], "slots": " ".join(fields[8:])})
        return out

    def info(self) -> dict[str, str]:
        with self.client() as client:
            text = str(client.execute_command("CLUSTER", "INFO"))
        return dict(line.split(":", 1) for line in text.strip().splitlines() if ":" in line)


class RedisCluster:
    def __init__(self, workdir: Path, *, node_timeout_ms: int = 2000, nodes: int = 6) -> None:
        self.nodes = [ClusterNode(Path(workdir), node_timeout_ms) for _ in range(nodes)]

    def __enter__(self) -> RedisCluster:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def tails(self) -> str:
        return "\n".join(node.tail(15) for node in self.nodes)

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{HOST}:{node.port}" for node in self.nodes]
            created = subprocess.run(
                [_binary("redis-cli"), "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True, text=True, timeout=60,
            )
            if created.returncode != 0:
                raise RedisServerError(f"redis-cli --cluster create failed: {created.stdout}\n{created.stderr}")
            _wait(self._ready, 30, "cluster_state:ok on every node, a replica per master", self.tails)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        for node in self.nodes:
            if node.info().get("cluster_state") != "ok":
                return False
            view = node.cluster_nodes()
            masters = [n for n in view if "master" in n["flags"] and n["slots"]]
            replicas = [n for n in view if "slave" in n["flags"]]
            if len(masters) != 3 or len(replicas) != 3 or any("fail" in n["flags"] for n in view):
                return False
        return True

    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    def _live(self) -> ClusterNode:
        for node in self.nodes:
            if node.running:
                return node
        raise RedisServerError("no cluster node is running")

    def _node(self, address: str) -> ClusterNode:
        port = int(address.rsplit(":", 1)[1])
        return next(node for node in self.nodes if node.port == port)

    def master_for(self, key: str) -> ClusterNode:
        """The node serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        for entry in self._live().cluster_nodes():
            if "master" not in entry["flags"] or "fail" in entry["flags"]:
                continue
            for part in entry["slots"].split():
                if part.startswith("["):  # a slot being migrated: not ours here
                    continue
                low, _, high = part.partition("-")
                if int(low) <= slot <= int(high or low):
                    return self._node(entry["address"])
        raise RedisServerError(f"no master serves slot {slot}")

    def kill(self, node: ClusterNode) -> None:
        node.kill()

    def wait_promoted(self, old: ClusterNode, key: str, timeout: float = 30) -> ClusterNode:
        """The live node serving ``key``'s slot after ``old`` died, once the cluster is ok again."""
        def promoted() -> ClusterNode | None:
            survivor = self._live()
            if survivor.info().get("cluster_state") != "ok":
                return None
            try:
                node = self.master_for(key)
            except RedisServerError:  # the survivor's view has the slot on a failed master still
                return None
            return node if node is not old and node.running else None
        return _wait(promoted, timeout, f"a replica of {old.port} promoted", self.tails)

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
