"""The Celery broker behind Sentinel, in the state store's URL form (app.core.sentinel_url).

An operator gives ``DF_BROKER_URL=redis+sentinel://s1,s2,s3/1`` like ``DF_REDIS_URL``; the replicas
(producers) and the workers (consumers) both turn it into Kombu's ``sentinel://`` list with the master
name. Shown end to end with a real master, replica and three sentinels: a worker seeds through it, and
after the master is killed and a replica promoted, the next task is still seeded by the worker.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core import sentinel_url
from app.core.config import Settings
from app.swarm import DfgetResult, Swarm
from tests.cluster import Cluster
from tests.redis_servers import SentinelTopology
from tests.sources import SourceProcess

MASTER = "df-master"  # not redis-py's or Kombu's default, so a dropped name would show


def test_the_url_forms() -> None:
    url = "redis+sentinel://:p%40ss@s1:26379,s2/3?master=m1"
    parsed = sentinel_url.parse(url)
    assert (parsed.hosts, parsed.db, parsed.master, parsed.password) == (
        [("s1", 26379), ("s2", 26379)], 3, "m1", "p@ss")
    assert sentinel_url.kombu_broker(url) == (
        "sentinel://:p%40ss@s1:26379/3;sentinel://:p%40ss@s2:26379/3", {"master_name": "m1"})
    assert sentinel_url.with_master("redis+sentinel://s1/1", "m2") == "redis+sentinel://s1/1?master=m2"
    assert sentinel_url.with_master(url, "m2") == url  # the URL's own name wins
    assert sentinel_url.with_master("redis://h/1", "m2") == "redis://h/1"
    with pytest.raises(ValueError, match="master"):
        sentinel_url.kombu_broker("redis+sentinel://s1/1")
    with pytest.raises(ValueError):
        sentinel_url.parse("redis+sentinel://s1:port/1")
    # Settings completes a broker URL without a name from DF_REDIS_SENTINEL_MASTER.
    settings = Settings(broker_url="redis+sentinel://s1,s2/1", redis_sentinel_master="m3", advertise_ip="127.0.0.1")
    assert settings.broker_url == "redis+sentinel://s1,s2/1?master=m3"


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    with SentinelTopology(tmp_path / "sentinel", master_name=MASTER) as sentinels:
        yield sentinels


async def _swarm(cluster: Cluster, source: SourceProcess, name: str, out: Path) -> list[DfgetResult]:
    node = cluster.replicas[0].node
    async with Swarm(3, [node], source.url(name), out, versions=["1.0.6"], sleep_scale=0.25) as swarm:
        return await swarm.run()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_worker_seeds_through_a_sentinel_broker_across_a_failover(
    tmp_path: Path, topology: SentinelTopology
) -> None:
    blobs = {name: os.urandom(6 * 1024 * 1024) for name in ("before.bin", "after.bin")}
    # The broker URL names no master: the replica and the worker must both take DF_REDIS_SENTINEL_MASTER.
    broker = topology.url(1).split("?", 1)[0]
    cluster = Cluster(tmp_path / "cluster", topology.url(0), broker, extra_env={
        "DF_REDIS_SENTINEL_MASTER": MASTER, "DF_SEED_LEASE_SECONDS": "3"})
    cluster.workdir.mkdir()
    with SourceProcess(blobs) as source:
        try:
            cluster.start_replica()
            worker = cluster.start_worker()
            for round_, name in enumerate(blobs, start=1):
                if name == "after.bin":
                    topology.kill_master()
                    topology.wait_failover()
                results = await _swarm(cluster, source, name, tmp_path / name)
                for result in results:
                    assert result.success and not result.back_sourced, (result.error, cluster.logs())
                    assert result.sha256 == hashlib.sha256(blobs[name]).hexdigest()
                assert source.stats(name)["full_gets"] == 1  # the seed: nobody else read the source
                assert worker.tail(2000).count("seed end") == round_, cluster.logs()
        finally:
            cluster.stop()
