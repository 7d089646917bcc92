"""Preheats in cluster mode: the replica enqueues ``workers.tasks.preheat`` and a real Celery worker runs
it (the same function embedded mode runs in-process), seeding the shared seed cache."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.cluster import Cluster
from tests.preheat_support import AUTH, assert_seeded, poll_legacy
from tests.sources import SourceServer

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path, redis_url: str, broker_url: str) -> Iterator[Cluster]:
    redis.Redis.from_url(redis_url).flushdb()
    redis.Redis.from_url(broker_url).flushdb()
    nodes = Cluster(tmp_path / "cluster", redis_url, broker_url)
    nodes.workdir.mkdir()
    try:
        nodes.start_replica()
        nodes.start_worker()
        yield nodes
    finally:
        nodes.stop()
        redis.Redis.from_url(redis_url).flushdb()


async def test_a_celery_worker_runs_the_preheat(cluster: Cluster) -> None:
    data = os.urandom(5 * 1024 * 1024)
    replica = cluster.replicas[0]
    async with SourceServer() as source, httpx.AsyncClient(base_url=f"http://{replica.node}") as http:
        source.add("layer.bin", data)
        created = await http.post("/preheats", json={"type": "file", "url": source.url("layer.bin")}, headers=AUTH)
        info = await poll_legacy(http, created.json()["ID"])
        gets = source.stats("layer.bin").full_gets
    assert info["status"] == "SUCCESS", cluster.logs()
    assert_seeded(cluster.seed_dir, created.json()["ID"], "sha256:" + hashlib.sha256(data).hexdigest())
    assert gets == 1
    worker_log = cluster.workers[0].tail(400)
    assert "workers.tasks.preheat" in worker_log and "succeeded" in worker_log, worker_log
