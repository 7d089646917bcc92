"""DF_WORKERS: one replica, several processes on the same two ports (app.server.supervisor).

Real replicas (``python -m app``) on real Redis; the workers are found as the supervisor's children in
/proc, and their own request counts are read from the prometheus_client multiprocess files they write.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from app.core.backlog import host_somaxconn, listen_backlog
from app.core.cpus import quota_cpus
from app.observability.processes import children
from app.protocol.taskid import task_id
from app.state import schema
from app.swarm import Swarm
from tests.cluster import Cluster, Replica, check_swarm
from tests.sources import SourceProcess, random_file

SIZE = 24 * 1024 * 1024


def requests_by_pid(metrics_dir: Path, handler: str) -> dict[int, float]:
    """Each worker's own ``http_requests_total`` for ``handler``, from its multiprocess file."""
    out: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            if "http_requests_total" in key and f'"{handler}"' in key:
                out[pid] = out.get(pid, 0.0) + value
    return out


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, broker_url: str) -> Iterator[Cluster]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    redis.Redis.from_url(broker_url).flushdb()
    nodes = Cluster(tmp_path / "cluster", redis_url, broker_url, extra_env={
        "DF_WORKERS": "2", "DF_PIECE_LEASE_SECONDS": "900", "DF_DRAIN_SECONDS": "1.5",
    })
    nodes.workdir.mkdir()
    try:
        yield nodes
    finally:
        nodes.stop()
        client.flushdb()


def start(cluster: Cluster, metrics_dir: Path) -> Replica:
    cluster.extra_env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    replica = cluster.start_replica()
    wait_for(lambda: len(children(replica.popen.pid)) == 2)
    return replica


def test_workers_share_both_ports_and_their_metrics_add_up(cluster: Cluster, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    (metrics_dir).mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # a previous run's file: emptied at start
    replica = start(cluster, metrics_dir)
    assert not (metrics_dir / "counter_1.db").exists()
    workers = children(replica.popen.pid)
    api = f"http://{replica.node}"
    n = 300

    async def burst() -> None:
        # A new connection per request (no keep-alive), 30 at a time, so the kernel hands them to both.
        limits = httpx.Limits(max_connections=30, max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits) as client:
            async def one(i: int) -> None:
                reply = await client.get(f"{api}/peer/task", params={"taskId": "x" * 64, "srcCid": f"c{i}"})
                assert reply.status_code == 200 and reply.json()["code"] != 500

            for start_at in range(0, n, 30):
                await asyncio.gather(*(one(i) for i in range(start_at, start_at + 30)))

    asyncio.run(burst())
    mine = requests_by_pid(metrics_dir, "/peer/task")
    assert set(mine) <= set(workers)
    assert sum(mine.values()) == n and all(mine.get(pid, 0) > 0 for pid in workers), mine
    # Any worker's /metrics shows the replica's total, on both ports.
    for url in (f"{api}/metrics", f"http://{replica.host}:{replica.download_port}/metrics"):
        for _ in range(4):
            text = httpx.get(url).text
            line = next(x for x in text.splitlines() if x.startswith("dragonfly_supernode_http_requests_total")
                        and 'handler="/peer/task"' in x)
            assert float(line.rsplit(" ", 1)[1]) == n, line
    # The process_* series of every process of the replica, by pid, not those of whichever worker answered.
    for url in (f"{api}/metrics", f"http://{replica.host}:{replica.download_port}/metrics"):
        rss = {
            (s.labels["pid"], s.labels["process"]): s.value
            for family in text_string_to_metric_families(httpx.get(url).text)
            for s in family.samples if s.name == "process_resident_memory_bytes"
        }
        expected = {(str(replica.popen.pid), "supervisor")} | {(str(pid), "worker") for pid in workers}
        assert set(rss) == expected and all(value > 10 * 2**20 for value in rss.values()), rss
    listed = httpx.get(f"{api}/api/v1/cluster", headers=cluster_auth()).json()["replicas"]
    assert [(r["pid"], r["workers"], r["self"]) for r in listed] == [(replica.popen.pid, 2, True)]
    # Every worker answers the REST API alike (a fresh connection each time lands on either one).
    audit, views = set(), set()
    with httpx.Client(headers=cluster_auth(), limits=httpx.Limits(max_keepalive_connections=0)) as client:
        for _ in range(10):
            answer = client.get(f"{api}/api/v1/audit")
            audit.add((answer.status_code, answer.json()["message"]))
            view = client.get(f"{api}/api/v1/cluster").json()
            views.add((view["database"]["status"], len(view["replicas"])))
    assert len(audit) == 1 and next(iter(audit))[0] == 503, audit  # no database in this test: 503, never 500
    assert len(views) == 1, views


def cluster_auth() -> dict[str, str]:
    from tests.cluster import TEST_TOKEN

    return {"Authorization": f"Bearer {TEST_TOKEN}"}


def listen_backlog_of(port: int) -> int:
    """The backlog the kernel gave the socket listening on ``port`` (``ss`` shows it as Send-Q)."""
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    [line] = out.splitlines()
    return int(line.split()[2])


def test_both_ports_listen_with_the_hosts_somaxconn_unless_told(cluster: Cluster, tmp_path: Path) -> None:
    # A herd's SYNs beyond the backlog are dropped, and the retried SYN comes 1 s, then 3 s, later:
    # dfget's 5 s registration is lost (app.core.backlog). uvicorn's default was 2048, nginx's 511.
    somaxconn = host_somaxconn()
    for name in ("metrics-a", "metrics-b"):
        (tmp_path / name).mkdir()
    replica = start(cluster, tmp_path / "metrics-a")
    assert listen_backlog_of(replica.port) == somaxconn
    assert listen_backlog_of(replica.download_port) == somaxconn
    cluster.stop()
    cluster.extra_env["DF_LISTEN_BACKLOG"] = str(min(300, somaxconn))
    replica = start(cluster, tmp_path / "metrics-b")
    assert listen_backlog_of(replica.port) == listen_backlog_of(replica.download_port) == min(300, somaxconn)
    replica.wait_ready()
    assert httpx.get(f"http://{replica.node}/peer/task", params={"taskId": "x" * 64, "srcCid": "c"}).status_code == 200


def test_the_backlog_setting_wins_and_an_unreadable_somaxconn_falls_back(tmp_path: Path) -> None:
    (tmp_path / "somaxconn").write_text("65535\n")
    assert host_somaxconn(tmp_path / "somaxconn") == 65535
    assert host_somaxconn(tmp_path / "missing") == socket.SOMAXCONN
    (tmp_path / "bad").write_text("lots")
    assert host_somaxconn(tmp_path / "bad") == socket.SOMAXCONN
    assert listen_backlog(0, 4096) == 4096 and listen_backlog(300, 4096) == 300


def test_a_killed_worker_is_replaced_and_sigterm_drains_every_worker(cluster: Cluster, tmp_path: Path) -> None:
    replica = start(cluster, tmp_path / "metrics")
    first, second = children(replica.popen.pid)
    os.kill(second, signal.SIGKILL)
    wait_for(lambda: len(children(replica.popen.pid)) == 2 and second not in children(replica.popen.pid))
    assert first in children(replica.popen.pid)
    replica.wait_ready()
    replica.popen.send_signal(signal.SIGTERM)
    # Draining: still answering, not ready (every worker: fresh connections land on either).
    for _ in range(6):
        assert httpx.get(f"http://{replica.node}/readyz", headers={"Connection": "close"}).status_code == 503
    assert replica.popen.wait(20) == 0
    assert children(replica.popen.pid) == []


@pytest.mark.slow
async def test_a_worker_killed_mid_swarm_loses_no_download(
    cluster: Cluster, tmp_path: Path, redis_url: str
) -> None:
    """Two replicas of two workers each; one worker of the second is SIGKILLed while peers hold pieces.
    The connections it had accepted die with it (dfget counts that as a failure of the node and
    migrates, as the emulator does); the replica's other worker and its replacement serve on."""
    path, sha256 = random_file(tmp_path / "source.bin", SIZE)
    first = start(cluster, tmp_path / "m1")
    cluster.extra_env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "m2")
    second = cluster.start_replica()
    cluster.start_worker()
    lists = [[first.node, second.node] * 2, [second.node, first.node] * 2]
    with SourceProcess({"blob.bin": path}) as source:
        url = source.url("blob.bin")
        async with Swarm(8, [first.node, second.node], url, tmp_path / "out", node_lists=lambda i: lists[i % 2],
                         sleep_scale=0.25, timeout=60) as swarm:
            running = asyncio.create_task(swarm.run())
            state = redis.Redis.from_url(redis_url, decode_responses=True)
            tid = task_id(url)
            for _ in range(400):
                if (state.exists(schema.task_key(tid)) and state.scard(schema.holders_key(tid, 0))) or running.done():
                    break
                await asyncio.sleep(0.02)
            assert not running.done()
            victim = children(second.popen.pid)[1]
            os.kill(victim, signal.SIGKILL)
            results = await running
    check_swarm(results, sha256)
    assert victim not in children(second.popen.pid) and len(children(second.popen.pid)) == 2


def test_cpu_quota_rounds_up_and_max_means_none() -> None:
    assert quota_cpus("max", "100000") is None
    assert quota_cpus("-1", "100000") is None
    assert quota_cpus("150000", "100000") == 2
    assert quota_cpus("50000", "100000") == 1
    assert quota_cpus("400000", "100000") == 4
    assert quota_cpus("junk", "100000") is None
